"""The signature scanner: throughput, build time, memory and activation, against clamscan.

Data: 64 MiB of random binary and 64 MiB of text (script-like lines), written to files so that
``clamscan`` reads the very same bytes; neither holds a signature. Databases: the real rfxn.ndb
(1,869 signatures; rows skipped when the data set is absent: tests/conftest.py's RFXN) and 100,000
generated 16-64 byte literals (``benchmarks.update.synthetic_ndb``).

- Throughput is hv-emu's scan path (``SignatureDatabase.open_stream`` + ``feed``) in 1 MiB chunks
  (``hv-emu scan``'s reads) and 4 KiB chunks (disk-write sized), against ``clamscan`` in raw mode
  (the command of docs/SIGNATURES.md) on the file, minus clamscan's run on an empty file
  (process start and database load). MB = 10^6 bytes.
- Build time is parse + compile; the peer is clamscan's whole run on an empty file.
- Memory is the growth of this process's resident set while the 100k database is built and kept,
  against clamscan's peak resident set with the same database.
- Activation is the time from a verified 100k update (``UpdateService.submit``) to the swap (of
  the sharded first stage) and to full speed (the one-database recompile swapped in), and the
  part of it the guest waits for (the VMCALL's pause), against clamscan's load.
- Stream state is resident memory per open scan stream (10,000 streams), Hyperscan against the
  pyahocorasick reference.
- Whole process, ``hv-emu scan`` against ``clamscan`` as a user runs them, is
  ``scanner_process.py``'s (``python -m benchmarks`` runs both).
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Row, median_of, seconds
from benchmarks.update import synthetic_ndb
from guest_tool.bundle import make_bundle
from guest_tool.keys import generate_keypair, load_private_key
from hv_emu.cli.scan import CLAMSCAN_RAW_MODE
from hv_emu.machine import Machine, MachineConfig
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase, compile_database

ROOT = Path(__file__).resolve().parent.parent
RFXN = ROOT.parent / "shared" / "data" / "rfxn.ndb"
SIZE = 64 * 1024 * 1024
MB = 1e6
RAW_MODE = list(CLAMSCAN_RAW_MODE)
WORDS = (b"if", b"else", b"return", b"function", b"echo", b"$var", b"GET", b"POST", b"200",
         b"error", b"user", b"admin", b"the", b"and", b"=", b"{", b"}", b"while", b"print")


def corpora(rng: random.Random, size: int = SIZE) -> dict[str, bytes]:
    """A binary (random) and a text (script-like lines) corpus of ``size`` bytes each."""
    lines = [b" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 16))) for _ in range(4096)]
    block = b"\n".join(lines) + b"\n"
    binary = b"".join(rng.randbytes(min(SIZE, size - at)) for at in range(0, size, SIZE))
    return {"binary": binary, "text": (block * (size // len(block) + 1))[:size]}


def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def scan_rate(db: SignatureDatabase, data: bytes, chunk: int) -> float:
    """MB/s of the scan path over ``data`` fed in ``chunk``-byte pieces (each a fresh ``bytes``,
    as a file read or a disk write delivers it)."""
    def once() -> float:
        stream = db.open_stream(len(data))
        elapsed = seconds(lambda: [stream.feed(data[i : i + chunk])
                                   for i in range(0, len(data), chunk)])  # fmt: skip
        stream.close()
        return len(data) / elapsed / MB

    return median_of(3, once)


def clamscan_run(database: Path, path: Path) -> tuple[float, int]:
    """Seconds and peak resident bytes of one raw-mode clamscan run."""
    clamscan = shutil.which("clamscan")
    assert clamscan is not None
    started = time.perf_counter()
    child = subprocess.Popen([clamscan, "-d", str(database), *RAW_MODE, str(path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def clamscan_rate(database: Path, path: Path, empty: Path) -> float | None:
    """clamscan's raw-mode MB/s on ``path``, its start-up and load (the empty run) taken off."""
    if shutil.which("clamscan") is None:
        return None
    base = median_of(3, lambda: clamscan_run(database, empty)[0])
    total = median_of(3, lambda: clamscan_run(database, path)[0])
    return path.stat().st_size / max(total - base, 1e-9) / MB


def build(data: bytes, engine: str) -> Callable[[], float]:
    return lambda: seconds(lambda: compile_database(data, kind="ndb", version=1, source="bench",
                                                    engine=engine))  # fmt: skip


def state_per_stream(db: SignatureDatabase, count: int = 10_000) -> float:
    gc.collect()
    before = resident()
    streams = [db.open_stream() for _ in range(count)]
    for stream in streams:
        stream.feed(b"\x90" * 512)  # every stream in use, with its history filled
    gc.collect()
    per_stream = (resident() - before) / count
    for stream in streams:
        stream.close()
    return per_stream


def activation(body: bytes, work: Path) -> tuple[float, float, float]:
    """(guest pause, seconds to active, seconds to full speed) for an update carrying ``body``:
    a large database is active once its sharded first stage is in force, and at full speed once
    its single-database recompile has been swapped in (docs/SIGNATURES.md)."""
    key_path, pub = generate_keypair(work / f"k{time.monotonic_ns()}")
    now = int(time.time())
    bundle, signature = make_bundle(body, kind="ndb", version=1, issued_at=now,
                                    expires_at=now + 86400,
                                    private_key=load_private_key(key_path))  # fmt: skip
    machine = Machine(MachineConfig(trust=[pub]))
    started = time.perf_counter()
    machine.updates.submit(bundle, signature, "bench")
    pause = time.perf_counter() - started
    while machine.database.current.version != 1:
        time.sleep(0.001)
    active = time.perf_counter() - started
    machine.updates.wait_active()
    full = time.perf_counter() - started
    assert machine.database.current.count == body.count(b"\n"), "the update did not activate"
    assert machine.database.current.shards == 1, "the single-database recompile did not land"
    return pause, active, full


def run() -> list[Row]:
    if not HYPERSCAN_AVAILABLE:
        return []  # the targets are the fast engine's; pyahocorasick is the reference only
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        empty = work / "empty"
        empty.write_bytes(b"")
        files = {}
        for name, data in corpora(random.Random(64)).items():
            files[name] = work / name
            files[name].write_bytes(data)
        if RFXN.is_file():
            rows += _rfxn_rows(files, empty)
        rows += _large_rows(files, empty, work)
    return rows


def _rfxn_rows(files: dict[str, Path], empty: Path) -> list[Row]:
    rows = []
    raw = RFXN.read_bytes()
    db = compile_database(raw, kind="ndb", version=1, source="rfxn.ndb")
    reference = compile_database(raw, kind="ndb", version=1, source="rfxn.ndb", engine="ac")
    peer = "clamscan raw mode"
    for name, path in files.items():
        data = path.read_bytes()
        theirs = clamscan_rate(RFXN, path, empty)
        rows.append(Row(f"scan {name}, rfxn, 1 MiB chunks", scan_rate(db, data, 1 << 20), "MB/s",
                        peer, theirs))  # fmt: skip
        rows.append(Row(f"scan {name}, rfxn, 4 KiB chunks", scan_rate(db, data, 4096), "MB/s",
                        peer, theirs))  # fmt: skip
        sample = data[: 8 << 20]  # the reference is slow: 8 MiB is enough to time it
        rows.append(Row(f"scan {name}, rfxn, pyahocorasick reference",
                        scan_rate(reference, sample, 1 << 20), "MB/s", peer, theirs))  # fmt: skip
    clamscan_load = None
    if shutil.which("clamscan"):
        clamscan_load = median_of(5, lambda: clamscan_run(RFXN, empty)[0]) * 1e3
    rows.append(Row("build rfxn (parse + Hyperscan compile)",
                    median_of(5, build(raw, "hyperscan")) * 1e3, "ms",
                    "clamscan -d rfxn.ndb on an empty file", clamscan_load))  # fmt: skip
    rows.append(Row("open stream state, rfxn, Hyperscan", state_per_stream(db), "B",
                    "pyahocorasick stream", state_per_stream(reference)))  # fmt: skip
    return rows


def _large_rows(files: dict[str, Path], empty: Path, work: Path) -> list[Row]:
    rows = []
    raw = synthetic_ndb(100_000)
    database = work / "synthetic100k.ndb"
    database.write_bytes(raw)
    have_clamscan = shutil.which("clamscan") is not None
    gc.collect()
    before = resident()
    started = time.perf_counter()
    db = compile_database(raw, kind="ndb", version=1, source="100k")
    build_seconds = time.perf_counter() - started
    grown = (resident() - before) / 2**20  # what the database keeps, while it is referenced
    load, peak = clamscan_run(database, empty) if have_clamscan else (None, None)
    rows.append(Row("build 100k signatures (parse + compile)", build_seconds, "s",
                    "clamscan -d 100k.ndb on an empty file", load))  # fmt: skip
    rows.append(Row("memory kept by the 100k database", grown, "MiB",
                    "clamscan peak RSS with it", None if peak is None else peak / 2**20))
    for name, path in files.items():
        theirs = clamscan_rate(database, path, empty) if have_clamscan else None
        rows.append(Row(f"scan {name}, 100k signatures, 1 MiB chunks",
                        scan_rate(db, path.read_bytes(), 1 << 20), "MB/s",
                        "clamscan raw mode, same database", theirs))  # fmt: skip
    pause, active, full = activation(raw, work)
    rows.append(Row("100k update: VMCALL pause (verify + check + persist)", pause, "s",
                    "clamscan -d 100k.ndb on an empty file", load))  # fmt: skip
    rows.append(Row("100k update: verified to active (compile off the vCPU)", active, "s",
                    "clamscan -d 100k.ndb on an empty file", load))  # fmt: skip
    rows.append(Row("100k update: verified to full speed (one-database recompile)", full, "s",
                    "clamscan -d 100k.ndb on an empty file", load))  # fmt: skip
    return rows
