"""The guest pause of an ``update_signatures`` hypercall with a 2,000-signature database.

The pause is measured inside the hypervisor, from the VMCALL exit reaching the hypercall table to
the result going back to the guest: copying the bundle out of guest memory, verifying the Ed25519
signature, parsing and compiling the database and swapping it in. The peer is ClamAV itself:
``clamscan`` loading the same database (as a ``.ndb``) and scanning an empty file, which is what
its engine pays to put a database in force (process start included; skipped without clamscan).
A second row does the same with the real rfxn.ndb when the data set is there (tests/conftest.py).

``python -m benchmarks.update`` prints these rows and ``large_rows``: the same pause for a
100,000-signature update through the real VMCALL (issue 10's goal: at most 0.2 s), where the
text is only checked on the pause path and parsed by the compile worker (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row, median_of, seconds
from guest_tool.bundle import make_bundle
from guest_tool.keys import generate_keypair, load_private_key
from guest_tool.programs import build_update_program
from hv_emu.machine import Machine, MachineConfig

RFXN = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rfxn.ndb"


def synthetic_ndb(count: int, seed: int = 2012) -> bytes:
    """``count`` random literal signatures of 16-64 bytes, in .ndb form (our own fixture)."""
    rng = random.Random(seed)
    lines = [
        f"Bench.Synthetic-{i}:0:*:{rng.randbytes(rng.randint(16, 64)).hex()}"
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def pause_us(body: bytes, workdir: Path) -> float:
    key_path, pub = generate_keypair(workdir / f"k{time.monotonic_ns()}")
    now = int(time.time())
    bundle, sig = make_bundle(body, kind="ndb", version=1, private_key=load_private_key(key_path),
                              issued_at=now, expires_at=now + 86400)
    machine = Machine(MachineConfig(trust=[pub], timeout=120))
    machine.load(build_update_program(bundle, sig))
    handle = machine.hypercalls.handle
    pauses: list[float] = []

    def timed(exit_):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return handle(exit_)
        finally:
            if exit_.nr == 2:
                pauses.append(time.perf_counter() - start)

    machine.hypercalls.handle = timed  # type: ignore[method-assign]
    machine.run()
    assert machine.database.current.version == 1, "the update was not accepted"
    return pauses[0] * 1e6


def clamscan_us(db: Path, workdir: Path) -> float | None:
    clamscan = shutil.which("clamscan")
    if clamscan is None:
        return None
    empty = workdir / "empty"
    empty.write_bytes(b"")
    argv = [clamscan, "--no-summary", "-d", str(db), str(empty)]
    return median_of(5, lambda: seconds(lambda: subprocess.run(argv, capture_output=True,
                                                              check=True))) * 1e6


def run() -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cases = [("2,000 synthetic signatures", synthetic_ndb(2000))]
        if RFXN.is_file():
            cases.append(("rfxn.ndb, 1,869 signatures", RFXN.read_bytes()))
        for label, body in cases:
            db = work / "bench.ndb"
            db.write_bytes(body)
            ours = median_of(5, lambda body=body: pause_us(body, work))  # type: ignore[misc]
            peer = clamscan_us(db, work)
            rows.append(Row(f"update_signatures guest pause ({label})", ours, "µs",
                            "clamscan -d DB on an empty file", peer))
    return rows


def large_rows() -> list[Row]:
    """The guest pause of a 100,000-signature update (median of 3), against clamscan loading it."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        body = synthetic_ndb(100_000)
        db = work / "bench100k.ndb"
        db.write_bytes(body)
        ours = median_of(3, lambda: pause_us(body, work)) / 1e3
        peer = clamscan_us(db, work)
        return [Row("update_signatures guest pause (100,000 synthetic signatures)", ours, "ms",
                    "clamscan -d DB on an empty file", None if peer is None else peer / 1e3)]


def main() -> int:
    print("| benchmark | hv-emu | peer | peer value | ratio |")
    print("|---|---|---|---|---|")
    for row in run() + large_rows():
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
