"""Files of a Linux guest program: a descriptor table confined to the files the user grants.

Models: the kernel's per-process file-descriptor table and open file descriptions (a position, an
access mode), over two kinds of file: the standard streams (descriptors 0, 1, 2, wired to
hv-emu's own standard input, output and error) and host files the user named with
``--file GUESTPATH=HOSTPATH[:rw]``. A guest path that was not granted does not exist for the guest
(``ENOENT``), whatever is on the host: the guest sees exactly the files the user chose, read-only
unless ``:rw`` was given.

Follows: POSIX ``open``/``read``/``write``/``lseek``/``close``/``fstat`` semantics as Linux
implements them (lowest free descriptor, short reads at end of file, ``O_APPEND``, ``O_TRUNC``,
``O_CREAT``/``O_EXCL`` on writable grants) and the ``struct stat`` layouts of
``arch/x86/include/uapi/asm/stat.h`` (x86-64 ``stat``, i386 ``stat64``).

Leaves out: directories, pipes, sockets, ``dup``, ``fcntl``, file locks, ``mmap`` of files,
``O_CLOEXEC`` (there is no ``exec``), permissions beyond the grant, symbolic links inside the
guest's view.

Guest controls: paths, flags, descriptors, counts and offsets: all are checked here and every
refusal is a ``SyscallError`` carrying the ``errno`` the guest gets back. The user controls the
grants (a bad ``--file`` is a ``ConfigError``).
"""

from __future__ import annotations

import os
import posixpath
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from hv_emu.errors import ConfigError, GuestFault
from hv_emu.linux.numbers import (
    O_ACCMODE,
    O_APPEND,
    O_CREAT,
    O_EXCL,
    O_RDONLY,
    O_TRUNC,
    O_WRONLY,
    R_OK,
    S_IFIFO,
    S_IFREG,
    SEEK_CUR,
    SEEK_END,
    SEEK_SET,
    W_OK,
    X_OK,
    Errno,
)

#: Most descriptors open at once (a small ``RLIMIT_NOFILE``).
MAX_FDS = 64
#: Most bytes one read or write moves; Linux caps at 0x7ffff000, and short transfers are legal.
MAX_IO = 1 << 20
#: Longest path accepted (``PATH_MAX``, including the NUL).
PATH_MAX = 4096
#: The largest file position (``off_t`` is signed 64-bit; Linux refuses a seek past the file
#: system's limit with ``EINVAL``), so the host's ``pread``/``pwrite`` never see a larger one.
MAX_FILE_OFFSET = (1 << 63) - 1

# struct stat (x86-64, 144 bytes) and struct stat64 (i386, 96 bytes), field by field.
_STAT_64 = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
_STAT64_32 = struct.Struct("<Q4xIIIIIQ4xqIQIIIIIIQ")


class SyscallError(GuestFault):
    """A system call the kernel refuses: the guest gets ``-errno`` in RAX."""

    def __init__(self, errno: Errno, reason: str) -> None:
        self.errno = errno
        self.reason = reason
        super().__init__(f"{errno.name}: {reason}")


@dataclass(frozen=True)
class FileGrant:
    """``--file GUESTPATH=HOSTPATH[:rw]``: the guest may open ``guest_path``, which is the host's
    ``host_path``; for writing only if ``writable``."""

    guest_path: str
    host_path: Path
    writable: bool = False

    @classmethod
    def parse(cls, spec: str) -> FileGrant:
        guest, sep, host = spec.partition("=")
        if not sep or not guest or not host:
            raise ConfigError(f"--file {spec!r}: expected GUESTPATH=HOSTPATH[:rw]")
        writable = host.endswith(":rw")
        if writable or host.endswith(":ro"):
            host = host[:-3]
        if not host:
            raise ConfigError(f"--file {spec!r}: the host path is empty")
        return cls(posixpath.normpath(guest), Path(host), writable)


@dataclass
class _Stream:
    """A standard stream: hv-emu's stdin/stdout/stderr (``None``: reads give end of file, writes
    vanish, like ``/dev/null``)."""

    stream: BinaryIO | None
    readable: bool

    def read(self, n: int) -> bytes:
        if not self.readable:
            raise SyscallError(Errno.EBADF, "not open for reading")
        if self.stream is None:
            return b""
        # read1: what is available now (a line typed at a terminal), as read(2) on a pipe does,
        # rather than waiting for all n bytes.
        read1 = getattr(self.stream, "read1", None)
        data = read1(n) if read1 is not None else self.stream.read(n)
        return bytes(data or b"")

    def write(self, data: bytes) -> int:
        if self.readable:
            raise SyscallError(Errno.EBADF, "not open for writing")
        if self.stream is not None:
            try:
                self.stream.write(data)
                self.stream.flush()
            except BrokenPipeError:
                # The host reader went away (hv-emu run prog | head): the program gets EPIPE, as
                # it would on Linux (without the SIGPIPE, which the personality does not model).
                raise SyscallError(Errno.EPIPE, "the reader of this stream has gone") from None
        return len(data)

    def seek(self, offset: int, whence: int) -> int:
        raise SyscallError(Errno.ESPIPE, "a stream has no position")

    def stat(self) -> os.stat_result | None:
        return None

    def close(self) -> None:
        """The streams belong to hv-emu: closing the descriptor leaves them open."""


@dataclass
class _HostFile:
    """An open file description of a granted host file: host descriptor, position, mode."""

    fd: int
    readable: bool
    writable: bool
    append: bool
    position: int = 0

    def read(self, n: int) -> bytes:
        if not self.readable:
            raise SyscallError(Errno.EBADF, "not open for reading")
        data = _host(lambda: os.pread(self.fd, n, self.position))
        self.position += len(data)
        return data

    def write(self, data: bytes) -> int:
        if not self.writable:
            raise SyscallError(Errno.EBADF, "not open for writing")
        if self.append:
            self.position = _host(lambda: os.fstat(self.fd)).st_size
        written = _host(lambda: os.pwrite(self.fd, data, self.position))
        self.position += written
        return written

    def seek(self, offset: int, whence: int) -> int:
        bases = {SEEK_SET: 0, SEEK_CUR: self.position}
        if whence == SEEK_END:
            base = _host(lambda: os.fstat(self.fd)).st_size
        elif whence in bases:
            base = bases[whence]
        else:
            raise SyscallError(Errno.EINVAL, f"whence {whence}")
        if not 0 <= base + offset <= MAX_FILE_OFFSET:
            raise SyscallError(Errno.EINVAL, f"position {base + offset} is not 0..2**63-1")
        self.position = base + offset
        return self.position

    def stat(self) -> os.stat_result | None:
        return _host(lambda: os.fstat(self.fd))

    def close(self) -> None:
        os.close(self.fd)


_File = _Stream | _HostFile
_T = TypeVar("_T")


def _host(operation: Callable[[], _T]) -> _T:
    """Run a host file operation; a host ``OSError`` becomes the same ``errno`` for the guest
    (host and guest are both Linux, so the numbers agree; unknown ones become ``EIO``)."""
    try:
        return operation()
    except OSError as err:
        known = {int(e) for e in Errno}
        code = Errno(err.errno) if err.errno is not None and err.errno in known else Errno.EIO
        raise SyscallError(code, err.strerror or "host error") from None


@dataclass
class FileTable:
    """The descriptor table of the one process: 0-2 are the streams, the rest granted files."""

    grants: list[FileGrant] = field(default_factory=list)
    stdin: BinaryIO | None = None
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None

    def __post_init__(self) -> None:
        self._by_path = {g.guest_path: g for g in self.grants}
        self._open: dict[int, _File] = {
            0: _Stream(self.stdin, readable=True),
            1: _Stream(self.stdout, readable=False),
            2: _Stream(self.stderr, readable=False),
        }

    # ------------------------------------------------------------------ descriptors
    def open(self, path: str, flags: int) -> int:
        """``open(path, flags)``: the lowest free descriptor for a granted path."""
        grant = self._grant(path)
        access = flags & O_ACCMODE
        if access == O_ACCMODE:
            raise SyscallError(Errno.EINVAL, f"access mode {access}")
        wants_write = access != O_RDONLY or flags & (O_CREAT | O_TRUNC)
        if wants_write and not grant.writable:
            raise SyscallError(Errno.EACCES, f"{path} is granted read-only")
        fd = self._free_fd()
        host_flags = {O_RDONLY: os.O_RDONLY, O_WRONLY: os.O_WRONLY}.get(access, os.O_RDWR)
        for guest_bit, host_bit in ((O_CREAT, os.O_CREAT), (O_EXCL, os.O_EXCL),
                                    (O_TRUNC, os.O_TRUNC)):  # fmt: skip
            if flags & guest_bit:
                host_flags |= host_bit
        host_fd = _host(lambda: os.open(grant.host_path, host_flags | os.O_CLOEXEC, 0o644))
        self._open[fd] = _HostFile(host_fd, readable=access != O_WRONLY,
                                   writable=access != O_RDONLY, append=bool(flags & O_APPEND))
        return fd

    def close(self, fd: int) -> None:
        self._file(fd).close()
        del self._open[fd]

    def close_all(self) -> None:
        """The process ended: release every host descriptor."""
        for fd in list(self._open):
            self.close(fd)

    def read(self, fd: int, n: int) -> bytes:
        return self._file(fd).read(min(n, MAX_IO))

    def write(self, fd: int, data: bytes) -> int:
        return self._file(fd).write(data[:MAX_IO])

    def seek(self, fd: int, offset: int, whence: int) -> int:
        return self._file(fd).seek(offset, whence)

    def is_open(self, fd: int) -> bool:
        return fd in self._open

    def access(self, path: str, mode: int) -> None:
        """``access(path, mode)``: a granted path that exists on the host; ``W_OK`` only on a
        writable grant; ``X_OK`` never (no granted file is executable for the guest)."""
        if mode & ~(R_OK | W_OK | X_OK):
            raise SyscallError(Errno.EINVAL, f"mode {mode:#o}")
        grant = self._grant(path)
        _host(lambda: os.stat(grant.host_path))
        if mode & W_OK and not grant.writable:
            raise SyscallError(Errno.EACCES, f"{path} is granted read-only")
        if mode & X_OK:
            raise SyscallError(Errno.EACCES, f"{path} is not executable")

    # ------------------------------------------------------------------ stat
    def fstat(self, fd: int, bits: int) -> bytes:
        """The ``struct stat`` (64) or ``struct stat64`` (32) of descriptor ``fd``."""
        file = self._file(fd)
        host = file.stat()
        if host is None:  # a standard stream: a pipe to hv-emu
            return _pack_stat(bits, mode=S_IFIFO | 0o600, size=0, ino=fd + 1, mtime=0)
        writable = isinstance(file, _HostFile) and file.writable
        return _pack_stat(bits, mode=S_IFREG | (0o644 if writable else 0o444),
                          size=host.st_size, ino=host.st_ino, mtime=int(host.st_mtime))

    def stat(self, path: str, bits: int) -> bytes:
        """``stat(path)`` of a granted path (as if opened and ``fstat``-ed)."""
        fd = self.open(path, O_RDONLY)
        try:
            return self.fstat(fd, bits)
        finally:
            self.close(fd)

    # ------------------------------------------------------------------ internals
    def _grant(self, path: str) -> FileGrant:
        if not path:
            raise SyscallError(Errno.ENOENT, "empty path")
        grant = self._by_path.get(posixpath.normpath(path))
        if grant is None:
            raise SyscallError(Errno.ENOENT, f"{path} was not granted with --file")
        return grant

    def _file(self, fd: int) -> _File:
        file = self._open.get(fd)
        if file is None:
            raise SyscallError(Errno.EBADF, f"descriptor {fd} is not open")
        return file

    def _free_fd(self) -> int:
        for fd in range(MAX_FDS):
            if fd not in self._open:
                return fd
        raise SyscallError(Errno.EMFILE, f"all {MAX_FDS} descriptors are open")


def _pack_stat(bits: int, *, mode: int, size: int, ino: int, mtime: int) -> bytes:
    nlink, uid, gid, blksize, blocks = 1, 0, 0, 4096, (size + 511) // 512
    if bits == 64:
        return _STAT_64.pack(1, ino, nlink, mode, uid, gid, 0, 0, size, blksize, blocks,
                             mtime, 0, mtime, 0, mtime, 0)  # fmt: skip
    return _STAT64_32.pack(1, ino & 0xFFFFFFFF, mode, nlink, uid, gid, 0, size, blksize, blocks,
                           mtime, 0, mtime, 0, mtime, 0, ino)  # fmt: skip
