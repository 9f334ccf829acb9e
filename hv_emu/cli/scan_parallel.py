"""``hv-emu scan -j``: files (and pieces of large files) scanned by forked worker processes.

Models: a scan shared among worker processes, as ``clamdscan --multiscan`` shares one among
clamd's threads: ``parallel_results`` gives each file's result in walk order, as a scan in one
process gives it, the workers forked with the compiled database already loaded
(``_WORKER_DB``); a file of twice ``SPLIT_FROM`` bytes or more is cut into pieces on the
``CHUNK`` grid when the database allows it (``splittable``), each piece's stream started early
enough and run on late enough that it reports exactly the whole scan's matches that end inside
it (``scan_piece``). Processes, not threads: python-hyperscan holds the GIL while it scans.

Follows: docs/SIGNATURES.md, "Start-up, the cache and -j": at most ``MAX_JOBS_PER_CORE``
workers per core; the output is the same as with ``-j 1``, line for line.

Leaves out: databases with multi-part signatures, positioned offsets, hashes of whole files or
logical signatures are never split: each such file is scanned whole by one worker.

User controls: ``-j`` (capped) and the files, as for ``scan_files.py``; a piece that cannot be
read is a ``Problem`` that ends its file's result there, and one that reads fewer bytes than it
spans (the file shrank) ends it there too, as a whole scan's first short read does.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Generator, Sequence
from pathlib import Path

from hv_emu.cli.scan_files import CHUNK, UNSUPPORTED, FileResult, Problem, scan_file
from hv_emu.scanner.database import SignatureDatabase
from hv_emu.scanner.record import Frozen, setfield

#: Below this many bytes in all (or with one file) a scan stays in this process: starting worker
#: processes costs more than it saves.
PARALLEL_FROM = 16 * 1024 * 1024
#: ``-j`` is capped at this many workers per core: more only add forks and memory.
MAX_JOBS_PER_CORE = 4
#: A file twice this large is scanned in pieces by several workers at once, when the database
#: allows it (``splittable``); a piece is never smaller. Starting the workers costs about 30 ms on
#: an idle machine and 80 ms or more on a busy one (importing ``multiprocessing``, forking the
#: ``Pool``), about what half of a 64 MiB file's scan takes (docs/PERFORMANCE.md): only from
#: 128 MiB does cutting one file save more than it costs.
SPLIT_FROM = 64 * 1024 * 1024


#: The database a worker process scans with: set before the workers fork, so each inherits it
#: (compiled, with its own copy of the scratch space) instead of receiving it pickled.
_WORKER_DB: SignatureDatabase | None = None


class Piece(Frozen):
    """Scan ``path`` for the matches that end in ``(first, stop]``; the whole file when ``stop``
    is None."""

    __slots__ = ("path", "first", "stop")  # noqa: RUF023 (__init__'s order)
    path: Path
    first: int
    stop: int | None

    def __init__(self, path: Path, first: int = 0, stop: int | None = None) -> None:
        setfield(self, "path", path)
        setfield(self, "first", first)
        setfield(self, "stop", stop)


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
    if program.gap_max or db.hashes.applied or program.logical is not None:
        return False
    # A database from the cache knows the answer without decoding its patterns (cache_entry.py).
    known: bool | None = getattr(program.patterns_by_literal, "offsets_anywhere", None)
    if known is not None:
        return known
    return all(pattern.offset.kind == "any"
               for group in program.patterns_by_literal for pattern in group)  # fmt: skip


def scan_piece(db: SignatureDatabase, path: Path, first: int, stop: int) -> FileResult:
    """The names of the matches that end in ``(first, stop]`` of ``path``, in the order a scan of
    the whole file reports them (``first`` must be a multiple of ``CHUNK``; ``db`` must be
    ``splittable``). The stream starts ``program.history + program.widest`` bytes before
    ``first`` (every byte a match ending after ``first`` can depend on), is fed from ``first`` in
    the same ``CHUNK`` grid as ``scan_file`` (so each feed reports what the whole scan's does), and
    goes on ``history`` bytes past ``stop`` (never past the file's size), where a right-anchored
    byte can decide a match that ended before it; the stream knows the length to the file's end,
    where a right boundary with no byte after it is decided. ``size`` counts the bytes of
    ``[first, stop)`` read."""
    result = FileResult(str(path))
    reach = db.program.history + db.program.widest
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                result.problem = UNSUPPORTED
                return result
            size = info.st_size
            base = max(0, first - reach)
            handle.seek(base)
            # The length to the file's end: a right boundary, (B) or (L), with no byte after it
            # is decided there, as in a whole scan (no EOF-n or absolute offsets: splittable).
            stream = db.open_stream(max(0, size - base))
            try:
                position = base
                end = max(stop, min(stop + db.program.history, size))  # never past the size
                while position < end:
                    want = first - position if position < first else (
                        min(CHUNK, stop - position) if position < stop else
                        end - position)  # fmt: skip
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


def _joined(path: Path, parts: list[FileResult], pieces: Sequence[Piece] = ()) -> FileResult:
    """One file's result from its pieces' results, in order: names in order of first match; a
    piece that could not be read, or that read fewer bytes than it spans (of ``pieces``, when
    given: the file ended inside it), ends the file there, as it would end a whole scan."""
    result = FileResult(str(path))
    for index, part in enumerate(parts):
        result.size += part.size
        result.names += [name for name in part.names if name not in result.names]
        if part.problem is not None:
            result.problem = part.problem
            break
        piece = pieces[index] if index < len(pieces) else None
        if piece is not None and piece.stop is not None and part.size < piece.stop - piece.first:
            break  # it shrank: a whole scan stops at its first short read, later bytes unread
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
            yield parts[0] if pieces[0].stop is None else _joined(path, parts, pieces)
    finally:
        pool.terminate()
        pool.join()
        _WORKER_DB = None


def cores() -> int:
    """The cores this process may run on (``-j``'s default)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
