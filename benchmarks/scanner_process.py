"""The signature scanner as whole processes: ``hv-emu scan`` against ``clamscan``, alternately.

Data: the corpora of ``scanner.py`` (here 256 MiB each), the real rfxn.ndb (rows skipped when
the data set or ``clamscan`` is absent), and a 25,000-signature database (``field_sized_ndb``:
rfxn.ndb's lines and generated ones in their style, not a real database).

- Whole process (``cli_rows``, issue 10 item 4): ``python -m hv_emu scan --db rfxn.ndb`` as a
  user runs it (with bytecode), start-up, database load and output included, against
  ``clamscan`` in raw mode on the same files, the two run alternately: one small file (with the
  compiled-database cache warm, and with ``--no-cache``), one 256 MiB binary and one 256 MiB
  text file, and the text as 16 files of 16 MiB; and with the 25,000-signature database one
  small file (start-up) and 64 MiB of each corpus. Each is the median of several runs; the rate
  is bytes / wall time of the whole process.
- Start-up (``startup_table``): docs/PERFORMANCE.md's small-file table, for any ``hv-emu``
  command lines (an installed wheel, this tree) beside clamscan.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Row
from benchmarks.scanner import MB, RAW_MODE, RFXN, ROOT, SIZE, clamscan_run, corpora

CLI_SIZE = 256 * 1024 * 1024
#: The real-world-sized database of ``field_sized_ndb``: about the 25,529 signatures of the
#: public database issue 10 measured.
FIELD_SIZED = 25_000


def run() -> list[Row]:
    """Every whole-process row (``cli_rows``)."""
    return cli_rows()


def field_sized_ndb(count: int = FIELD_SIZED) -> bytes:
    """A real-world-sized ``.ndb`` of ``count`` lines, deterministic: rfxn.ndb's lines, then
    generated lines in their style (``{HEX}Bench.Generated.N:0:*:HEX``, plain literals anywhere):
    each an rfxn body with a window of 6 to 12 of its bytes replaced by random letters, digits
    and punctuation, so the lengths (10 to 346 bytes, median about 107) and the kind of text are
    rfxn's. Not a real database: there is none of that size here (docs/PERFORMANCE.md)."""
    lines = [line for line in RFXN.read_bytes().splitlines() if line and not line.startswith(b"#")]
    hexes = [line.rsplit(b":", 1)[1] for line in lines if line.count(b":") == 3]
    bodies = [bytes.fromhex(h.decode()) for h in hexes if h.strip(b"0123456789abcdef") == b""]
    rng = random.Random(25_000)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789_$();=.'\"/<>?"
    seen = set(bodies)
    number = 0
    while len(lines) < count:
        body = bytearray(rng.choice(bodies))
        width = min(len(body), rng.randint(6, 12))
        at = rng.randrange(len(body) - width + 1)
        body[at : at + width] = bytes(rng.choice(alphabet) for _ in range(width))
        if bytes(body) in seen:
            continue
        seen.add(bytes(body))
        number += 1
        lines.append(b"{HEX}Bench.Generated.%d:0:*:%s" % (number, body.hex().encode()))
    return b"\n".join(lines) + b"\n"


def hv_scan_seconds(args: list[str], cache_home: Path, database: Path = RFXN,
                    root: Path = ROOT) -> float:  # fmt: skip
    """Wall time of one whole ``hv-emu scan`` process (the code of the tree at ``root``, this one
    by default; cache in ``cache_home``), run as an installed hv-emu runs: with bytecode (this
    environment may set PYTHONDONTWRITEBYTECODE; the bytecode goes beside the cache, written by
    the first run)."""
    env = {**os.environ, "PYTHONPATH": str(root), "XDG_CACHE_HOME": str(cache_home),
           "PYTHONPYCACHEPREFIX": str(cache_home / "bytecode")}  # fmt: skip
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    # In ``root``: ``python -m`` puts the working directory first on the path, before PYTHONPATH.
    subprocess.run([sys.executable, "-m", "hv_emu", "scan", "--db", str(database), *args],
                   env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)  # fmt: skip
    return time.perf_counter() - started


def alternately(repeat: int, ours: Callable[[], float], theirs: Callable[[], float]
                ) -> tuple[float, float]:  # fmt: skip
    """The medians of ``repeat`` runs of each, run in turn (ours, theirs, ours ...), so that a
    change of the machine's load falls on both alike."""
    mine: list[float] = []
    peer: list[float] = []
    for _ in range(repeat):
        mine.append(ours())
        peer.append(theirs())
    return sorted(mine)[repeat // 2], sorted(peer)[repeat // 2]


def cli_rows() -> list[Row]:
    """``hv-emu scan`` and ``clamscan`` as whole processes, run alternately (issue 10 item 4)."""
    if not RFXN.is_file() or shutil.which("clamscan") is None:
        return []
    rows = []
    peer = "clamscan raw mode, same files"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = work / "cache"
        small = work / "small.txt"
        small.write_bytes(b"<?php echo 'a small, clean file'; ?>\n" * 30)
        hv_scan_seconds([str(small)], cache)  # fills the cache (and writes the bytecode)
        warm, theirs = alternately(11, lambda: hv_scan_seconds([str(small)], cache),
                                   lambda: clamscan_run(RFXN, small)[0])  # fmt: skip
        cold, theirs_cold = alternately(
            5, lambda: hv_scan_seconds(["--no-cache", str(small)], cache),
            lambda: clamscan_run(RFXN, small)[0])  # fmt: skip
        rows.append(Row("hv-emu scan, one small file, rfxn, whole process, cache warm",
                        warm * 1e3, "ms", peer, theirs * 1e3))  # fmt: skip
        rows.append(Row("hv-emu scan, one small file, rfxn, whole process, --no-cache",
                        cold * 1e3, "ms", peer, theirs_cold * 1e3))  # fmt: skip
        rows += _field_sized_rows(work, small)

        def rate(seconds_: float) -> float:
            return CLI_SIZE / seconds_ / MB

        def both(path: Path, *args: str) -> tuple[float, float]:
            hv, clam = alternately(3, lambda: hv_scan_seconds([*args, str(path)], cache),
                                   lambda: clamscan_run(RFXN, path)[0])  # fmt: skip
            return rate(hv), rate(clam)

        tree = work / "tree"
        for name, data in corpora(random.Random(256), CLI_SIZE).items():
            path = work / f"{name}.256M"
            path.write_bytes(data)
            if name == "text":
                tree.mkdir()
                piece = CLI_SIZE // 16
                for index in range(16):
                    (tree / f"{index:02}").write_bytes(data[index * piece : (index + 1) * piece])
            del data
            ours, theirs = both(path)
            rows.append(Row(f"hv-emu scan, one 256 MiB {name} file, whole process, -j all "
                            "cores", ours, "MB/s", peer, theirs))  # fmt: skip
            ours, theirs = both(path, "-j", "1")
            rows.append(Row(f"hv-emu scan, one 256 MiB {name} file, whole process, -j 1",
                            ours, "MB/s", peer, theirs))  # fmt: skip
        ours, theirs = both(tree)
        rows.append(Row("hv-emu scan, 16 text files of 16 MiB, whole process, -j all cores",
                        ours, "MB/s", peer, theirs))  # fmt: skip
        ours, theirs = both(tree, "-j", "1")
        rows.append(Row("hv-emu scan, 16 text files of 16 MiB, whole process, -j 1",
                        ours, "MB/s", peer, theirs))  # fmt: skip
    return rows


def _field_sized_rows(work: Path, small: Path) -> list[Row]:
    """Start-up and 64 MiB with the 25,000-signature database (``field_sized_ndb``)."""
    database = work / "field25k.ndb"
    database.write_bytes(field_sized_ndb())
    cache = work / "cache25k"
    peer = "clamscan raw mode, same database and files"

    def hv(*args: str | Path) -> float:
        return hv_scan_seconds([str(arg) for arg in args], cache, database)

    hv(small)  # fills the cache
    ours, theirs = alternately(7, lambda: hv(small), lambda: clamscan_run(database, small)[0])
    rows = [Row("hv-emu scan, one small file, 25k signatures (rfxn + generated), whole process, "
                "cache warm (start-up)", ours * 1e3, "ms", peer, theirs * 1e3)]  # fmt: skip
    for name, data in corpora(random.Random(64)).items():
        path = work / f"{name}.64M"
        path.write_bytes(data)
        ours, theirs = alternately(3, lambda path=path: hv(path),  # type: ignore[misc]
                                   lambda path=path: clamscan_run(database, path)[0])  # type: ignore[misc]
        rows.append(Row(f"hv-emu scan, one 64 MiB {name} file, 25k signatures, whole process, "
                        "-j all cores", SIZE / ours / MB, "MB/s", peer,
                        SIZE / theirs / MB))  # fmt: skip
        path.unlink()
    return rows


def goal_rows(trees: dict[str, Path] | None = None, repeat: int = 5,
              field_sized: bool = False) -> list[Row]:  # fmt: skip
    """Issue 10's large-input goals for each of ``trees`` (a label and a source tree; by default
    this one, e.g. ``{"main": Path("/path/to/main"), "this": ROOT}`` for a before and after in
    one run): one file of each corpus, 256 MiB with rfxn.ndb (or, with ``field_sized``, 64 MiB
    with the 25,000-signature ``field_sized_ndb``), with the default ``-j`` and with ``-j 1``.
    Each of ``repeat`` rounds runs every variant once and then raw-mode clamscan once, so a
    change of load falls on all alike; medians, the rate is bytes / whole-process wall time."""
    if not RFXN.is_file() or shutil.which("clamscan") is None:
        return []
    trees = {"this tree": ROOT} if trees is None else trees
    size = SIZE if field_sized else CLI_SIZE
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        database = RFXN
        if field_sized:
            database = work / "field25k.ndb"
            database.write_bytes(field_sized_ndb())
        small = work / "small.txt"
        small.write_bytes(b"clean\n" * 30)
        for label, root in trees.items():
            hv_scan_seconds([str(small)], work / label, database, root)  # fills its cache
        what = "25k signatures" if field_sized else "rfxn"
        for name, data in corpora(random.Random(64 if field_sized else 256), size).items():
            path = work / f"{name}.data"
            path.write_bytes(data)
            del data
            variants = [(label, root, jobs) for label, root in trees.items()
                        for jobs in ([], ["-j", "1"])]  # fmt: skip
            times: list[list[float]] = [[] for _ in variants]
            peer: list[float] = []
            for _ in range(repeat):
                for index, (label, root, jobs) in enumerate(variants):
                    times[index].append(hv_scan_seconds([*jobs, str(path)], work / label,
                                                        database, root))  # fmt: skip
                peer.append(clamscan_run(database, path)[0])
            theirs = size / sorted(peer)[repeat // 2] / MB
            for (label, _root, jobs), measured in zip(variants, times, strict=True):
                ours = size / sorted(measured)[repeat // 2] / MB
                rows.append(Row(f"hv-emu scan ({label}), one {size >> 20} MiB {name} file, {what}, "
                                f"whole process, {' '.join(jobs) or 'default -j'}", ours, "MB/s",
                                "clamscan raw mode, same files, same rounds", theirs))  # fmt: skip
            path.unlink()
    return rows


def cold_rows(trees: dict[str, Path] | None = None, repeat: int = 5) -> list[Row]:
    """One small file with ``--no-cache`` (parse and compile at every start), rfxn.ndb and the
    25,000-signature ``field_sized_ndb``, for each of ``trees`` (as ``goal_rows``); each round
    runs every tree once and then raw-mode clamscan once; medians."""
    if not RFXN.is_file() or shutil.which("clamscan") is None:
        return []
    trees = {"this tree": ROOT} if trees is None else trees
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        field = work / "field25k.ndb"
        field.write_bytes(field_sized_ndb())
        small = work / "small.txt"
        small.write_bytes(b"<?php echo 'a small, clean file'; ?>\n" * 30)
        for label, root in trees.items():
            hv_scan_seconds([str(small)], work / label, RFXN, root)  # writes the bytecode
        for what, database in (("rfxn", RFXN), ("25k signatures", field)):
            times: dict[str, list[float]] = {label: [] for label in trees}
            peer: list[float] = []
            for _ in range(repeat):
                for label, root in trees.items():
                    times[label].append(hv_scan_seconds(["--no-cache", str(small)], work / label,
                                                        database, root))  # fmt: skip
                peer.append(clamscan_run(database, small)[0])
            theirs = sorted(peer)[repeat // 2] * 1e3
            for label, measured in times.items():
                rows.append(Row(f"hv-emu scan ({label}), one small file, {what}, whole process, "
                                "--no-cache", sorted(measured)[repeat // 2] * 1e3, "ms",
                                "clamscan raw mode, same files, same rounds", theirs))  # fmt: skip
    return rows


def startup_table(commands: dict[str, list[str]], repeat: int = 15) -> list[str]:
    """docs/PERFORMANCE.md's small-file table: each of ``commands`` (a label and an ``hv-emu``
    command line, ``scan`` and its arguments to follow) and raw-mode clamscan, on one small file
    with rfxn.ndb and the cache warm, run in turn ``repeat`` times; markdown rows of the median,
    the fastest, the median against clamscan's and the fastest run's CPU time. Bytecode is
    allowed, as an installed hv-emu has it; the commands run in a temporary directory, without
    ``PYTHONPATH``. E.g. ``startup_table({"wheel": ["VENV/bin/hv-emu"], "tree": ["env",
    f"PYTHONPATH={ROOT}", sys.executable, "-m", "hv_emu"]})``."""
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / "small.txt"
        small.write_bytes(b"<?php echo 'a small, clean file'; ?>\n" * 30)
        env = {**os.environ, "XDG_CACHE_HOME": str(work),
               "PYTHONPYCACHEPREFIX": str(work / "bytecode")}  # fmt: skip
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.pop("PYTHONPATH", None)  # an installed hv-emu must import its own code
        clamscan = ["clamscan", "-d", str(RFXN), *RAW_MODE, str(small)]
        runs = {label: [*command, "scan", "--db", str(RFXN), str(small)]
                for label, command in commands.items()} | {"clamscan raw mode": clamscan}
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}

        def once(argv: list[str]) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(argv, env=env, cwd=work, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True)  # a clean file: status 0
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

        for argv in runs.values():  # fills the cache, writes the bytecode
            once(argv)
        for _ in range(repeat):
            for label, argv in runs.items():
                times[label].append(once(argv))
    theirs = sorted(wall for wall, _ in times["clamscan raw mode"])[repeat // 2]
    rows = []
    for label, measured in times.items():
        walls = sorted(wall for wall, _ in measured)
        cpu = min(measured)[1]
        rows.append(f"| {label} | {walls[repeat // 2] * 1e3:.1f} ms | {walls[0] * 1e3:.1f} ms | "
                    f"{walls[repeat // 2] / theirs:.2f}x | {cpu * 1e3:.1f} ms |")
    return rows
