"""The guest pause of an ``update_signatures`` hypercall with a 2,000-signature database.

The pause is measured inside the hypervisor, from the VMCALL exit reaching the hypercall table to
the result going back to the guest: copying the bundle out of guest memory, verifying the Ed25519
signature, parsing and compiling the database and swapping it in. The peer is ClamAV itself:
``clamscan`` loading the same database (as a ``.ndb``) and scanning an empty file, which is what
its engine pays to put a database in force (process start included; skipped without clamscan).
A second row does the same with the real rfxn.ndb when the data set is there (tests/conftest.py).

``python -m benchmarks.update`` prints these rows and ``large_rows``: for a 100,000-signature
update through the real VMCALL, the pause (issue 10's goal: at most 0.2 s) and the time from the
VMCALL exit to the new database being in force on the disk path, ``database_active`` (goal: at
most 2 s), for two databases: ``synthetic_ndb`` (random 16-64 byte literals, 10.7 MB) and
``rfxn_style_ndb`` (text bodies as rfxn.ndb's, a fifth of them with wildcards, alternations,
gaps and ``*``). The peer is clamscan loading the same database, measured alternately in the same
run (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import random
import resource
import shutil
import statistics
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


#: Pieces of the web-malware text rfxn.ndb's bodies are made of (our own list, no line of it).
_TOKENS = (b"eval(", b"base64_decode(", b"gzinflate(", b"str_rot13(", b"$_POST['", b"$_GET['",
           b"<?php ", b"document.write(", b"unescape('", b"system(", b"passthru(", b"preg_replace(",
           b"shell_exec(", b"chr(", b"$GLOBALS['", b"String.fromCharCode(", b"<iframe src=",
           b"http://", b".ru/", b"wget ", b"/tmp/", b"chmod 777 ", b"socket(", b"PRIVMSG #",
           b"); ", b"'] = ", b"?>", b"\\x", b"if(isset(", b"echo ", b"@ini_set('")  # fmt: skip


def rfxn_style_ndb(count: int, seed: int = 2013) -> bytes:
    """``count`` signatures in rfxn.ndb's style (our own fixture): ``{HEX}`` names, text bodies of
    12-120 bytes (100,000 of them fit the default 16 MiB update limit), and one line in five with
    a construct clamscan and hv-emu both accept: an alternation of quotes ``(22|27)``, a ``??``, a
    gap ``{0-16}`` or a ``*``."""
    rng = random.Random(seed)
    letters = b"abcdefghijklmnopqrstuvwxyz0123456789_"
    lines = []
    for i in range(count):
        ident = bytes(rng.choice(letters) for _ in range(rng.randint(5, 9)))
        tokens = b"".join(rng.choice(_TOKENS) for _ in range(rng.randint(1, 24)))
        text = b"$" + ident + b" = " + tokens
        text = text[: rng.randint(12, 120)]
        body = text.hex()
        if i % 5 == 0 and len(text) >= 12:
            cut = rng.randint(5, len(text) - 6)
            head, tail = text[:cut].hex(), text[cut + 1 :].hex()
            body = head + rng.choice(["(22|27)", "??", "{0-16}", "*"]) + tail
        family = rng.choice(("inject", "shell", "mailer"))
        lines.append(f"{{HEX}}php.malware.{family}.{i}:0:*:{body}")
    return ("\n".join(lines) + "\n").encode()


def _update_machine(body: bytes, workdir: Path) -> Machine:
    """A machine whose guest will push ``body`` as a version-1 ``.ndb`` update by VMCALL, signed
    by a fresh key it trusts."""
    key_path, pub = generate_keypair(workdir / f"k{time.monotonic_ns()}")
    now = int(time.time())
    bundle, sig = make_bundle(body, kind="ndb", version=1, private_key=load_private_key(key_path),
                              issued_at=now, expires_at=now + 86400)
    machine = Machine(MachineConfig(trust=[pub], timeout=120))
    machine.load(build_update_program(bundle, sig))
    return machine


def pause_us(body: bytes, workdir: Path) -> float:
    machine = _update_machine(body, workdir)
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


def _cpu() -> float:
    """This process's CPU time so far (every thread), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def activation_s(body: bytes, workdir: Path) -> tuple[float, float, float, float]:
    """One 100,000-signature update through the real VMCALL: the guest's pause, the time from
    the VMCALL exit reaching the hypercall table to ``database_active`` for it, the CPU time
    the process spent in that interval (all threads: the one figure the other jobs of a shared
    machine do not inflate), and the CPU time of the pause (the vCPU thread's alone, while the
    hypercall ran), in seconds."""
    machine = _update_machine(body, workdir)
    handle = machine.hypercalls.handle
    marks: dict[str, float] = {}

    def timed(exit_):  # type: ignore[no-untyped-def]
        if exit_.nr == 2:
            marks["vmcall"], marks["vmcall_cpu"] = time.perf_counter(), _cpu()
            marks["vcpu"] = time.thread_time()
        try:
            return handle(exit_)
        finally:
            if exit_.nr == 2:
                marks["answered"] = time.perf_counter()
                marks["vcpu"] = time.thread_time() - marks["vcpu"]

    def on_event(record: dict[str, object]) -> None:
        if record["event"] == "database_active" and record.get("db_version") == 1:
            marks["active"], marks["active_cpu"] = time.perf_counter(), _cpu()

    machine.hypercalls.handle = timed  # type: ignore[method-assign]
    machine.events.listeners.append(on_event)  # type: ignore[arg-type]
    machine.run()
    assert machine.updates.wait_active(300), "the compile worker did not finish"
    assert "active" in marks, "the update never came into force"
    assert machine.database.current.version == 1
    return (marks["answered"] - marks["vmcall"], marks["active"] - marks["vmcall"],
            marks["active_cpu"] - marks["vmcall_cpu"], marks["vcpu"])


def clamscan_once(db: Path, workdir: Path) -> tuple[float, float] | None:
    """One ``clamscan -d DB`` of an empty file: (wall, CPU of the child) in seconds; None without
    clamscan."""
    clamscan = shutil.which("clamscan")
    if clamscan is None:
        return None
    empty = workdir / "empty"
    empty.write_bytes(b"")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([clamscan, "--no-summary", "-d", str(db), str(empty)], capture_output=True,
                   check=True)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


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


def large_rows(repeat: int = 3, count: int = 100_000) -> list[Row]:
    """A ``count``-signature update of each kind: the guest's pause, the time to active and the
    CPU time to active (medians of ``repeat``), against clamscan loading the same database (its
    wall and CPU time), measured alternately so that both see the same load."""
    rows = []
    peer = "clamscan -d DB on an empty file"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, body in (("synthetic", synthetic_ndb(count)),
                            ("rfxn-style", rfxn_style_ndb(count))):
            db = work / "bench100k.ndb"
            db.write_bytes(body)
            ours: list[tuple[float, float, float, float]] = []
            theirs: list[tuple[float, float]] = []
            for _ in range(repeat):
                ours.append(activation_s(body, work))
                clam = clamscan_once(db, work)
                if clam is not None:
                    theirs.append(clam)

            def ms(values: list[float]) -> float:
                return statistics.median(values) * 1e3

            wall = ms([w for w, _ in theirs]) if theirs else None
            cpu = ms([c for _, c in theirs]) if theirs else None
            rows += [
                Row(f"update_signatures guest pause ({count:,} {label} signatures)",
                    ms([o[0] for o in ours]), "ms", peer, wall),
                Row(f"update_signatures guest pause, CPU time ({count:,} {label} signatures)",
                    ms([o[3] for o in ours]), "ms", f"{peer}, CPU time", cpu),
                Row(f"{count // 1000}k-signature update: VMCALL to active ({label})",
                    ms([o[1] for o in ours]), "ms", peer, wall),
                Row(f"{count // 1000}k-signature update: VMCALL to active, CPU time ({label})",
                    ms([o[2] for o in ours]), "ms", f"{peer}, CPU time", cpu),
            ]
    return rows


def main() -> int:
    print("| benchmark | hv-emu | peer | peer value | ratio |")
    print("|---|---|---|---|---|")
    for row in run() + large_rows():
        print(row.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
