"""``hv-emu scan``'s paths and files: the walk of the named paths, and one file's scan.

Models: what clamscan does with each path it is given (``scanmanager.c``'s walk, then one scan of
a mapped file): the named paths walked in a stable order into files to scan and paths that
cannot be used (``walk``: directories iteratively, to ``--max-dir-recursion`` levels, links
inside directories not followed, only regular files read), and one file read in ``CHUNK``-byte
chunks into one scan stream opened with its length, up to the size it had at open, its hash
digests fed the same chunks (``scan_file``). ``scan.py`` prints the results.

Follows: clamscan 1.4.6's rules for trees and special files, measured (docs/SIGNATURES.md,
"Trees and special files"); raw-mode matching, every name.

Leaves out: clamscan's ``PATH: Symbolic link`` lines for links inside directories and its
``Excluded (/proc)`` rule (docs/SIGNATURES.md).

User controls: the paths; the files' bytes and names, and the tree's shape, are anyone's: a path
that cannot be used is a ``Problem``, never an exception, and a file is read to its size at open
(a growing file cannot keep the scan going; one that says it is empty, as /proc's do, is read for
one chunk at most).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hv_emu.scanner.database import SignatureDatabase
from hv_emu.scanner.record import Frozen, Record, setfield

CHUNK = 1024 * 1024  # read size: large enough that per-call overhead vanishes
MAX_DIR_RECURSION = 15  # clamscan's --max-dir-recursion default


class FileResult(Record):
    """What scanning one file found: its signature names in order of first match."""

    __slots__ = ("path", "size", "names", "problem")  # noqa: RUF023 (__init__'s order)
    path: str
    size: int
    names: list[str]
    problem: Problem | None

    def __init__(
        self, path: str, size: int = 0, names: list[str] | None = None,
        problem: Problem | None = None,
    ) -> None:  # fmt: skip
        self.path = path
        self.size = size
        self.names = [] if names is None else names
        self.problem = problem

    @property
    def error(self) -> str | None:
        """Why the file was not (wholly) scanned, or None."""
        return None if self.problem is None else self.problem.message


class Problem(Frozen):
    """Why a path was not scanned: an error (counted, exit 2) or a warning (``warning``)."""

    __slots__ = ("message", "warning", "error")  # noqa: RUF023 (__init__'s order)
    message: str
    warning: bool  # printed as "hv-emu: warning: PATH: ..."
    error: bool  # counts in "Total errors" and makes the exit status 2

    def __init__(self, message: str, warning: bool = False, error: bool = True) -> None:
        setfield(self, "message", message)
        setfield(self, "warning", warning)
        setfield(self, "error", error)


#: clamscan's words for a FIFO, socket or device named on the command line (``WARNING:``, exit 2).
UNSUPPORTED = Problem("Not supported file type", warning=True)


class Item(Frozen):
    """One path the walk met: a file to scan, or a path it could not use and why."""

    __slots__ = ("path", "problem")
    path: Path
    problem: Problem | None

    def __init__(self, path: Path, problem: Problem | None = None) -> None:
        setfield(self, "path", path)
        setfield(self, "problem", problem)


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
