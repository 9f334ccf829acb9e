"""Files in a directory whose entries someone else may have planted.

Models: the file operations hv-emu does inside its own directories (the state directory of
``--state``, the compiled-database cache), done so that nothing planted there is followed or
reused: every open is relative to a directory descriptor; a read never goes through a symbolic
link, never blocks on a FIFO, and takes only a regular file of a bounded size (optionally one the
user owns and no one else can read); a file is created only as a new inode of our own
(``O_EXCL | O_NOFOLLOW``) under a name nobody can predict, then renamed into place.

Follows: openat(2), open(2) (``O_NOFOLLOW``, ``O_EXCL``, ``O_NONBLOCK``), renameat(2); the
callers' docs say what they promise: docs/UPDATE-FORMAT.md ("The state directory") and
docs/SIGNATURES.md (the cache).

Leaves out: policy. What a refused entry means (a one-line error for the state directory, a cache
miss for the cache) and durability (fsync, the callers decide where) stay with the callers.

Who controls what: anyone who can write the directory controls its entries: their kinds, sizes,
owners, links and names; nothing here trusts any of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from hv_emu.errors import HostError

#: Flags of every read: never through a link, never blocking on a FIFO, never inherited.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Flags of every file we create: a new inode of our own or nothing (EEXIST), never via a link.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class RefusedEntry(HostError):
    """An entry that is there but is not one to read: not a regular file, too large, or not the
    user's own; the message is the reason ("not a regular file")."""


def read_regular(dir_fd: int, name: str, limit: int | None = None, *, owned: bool = False,
                 private: bool = False) -> bytes:
    """The bytes of the regular file ``name`` in ``dir_fd``, read through no link.

    Raises ``FileNotFoundError`` for no entry, ``OSError`` with ``errno.ELOOP`` for a symbolic
    link (or the open's or read's own error), and ``RefusedEntry`` for anything else that is not a
    regular file of at most ``limit`` bytes (with ``owned``, this user's; with ``private``, this
    user's and unreadable by others).
    """
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RefusedEntry("not a regular file")
        if limit is not None and info.st_size > limit:
            raise RefusedEntry(f"larger than {limit} bytes")
        if (owned or private) and info.st_uid != os.geteuid():
            raise RefusedEntry("not this user's")
        if private and info.st_mode & 0o077:
            raise RefusedEntry("readable by others")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            if limit is not None and sum(map(len, chunks)) > limit:  # it grew while we read
                raise RefusedEntry(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]


def temporary_name(name: str, suffix: str = ".tmp") -> str:
    """A fresh name beside ``name`` that nobody can guess ahead: ``name.<16 hex>.tmp``."""
    import secrets  # only a writer pays for it (random, base64): a cache hit reads, never writes

    return f"{name}.{secrets.token_hex(8)}{suffix}"


def create_exclusive(dir_fd: int, name: str, data: bytes, mode: int, *,
                     durable: bool = False) -> None:
    """Create ``name`` in ``dir_fd`` as a new file of ours holding ``data`` (``FileExistsError``
    if anything is there, a link included), fsynced first if ``durable``; on a failed write the
    half-written file is removed before the error is raised."""
    fd = os.open(name, CREATE_FLAGS, mode, dir_fd=dir_fd)
    try:
        write_all(fd, data)
        if durable:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
