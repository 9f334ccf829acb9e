"""``hv-emu scan``: the hypervisor's disk scanner as a clamscan-like command.

Models: ``clamscan --allmatch`` in raw mode, over the same engine the hypervisor runs on its guest's
disk writes. Files, directories (walked recursively) and disk images are read in chunks of
``CHUNK`` bytes and fed, in order, into one scan stream per file, opened with the file's length
(so ``EOF-n`` offsets apply); a file of any size is scanned whole, with memory bounded by the chunk
and the stream's state. Output, on standard output, is one line ``PATH: NAME FOUND`` per (file,
signature) and ``PATH: OK`` for a clean file (unless ``--infected``); or, with ``--json``, one JSON
object per file (JSON Lines). A path that cannot be read is one line ``hv-emu: PATH: why`` on
standard error (a ``"status": "error"`` object with ``--json``). A summary goes to standard error,
with a progress line while a long scan runs on a terminal.

The walk and one file's scan are ``scan_files.py``'s, the worker processes ``scan_parallel.py``'s;
this module is the command: options, the loop over the walk, output and the summary.

Start-up and parallelism (docs/SIGNATURES.md, "Start-up, the cache and -j"): the databases come
from the per-user cache of compiled databases (``hv_emu/scanner/cache.py``) unless ``--no-cache``;
several files of ``PARALLEL_FROM`` bytes or more in all are shared among ``-j`` forked worker
processes (default: one per core, at most ``MAX_JOBS_PER_CORE`` per core), a large file cut into
pieces when the database allows (``splittable``); one file of ``SHARED_FROM`` bytes or more is
scanned here and shared with forked children only when the rate measured on its first megabytes
says it pays (``scan_shared.py``); results are printed in walk order, the same output as one
process gives.

Exit status, as clamscan 1.4.6's (measured): 1 when something was found (even if some path could
not be read), else 2 on an error (a bad database or option, a path that cannot be read, standard
output that cannot be written: ``OutputError``, one line), else 0; a reader of standard output
that went away (``| head -1``) ends the scan quietly with 141 (``hv_emu/usage.py``).

Follows: clamscan 1.4's output lines and exit codes, and the raw-mode semantics of
docs/SIGNATURES.md (every name, every layout, no file typing or decoding).

Trees and special files, as clamscan 1.4.6 (measured; docs/SIGNATURES.md): directories are walked
iteratively, entered to ``--max-dir-recursion`` levels (default 15; the named directory is level 1);
a directory past the limit is one warning line and not an error (clamscan skips it silently).
Symbolic links met inside a directory are not followed (so a link loop cannot trap the walk); links
named on the command line are. Only regular files are read: FIFOs, sockets and devices met inside a
directory are skipped silently, and named on the command line (or through a link) they are one line
``hv-emu: warning: PATH: Not supported file type`` and exit 2, as clamscan's ``WARNING:`` (a FIFO
would block, /dev/zero never end). A file is read up to its size at open, as clamscan maps it, so a
file that grows while it is scanned cannot keep the scan going. File names are printed as their
bytes (``os.fsdecode``'s surrogates written back with ``surrogateescape``), as clamscan does.

Hash signatures (``.hdb``/``.hsb``, ``hv_emu/scanner/hashes.py``) are matched per file: each
digest the databases need for the file's size is fed the chunks the scan stream is fed, so a file
is read once; their names follow the body signatures' (``--db DIR`` loads a directory's databases
as ``clamscan -d DIR``).

Leaves out: clamscan's file typing, normalisation and unpacking (docs/SIGNATURES.md lists the
differences), PE-section hashes (``.mdb``/``.msb``: accepted, reported once per file),
clamscan's ``PATH: Symbolic link`` lines for links inside directories, and its ``Excluded
(/proc)`` rule.

User controls: the paths and databases; the files' bytes and names, and the tree's shape, are
anyone's (every problem is one line, and the summary is always printed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from hv_emu.cli.scan_files import MAX_DIR_RECURSION, FileResult, Item, scan_file, walk
from hv_emu.cli.scan_parallel import (
    MAX_JOBS_PER_CORE,
    PARALLEL_FROM,
    cores,
    parallel_results,
    splittable,
)
from hv_emu.cli.scan_shared import MARGIN, PROBE, UNIT, shared_result
from hv_emu.scanner.cache import Cache
from hv_emu.scanner.database import ENGINES, SignatureDatabase
from hv_emu.scanner.database_files import compile_files
from hv_emu.usage import OutputError

PROGRESS_AFTER = 1.0  # seconds before a progress line appears: short scans stay quiet
PROGRESS_EVERY = 0.25  # seconds between progress updates
EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
#: One file this large or larger may be shared (``scan_shared.py``): its first ``PROBE`` bytes
#: are timed, and ``worth_sharing`` holds only when the rest is more than ``MARGIN`` units
#: (its saving, at most the rest's time, must exceed ``MARGIN`` times a unit's wait, whatever the
#: rate), so no smaller file is ever forked for: 16 MiB.
SHARED_FROM = PROBE + int(MARGIN * UNIT)
#: The options that put ``clamscan -d DB`` in raw mode, the mode this command agrees with: every
#: name, no normalisation, no decoders, no size cut-off (docs/SIGNATURES.md). The agreement tests
#: and the benchmarks run clamscan with exactly these.
CLAMSCAN_RAW_MODE = (
    "--no-summary", "--allmatch=yes", "--normalize=no",
    "--scan-html=no", "--scan-mail=no", "--scan-pe=no", "--scan-elf=no", "--scan-ole2=no",
    "--scan-pdf=no", "--scan-swf=no", "--scan-xmldocs=no", "--scan-hwp3=no", "--scan-onenote=no",
    "--scan-archive=no", "--scan-image=no", "--scan-image-fuzzy-hash=no",
    "--heuristic-alerts=no", "--bytecode=no", "--max-filesize=2000M", "--max-scansize=2000M",
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``hv-emu scan`` and its options."""
    scan = sub.add_parser(
        "scan", help="scan files, directories and disk images like clamscan --allmatch",
        description="Scan files, directories (recursively) and disk images with the hypervisor's "
        "signature engine. Exit status: 0 clean, 1 found, 2 error.",
    )  # fmt: skip
    scan.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="what to scan")
    scan.add_argument("--db", type=Path, action="append", required=True, metavar="FILE",
                      help="a signature database (.db, .ndb, .ldb, .hdb, .hsb, .mdb, .msb) or a "
                           "directory of them, as clamscan -d (repeatable)")
    scan.add_argument("--engine", choices=ENGINES, default="auto",
                      help="literal finder: hyperscan when it imports (auto), or pyahocorasick")
    scan.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    scan.add_argument("-i", "--infected", action="store_true", help="print only infected files")
    scan.add_argument("--max-dir-recursion", type=_count, default=MAX_DIR_RECURSION, metavar="N",
                      help=f"enter directories to N levels, the named one being level 1 (default "
                           f"{MAX_DIR_RECURSION}, as clamscan)")  # fmt: skip
    scan.add_argument("-j", "--jobs", type=_count, default=0, metavar="N",
                      help="scan with up to N processes at once: several files in worker "
                           "processes, one large file in this one and, when its measured rate "
                           "says it pays, forked children (default 0: one per core; at most "
                           f"{MAX_JOBS_PER_CORE} per core); the output is the same as with -j 1")
    scan.add_argument("--no-cache", action="store_true",
                      help="compile the databases afresh, neither reading nor writing the cache "
                           "of compiled databases (docs/SIGNATURES.md)")


def _count(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


class Summary:
    """The counts the summary prints."""

    __slots__ = ("errors", "files", "infected", "matches", "scanned")

    def __init__(self) -> None:
        self.files = 0
        self.infected = 0
        self.errors = 0
        self.scanned = 0  # bytes
        self.matches = 0  # (file, name) pairs


class Progress:
    """A one-line progress bar on a terminal: shown only after ``PROGRESS_AFTER`` seconds."""

    def __init__(self, out: TextIO, total: int, clock: Callable[[], float]) -> None:
        self._out = out
        self._total = total
        self._clock = clock
        self._start = clock()
        self._done = 0
        self._shown_at: float | None = None
        self._visible = False
        self.enabled = out.isatty()

    def advance(self, size: int, current: Path) -> None:
        """``size`` more bytes of ``current`` were scanned."""
        self._done += size
        if not self.enabled:
            return
        now = self._clock()
        elapsed = now - self._start
        if elapsed < PROGRESS_AFTER:
            return
        if self._shown_at is not None and now - self._shown_at < PROGRESS_EVERY:
            return
        self._shown_at, self._visible = now, True
        fraction = min(self._done / self._total, 1.0) if self._total else 1.0
        bar = "#" * int(fraction * 30)
        rate = self._done / elapsed / 1e6
        name = str(current)
        name = name if len(name) <= 40 else "..." + name[-37:]
        self._out.write(f"\r[{bar:<30}] {fraction:6.1%} {rate:8.1f} MB/s {name:<40}")
        self._out.flush()

    def clear(self) -> None:
        """Wipe the bar before a result line is printed (it comes back on the next update)."""
        if self._visible:
            self._visible = False
            self._out.write("\r" + " " * 100 + "\r")
            self._out.flush()


def _total_bytes(items: Sequence[Item]) -> int:
    total = 0
    for item in items:
        if item.problem is None:
            with contextlib.suppress(OSError):  # reported when it is scanned
                total += item.path.stat().st_size
    return total


def run_scan(
    db: SignatureDatabase,
    paths: Sequence[Path],
    *,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
    infected_only: bool = False,
    max_depth: int = MAX_DIR_RECURSION,
    clock: Callable[[], float] = time.monotonic,
    jobs: int = 1,
) -> int:
    """Scan ``paths`` with ``db``; write results to ``out``, progress and summary to ``err``.
    With ``jobs`` > 1 a large scan's files are scanned that many at once (``parallel_results``);
    the output is the same, in the same order."""
    started = clock()
    items = list(walk(paths, max_depth))
    total = _total_bytes(items) if err.isatty() or jobs > 1 else 0
    progress = Progress(err, total, clock)
    summary = Summary()
    files = [item.path for item in items if item.problem is None]
    # Only a scan large enough to share asks whether files may be cut. Several files go to the
    # pool; one file is scanned here, and shared with forked children only if its first
    # megabytes' rate says the rest is worth it (scan_shared.py).
    split = jobs > 1 and total >= min(PARALLEL_FROM, SHARED_FROM) and splittable(db)
    shared = split and len(files) == 1 and total >= SHARED_FROM
    parallel = jobs > 1 and total >= PARALLEL_FROM and len(files) > 1
    results = parallel_results(db, files, jobs, split=split) if parallel else None
    for item in items:
        if item.problem is not None and not item.problem.error:  # a directory left out: no file
            progress.clear()
            err.write(f"hv-emu: warning: {item.path}: {item.problem.message}\n")
            continue
        if item.problem is not None:
            result = FileResult(str(item.path), problem=item.problem)
        elif results is not None:
            result = next(results)
            progress.advance(result.size, item.path)
        elif shared:
            result = shared_result(db, item.path, jobs,
                                   partial(progress.advance, current=item.path))  # fmt: skip
        else:
            result = scan_file(db, item.path, partial(progress.advance, current=item.path))
        summary.files += 1
        summary.scanned += result.size
        summary.matches += len(result.names)
        summary.infected += bool(result.names)
        summary.errors += result.error is not None
        progress.clear()
        try:
            _report(out, err, result, as_json=as_json, infected_only=infected_only)
        except OSError as error:  # standard output: a full disk, or its reader went away
            if results is not None:
                results.close()  # ends the workers
            raise OutputError(error) from None
    if results is not None:
        results.close()  # ends the workers
    elapsed = clock() - started
    rate = summary.scanned / elapsed / 1e6 if elapsed > 0 else 0.0
    err.write(
        "----------- SCAN SUMMARY -----------\n"
        f"Known viruses: {db.count}\n"
        f"Engine: hv-emu ({db.engine})\n"
        f"Scanned files: {summary.files - summary.errors}\n"
        f"Infected files: {summary.infected}\n"
        f"Signatures found: {summary.matches}\n"
        f"Total errors: {summary.errors}\n"
        f"Data scanned: {summary.scanned / 1e6:.2f} MB\n"
        f"Time: {elapsed:.3f} sec ({rate:.1f} MB/s)\n"
    )
    if summary.infected:  # clamscan too says "found" over "error" when it has both
        return EXIT_FOUND
    return EXIT_ERROR if summary.errors else EXIT_CLEAN


def _report(
    out: TextIO, err: TextIO, result: FileResult, *, as_json: bool, infected_only: bool
) -> None:
    if as_json:
        import json  # only --json pays for it

        status = "error" if result.error else "found" if result.names else "clean"
        if status == "clean" and infected_only:  # -i filters the JSON lines as it does the text
            return
        record = {"path": result.path, "status": status, "names": result.names,
                  "bytes": result.size, "error": result.error}  # fmt: skip
        out.write(json.dumps(record) + "\n")
        return
    if result.problem is not None:
        kind = "warning: " if result.problem.warning else ""
        err.write(f"hv-emu: {kind}{result.path}: {result.problem.message}\n")
    for name in result.names:
        out.write(f"{result.path}: {name} FOUND\n")
    if not result.names and result.error is None and not infected_only:
        out.write(f"{result.path}: OK\n")


def cmd_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``hv-emu scan``: load the databases (errors are one line, exit 2), then scan."""
    for stream in (out, err):  # a file name's bytes go out as they are, as clamscan prints them
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    cache = None if args.no_cache else Cache()
    db = compile_files(args.db, engine=args.engine, cache=cache)
    for warning in db.not_applied:
        err.write(f"hv-emu: warning: {warning}\n")
    jobs = args.jobs or cores()
    return run_scan(db, args.paths, out=out, err=err, as_json=args.json,
                    infected_only=args.infected, max_depth=args.max_dir_recursion,
                    jobs=jobs)  # fmt: skip
