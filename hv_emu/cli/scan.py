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

Start-up and parallelism (docs/SIGNATURES.md, "Start-up, the cache and -j"): the databases come
from the per-user cache of compiled databases (``hv_emu/scanner/cache.py``) unless ``--no-cache``;
a scan of ``PARALLEL_FROM`` bytes or more is shared among ``-j`` forked worker processes (default:
one per core, at most ``MAX_JOBS_PER_CORE`` per core), a large file cut into pieces when the
database allows (``splittable``); results are printed in walk order, the same output as one
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
import itertools
import os
import stat
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from hv_emu.scanner.cache import Cache
from hv_emu.scanner.database import ENGINES, SignatureDatabase, compile_files
from hv_emu.usage import OutputError

CHUNK = 1024 * 1024  # read size: large enough that per-call overhead vanishes
PROGRESS_AFTER = 1.0  # seconds before a progress line appears: short scans stay quiet
PROGRESS_EVERY = 0.25  # seconds between progress updates
EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
MAX_DIR_RECURSION = 15  # clamscan's --max-dir-recursion default
#: Below this many bytes in all (or with one file) a scan stays in this process: starting worker
#: processes costs more than it saves.
PARALLEL_FROM = 16 * 1024 * 1024
#: ``-j`` is capped at this many workers per core: more only add forks and memory.
MAX_JOBS_PER_CORE = 4
#: A file this large is scanned in pieces by several workers at once, when the database allows it
#: (``splittable``); a piece is never smaller.
SPLIT_FROM = 32 * 1024 * 1024
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
                      help="scan up to N files at once, in worker processes (default 0: one per "
                           f"core; at most {MAX_JOBS_PER_CORE} per core); the output is in the "
                           "same order as with -j 1")
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


@dataclass
class FileResult:
    """What scanning one file found: its signature names in order of first match."""

    path: str
    size: int = 0
    names: list[str] = field(default_factory=list)
    problem: Problem | None = None

    @property
    def error(self) -> str | None:
        """Why the file was not (wholly) scanned, or None."""
        return None if self.problem is None else self.problem.message


@dataclass
class Summary:
    files: int = 0
    infected: int = 0
    errors: int = 0
    scanned: int = 0  # bytes
    matches: int = 0  # (file, name) pairs


@dataclass(frozen=True)
class Problem:
    """Why a path was not scanned: an error (counted, exit 2) or a warning (``warning``)."""

    message: str
    warning: bool = False  # printed as "hv-emu: warning: PATH: ..."
    error: bool = True  # counts in "Total errors" and makes the exit status 2


#: clamscan's words for a FIFO, socket or device named on the command line (``WARNING:``, exit 2).
UNSUPPORTED = Problem("Not supported file type", warning=True)


@dataclass(frozen=True)
class Item:
    """One path the walk met: a file to scan, or a path it could not use and why."""

    path: Path
    problem: Problem | None = None


def walk(paths: Sequence[Path], max_depth: int = MAX_DIR_RECURSION) -> Iterator[Item]:
    """Every file to scan, in a stable order, and every path that cannot be used, with why."""
    for path in paths:
        try:
            mode = path.stat().st_mode  # follows a link named on the command line
        except OSError as error:
            yield Item(path, Problem(f"cannot access: {error.strerror}"))
            continue
        if stat.S_ISDIR(mode):
            yield from _walk_tree(path, max_depth)
        elif stat.S_ISREG(mode):
            yield Item(path)
        else:  # a FIFO would block, /dev/zero never end
            yield Item(path, UNSUPPORTED)


def _walk_tree(top: Path, max_depth: int) -> Iterator[Item]:
    """A directory's regular files, depth first, names sorted, files before subdirectories: with a
    stack, not recursion (a tree can be deeper than Python's stack), to ``max_depth`` levels."""
    stack = [(top, 1)]
    while stack:
        directory, depth = stack.pop()
        if depth > max_depth:
            why = f"not scanned: deeper than --max-dir-recursion {max_depth}"
            yield Item(directory, Problem(why, warning=True, error=False))
            continue
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:  # unreadable, vanished, or a path too long for the kernel
            yield Item(directory, Problem(f"cannot list directory: {error.strerror}"))
            continue
        subdirectories = []
        for entry in entries:
            try:  # never follows a link: a link loop cannot trap the walk
                if entry.is_dir(follow_symlinks=False):
                    subdirectories.append(directory / entry.name)
                elif entry.is_file(follow_symlinks=False):  # FIFOs and devices: skipped
                    yield Item(directory / entry.name)
            except OSError:  # gone meanwhile: scanning it reports why, as for any file
                yield Item(directory / entry.name)
        stack.extend((child, depth + 1) for child in reversed(subdirectories))


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


def scan_file(
    db: SignatureDatabase, path: Path, on_chunk: Callable[[int], None] | None = None
) -> FileResult:
    """Scan one regular file (or disk image) whole, chunk by chunk, as one stream, up to the size
    it had when opened (as clamscan maps it: a file that grows meanwhile cannot keep the scan
    going). A file that says it is empty, as /proc's do, is read for one chunk at most."""
    result = FileResult(str(path))
    try:
        # O_NONBLOCK: a path that became a FIFO since the walk must not block the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                result.problem = UNSUPPORTED
                return result
            limit = info.st_size or CHUNK
            stream = db.open_stream(info.st_size or None)  # EOF-n needs a known length
            # Each digest the hash signatures need for a file of this size, fed the same chunks.
            hashers = db.hashes.start(info.st_size) if db.hashes.applied else {}
            try:
                while result.size < limit and (
                    chunk := handle.read(min(CHUNK, limit - result.size))
                ):
                    result.size += len(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    for match in stream.feed(chunk):
                        if match.name not in result.names:
                            result.names.append(match.name)
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            finally:
                stream.close()
            if hashers:
                for name in db.hashes.names(hashers, result.size):
                    if name not in result.names:
                        result.names.append(name)
    except OSError as error:
        result.problem = Problem(f"cannot read: {error.strerror}")
    return result


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
    split = splittable(db)
    parallel = jobs > 1 and total >= PARALLEL_FROM and (len(files) > 1 or split)
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


#: The database a worker process scans with: set before the workers fork, so each inherits it
#: (compiled, with its own copy of the scratch space) instead of receiving it pickled.
_WORKER_DB: SignatureDatabase | None = None


@dataclass(frozen=True)
class Piece:
    """Scan ``path`` for the matches that end in ``(first, stop]``; the whole file when ``stop``
    is None."""

    path: Path
    first: int = 0
    stop: int | None = None


def _scan_in_worker(piece: Piece) -> FileResult:
    assert _WORKER_DB is not None
    if piece.stop is None:
        return scan_file(_WORKER_DB, piece.path)
    return scan_piece(_WORKER_DB, piece.path, piece.first, piece.stop)


def splittable(db: SignatureDatabase) -> bool:
    """Whether pieces of a file can be scanned apart with the same result as the whole: every
    signature of one part (no chain may span pieces) at offset ``*`` (no piece needs to know
    where it lies in the file, or the file's length), no hash of whole files, and no logical
    signature (its counts are the whole file's)."""
    program = db.program
    return not program.gap_max and not db.hashes.applied and program.logical is None and all(
        pattern.offset.kind == "any" for group in program.patterns_by_literal for pattern in group
    )


def scan_piece(db: SignatureDatabase, path: Path, first: int, stop: int) -> FileResult:
    """The names of the matches that end in ``(first, stop]`` of ``path``, in the order a scan of
    the whole file reports them (``first`` must be a multiple of ``CHUNK``; ``db`` must be
    ``splittable``). The stream starts ``program.history + program.widest`` bytes before
    ``first`` (every byte a match ending after ``first`` can depend on), is fed from ``first`` in
    the same ``CHUNK`` grid as ``scan_file`` (so each feed reports what the whole scan's does), and
    goes on ``history`` bytes past ``stop``, where a right-anchored byte can decide a match that
    ended before it. ``size`` counts the bytes of ``[first, stop)`` read."""
    result = FileResult(str(path))
    reach = db.program.history + db.program.widest
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                result.problem = UNSUPPORTED
                return result
            base = max(0, first - reach)
            handle.seek(base)
            stream = db.open_stream(None)  # no EOF-n or absolute offsets: see splittable
            try:
                position = base
                while position < stop + db.program.history:
                    want = first - position if position < first else (
                        min(CHUNK, stop - position) if position < stop else
                        stop + db.program.history - position)  # fmt: skip
                    chunk = handle.read(want)
                    if not chunk:
                        break
                    if first <= position < stop:
                        result.size += len(chunk)
                    for match in stream.feed(chunk):
                        if first < base + match.end <= stop and match.name not in result.names:
                            result.names.append(match.name)
                    position += len(chunk)
            finally:
                stream.close()
    except OSError as error:
        result.problem = Problem(f"cannot read: {error.strerror}")
    return result


def _pieces(path: Path, jobs: int, split: bool) -> list[Piece]:
    """``path`` whole, or in about ``jobs`` pieces of at least ``SPLIT_FROM`` bytes each, cut on
    the ``CHUNK`` grid."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # scanning it says why
    if not split or size < 2 * SPLIT_FROM:
        return [Piece(path)]
    step = max(SPLIT_FROM, -(-size // jobs))
    step = -(-step // CHUNK) * CHUNK
    cuts = [*range(0, size, step), size]
    return [Piece(path, first, stop) for first, stop in itertools.pairwise(cuts)]


def _joined(path: Path, parts: list[FileResult]) -> FileResult:
    """One file's result from its pieces' results, in order: names in order of first match; a
    piece that could not be read ends the file there, as it would end a whole scan."""
    result = FileResult(str(path))
    for part in parts:
        result.size += part.size
        result.names += [name for name in part.names if name not in result.names]
        if part.problem is not None:
            result.problem = part.problem
            break
    return result


def parallel_results(
    db: SignatureDatabase, files: Sequence[Path], jobs: int, *, split: bool = False
) -> Generator[FileResult, None, None]:
    """``scan_file``'s result for each of ``files``, in their order, scanned by ``jobs`` worker
    processes at once (at most ``MAX_JOBS_PER_CORE`` per core); with ``split``
    (``splittable(db)``), a large file is scanned in pieces (``scan_piece``), so one file too
    uses every core. Processes, not threads: python-hyperscan
    holds the GIL while it scans (measured: two threads scan no faster than one). The workers
    are forked, so they start in milliseconds with the compiled database already in memory;
    closing the iterator ends them."""
    import multiprocessing  # only a large scan pays for it

    global _WORKER_DB
    jobs = min(jobs, MAX_JOBS_PER_CORE * cores())  # -j 99999 must not fork 99999 processes
    plan = [_pieces(path, jobs, split) for path in files]
    tasks = [piece for pieces in plan for piece in pieces]
    _WORKER_DB = db
    pool = multiprocessing.get_context("fork").Pool(min(jobs, len(tasks)))
    try:
        done = pool.imap(_scan_in_worker, tasks, chunksize=1)
        for path, pieces in zip(files, plan, strict=True):
            parts = [next(done) for _ in pieces]
            yield parts[0] if pieces[0].stop is None else _joined(path, parts)
    finally:
        pool.terminate()
        pool.join()
        _WORKER_DB = None


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


def cores() -> int:
    """The cores this process may run on (``-j``'s default)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


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
