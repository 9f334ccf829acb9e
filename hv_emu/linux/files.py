"""Files of a Linux guest program: a descriptor table confined to the files the user grants.

Models: the kernel's per-process file-descriptor table and open file descriptions (a position, an
access mode), over three kinds of file: the standard streams (descriptors 0, 1, 2, wired to hv-emu's
own standard input, output and error), host files the user named with ``--file
GUESTPATH=HOSTPATH[:rw]`` (``grants.py``: opened without ever blocking, ``..`` at a granted
directory's root leading to the grant's parent as the program sees it), and directories
(``directories.py``): a granted host directory shows what is under it, read-only, and ``--sysroot
DIR`` shows the tree under ``DIR`` read-only as the guest's root (``/dev/null`` is there whatever is
granted: ``streams.NullDevice``) (``sysroot.py`` walks those paths without ever leaving the tree). A
path that was not granted and is not in the sysroot does not exist for the guest (``ENOENT``),
whatever is on the host: the guest sees exactly the files the user chose, read-only unless ``:rw``
was given.

Follows: POSIX ``open``/``read``/``pread``/``write``/``lseek``/``close``/``fstat`` semantics as
Linux implements them (lowest free descriptor, short reads at end of file, ``O_APPEND``,
``O_TRUNC``, ``O_CREAT``/``O_EXCL`` on writable grants, ``EROFS`` to write in the sysroot) and
the ``struct stat`` layouts of ``arch/x86/include/uapi/asm/stat.h`` (x86-64 ``stat``, i386
``stat64``).

Leaves out: pipes, sockets and FIFOs (a granted FIFO or socket is ``EACCES``: opening it never
waits for its other end), ``dup``, file locks, ``O_CLOEXEC`` (there is no ``exec``),
permissions beyond the grant, writing inside a granted directory.

Guest controls: paths, flags, descriptors, counts and offsets: all are checked here and every
refusal is a ``SyscallError`` carrying the ``errno`` the guest gets back. The user controls the
grants and the sysroot (a bad ``--file`` is a ``ConfigError``).
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hv_emu.linux.directories import Directory
from hv_emu.linux.grants import FileGrant, above_grants, open_granted, through_grants
from hv_emu.linux.numbers import (
    O_ACCMODE,
    O_APPEND,
    O_CREAT,
    O_DIRECTORY,
    O_EXCL,
    O_RDONLY,
    O_RDWR,
    O_TRUNC,
    O_WRONLY,
    R_OK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFREG,
    SEEK_CUR,
    SEEK_END,
    SEEK_SET,
    W_OK,
    X_OK,
    Errno,
)
from hv_emu.linux.refusals import SyscallError, host_call
from hv_emu.linux.stat import pack_stat
from hv_emu.linux.streams import NullDevice, Stream
from hv_emu.linux.sysroot import HostTree

__all__ = ["FileGrant", "FileTable", "SyscallError", "host_call"]

#: Most descriptors open at once (a small ``RLIMIT_NOFILE``).
MAX_FDS = 64
#: Most bytes one read or write moves; Linux caps at 0x7ffff000, and short transfers are legal.
MAX_IO = 1 << 20
#: Longest path accepted (``PATH_MAX``, including the NUL).
PATH_MAX = 4096
#: The largest file position (``off_t`` is signed 64-bit; Linux refuses a seek past the file
#: system's limit with ``EINVAL``), so the host's ``pread``/``pwrite`` never see a larger one.
MAX_FILE_OFFSET = (1 << 63) - 1



@dataclass
class _HostFile:
    """An open file description of a granted host file: host descriptor, position, mode."""

    fd: int
    readable: bool
    writable: bool
    append: bool
    position: int = 0
    mode: int = 0  # the permission bits fstat shows (0: from the grant's access mode)

    def read(self, n: int) -> bytes:
        data = self.pread(n, self.position)
        self.position += len(data)
        return data

    def pread(self, n: int, offset: int) -> bytes:
        if not self.readable:
            raise SyscallError(Errno.EBADF, "not open for reading")
        if not 0 <= offset <= MAX_FILE_OFFSET:
            raise SyscallError(Errno.EINVAL, f"position {offset}")
        return host_call(lambda: os.pread(self.fd, n, offset))

    def write(self, data: bytes) -> int:
        if not self.writable:
            raise SyscallError(Errno.EBADF, "not open for writing")
        if self.append:
            self.position = host_call(lambda: os.fstat(self.fd)).st_size
        written = host_call(lambda: os.pwrite(self.fd, data, self.position))
        self.position += written
        return written

    def seek(self, offset: int, whence: int) -> int:
        bases = {SEEK_SET: 0, SEEK_CUR: self.position}
        if whence == SEEK_END:
            base = host_call(lambda: os.fstat(self.fd)).st_size
        elif whence in bases:
            base = bases[whence]
        else:
            raise SyscallError(Errno.EINVAL, f"whence {whence}")
        if not 0 <= base + offset <= MAX_FILE_OFFSET:
            raise SyscallError(Errno.EINVAL, f"position {base + offset} is not 0..2**63-1")
        self.position = base + offset
        return self.position

    def stat(self) -> os.stat_result | None:
        return host_call(lambda: os.fstat(self.fd))

    def close(self) -> None:
        os.close(self.fd)


_File = Stream | _HostFile | Directory | NullDevice
#: The one device every program sees (``streams.NullDevice``), unless a grant names the path.
DEV_NULL = "/dev/null"

@dataclass
class FileTable:
    """The descriptor table of the one process: 0-2 are the streams, the rest granted files."""

    grants: list[FileGrant] = field(default_factory=list)
    stdin: BinaryIO | None = None
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None
    #: ``--sysroot``: the host directory the guest sees, read-only, as its root (None: nothing).
    sysroot: Path | None = None

    def __post_init__(self) -> None:
        self._by_path = {g.guest_path: g for g in self.grants}
        self._root = HostTree(self.sysroot) if self.sysroot is not None else None
        self._open: dict[int, _File] = {
            0: Stream(self.stdin, readable=True),
            1: Stream(self.stdout, readable=False),
            2: Stream(self.stderr, readable=False),
        }

    def wait_with(self, wait: Callable[[int], None]) -> None:
        """Standard input's blocking reads wait through ``wait`` (the machine's ``RunStop``)."""
        stdin = self._open.get(0)
        if isinstance(stdin, Stream):
            stdin.wait = wait

    # ------------------------------------------------------------------ descriptors
    def open(self, path: str, flags: int) -> int:
        """``open(path, flags)``: the lowest free descriptor for a granted path, or for one in a
        granted directory or the sysroot (read-only)."""
        access = flags & O_ACCMODE
        if access == O_ACCMODE:
            raise SyscallError(Errno.EINVAL, f"access mode {access}")
        path = through_grants(self.grants, path)
        wants_write = access != O_RDONLY or flags & (O_CREAT | O_TRUNC)
        grant = self._file_grant(path)
        if grant is None and posixpath.normpath(path) == DEV_NULL:
            fd = self._free_fd()
            self._open[fd] = NullDevice()
            return fd
        if grant is None:
            tree, inner, read_only = self._tree(path)
            if wants_write:
                raise SyscallError(read_only, f"{path} is read-only for the program")
            fd = self._free_fd()
            found = tree.open(inner, directory=bool(flags & O_DIRECTORY))
            self._open[fd] = (Directory(found.fd, posixpath.normpath(path)) if found.is_dir
                              else _HostFile(found.fd, True, False, False, mode=found.mode))
            return fd
        if flags & O_DIRECTORY:
            raise SyscallError(Errno.ENOTDIR, f"{path} is not a directory")
        if wants_write and not grant.writable:
            raise SyscallError(Errno.EACCES, f"{path} is granted read-only")
        fd = self._free_fd()
        host_flags = {O_RDONLY: os.O_RDONLY, O_WRONLY: os.O_WRONLY}.get(access, os.O_RDWR)
        for guest_bit, host_bit in ((O_CREAT, os.O_CREAT), (O_EXCL, os.O_EXCL),
                                    (O_TRUNC, os.O_TRUNC)):  # fmt: skip
            if flags & guest_bit:
                host_flags |= host_bit
        host_fd = open_granted(grant, host_flags)
        self._open[fd] = _HostFile(host_fd, readable=access != O_WRONLY,
                                   writable=access != O_RDONLY, append=bool(flags & O_APPEND))
        return fd

    def close(self, fd: int) -> None:
        file = self._file(fd)
        del self._open[fd]
        if not any(other is file for other in self._open.values()):
            file.close()  # the last descriptor of this open file description

    def dup(self, fd: int, lowest: int = 0, exact: int | None = None) -> int:
        """``dup``/``fcntl(F_DUPFD)`` (the lowest free descriptor from ``lowest``) or ``dup2``
        (``exact``, closed first if open): a new descriptor for the same open file."""
        file = self._file(fd)
        if exact is None:
            new = self._free_fd(lowest)
        else:
            if not 0 <= exact < MAX_FDS:
                raise SyscallError(Errno.EBADF, f"descriptor {exact} is beyond {MAX_FDS}")
            if exact in self._open and exact != fd:
                self.close(exact)
            new = exact
        self._open[new] = file
        return new

    def status_flags(self, fd: int) -> int:
        """``fcntl(F_GETFL)``: the access mode and ``O_APPEND``."""
        file = self._file(fd)
        if isinstance(file, Stream):
            return O_RDONLY if file.readable else O_WRONLY
        if isinstance(file, NullDevice):
            return O_RDWR
        if isinstance(file, Directory):
            return O_RDONLY | O_DIRECTORY
        access = O_RDWR if file.readable and file.writable else \
            (O_WRONLY if file.writable else O_RDONLY)
        return access | (O_APPEND if file.append else 0)

    def close_all(self) -> None:
        """The process ended: release every host descriptor."""
        for fd in list(self._open):
            self.close(fd)

    def read(self, fd: int, n: int) -> bytes:
        return self._file(fd).read(min(n, MAX_IO))

    def pread(self, fd: int, n: int, offset: int) -> bytes:
        """``pread64``: ``n`` bytes (at most ``MAX_IO``) at ``offset``, the position unmoved."""
        return self._file(fd).pread(min(n, MAX_IO), offset)

    def mappable(self, fd: int) -> _HostFile:
        """The open file ``mmap`` copies from: a readable regular file (``EACCES`` if opened
        write-only, ``ENODEV`` for streams and directories, as Linux answers)."""
        file = self._file(fd)
        if not isinstance(file, _HostFile):
            raise SyscallError(Errno.ENODEV, f"descriptor {fd} cannot be mapped")
        if not file.readable:
            raise SyscallError(Errno.EACCES, f"descriptor {fd} is not open for reading")
        return file

    def getdents(self, fd: int, size: int) -> bytes:
        """``getdents64``: the next directory records that fit in ``size`` bytes."""
        file = self._file(fd)
        if not isinstance(file, Directory):
            raise SyscallError(Errno.ENOTDIR, f"descriptor {fd} is not a directory")
        return file.getdents(size)

    def directory_path(self, fd: int) -> str:
        """The guest path of open directory ``fd`` (what ``openat(fd, name)`` starts from)."""
        file = self._file(fd)
        if not isinstance(file, Directory):
            raise SyscallError(Errno.ENOTDIR, f"descriptor {fd} is not a directory")
        return file.guest_path

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
        path = through_grants(self.grants, path)
        if self._above(path):
            if mode & W_OK:
                raise SyscallError(Errno.EROFS, f"{path} is read-only for the program")
            return
        grant = self._file_grant(path)
        if grant is None and posixpath.normpath(path) == DEV_NULL:
            if mode & X_OK:
                raise SyscallError(Errno.EACCES, f"{path} is not executable")
            return
        if grant is None:
            tree, inner, read_only = self._tree(path)
            host, _kind = tree.host_path(inner)
            if mode & W_OK:
                raise SyscallError(read_only, f"{path} is read-only for the program")
            if mode & X_OK and not host_call(lambda: os.stat(host)).st_mode & 0o111:
                raise SyscallError(Errno.EACCES, f"{path} is not executable")
            return
        host_call(lambda: os.stat(grant.host_path))
        if mode & W_OK and not grant.writable:
            raise SyscallError(Errno.EACCES, f"{path} is granted read-only")
        if mode & X_OK:
            raise SyscallError(Errno.EACCES, f"{path} is not executable")

    def readlink(self, path: str) -> str:
        """``readlink(path)``: the target of a symbolic link in the sysroot or a granted
        directory; a granted file is no link (``EINVAL``), another path does not exist."""
        path = through_grants(self.grants, path)
        if self._above(path):
            raise SyscallError(Errno.EINVAL, f"{path} is not a symbolic link")
        grant = self._file_grant(path)
        if grant is None:
            tree, inner, _ = self._tree(path)
            return tree.readlink(inner)
        host_call(lambda: os.stat(grant.host_path))
        raise SyscallError(Errno.EINVAL, f"{path} is not a symbolic link")

    # ------------------------------------------------------------------ stat
    def fstat(self, fd: int, bits: int) -> bytes:
        """The ``struct stat`` (64) or ``struct stat64`` (32) of descriptor ``fd``."""
        file = self._file(fd)
        host = file.stat()
        if isinstance(file, NullDevice):
            return pack_stat(bits, mode=S_IFCHR | 0o666, size=0, ino=0, mtime=0)
        if host is None:  # a standard stream: a pipe to hv-emu
            return pack_stat(bits, mode=S_IFIFO | 0o600, size=0, ino=fd + 1, mtime=0)
        if isinstance(file, Directory):
            mode = S_IFDIR | 0o555
        elif isinstance(file, _HostFile) and file.mode:
            mode = S_IFREG | (file.mode & 0o555)
        else:
            mode = S_IFREG | (0o644 if isinstance(file, _HostFile) and file.writable else 0o444)
        return pack_stat(bits, mode=mode, size=host.st_size, ino=host.st_ino,
                         mtime=int(host.st_mtime), blocks=host.st_blocks)  # fmt: skip

    def stat(self, path: str, bits: int) -> bytes:
        """``stat(path)`` of a granted path (as if opened and ``fstat``-ed); without a sysroot,
        the directories above the grants (``/``, ``dd/..``) are a synthetic, empty, read-only
        directory (inode 0, time 0)."""
        if self._above(through_grants(self.grants, path)):
            return pack_stat(bits, mode=S_IFDIR | 0o555, size=0, ino=0, mtime=0)
        fd = self.open(path, O_RDONLY)
        try:
            return self.fstat(fd, bits)
        finally:
            self.close(fd)

    # ------------------------------------------------------------------ internals
    def _above(self, path: str) -> bool:
        """Without a sysroot, ``path`` is a synthetic directory above the grants."""
        return self._root is None and above_grants(self.grants, path)

    def _file_grant(self, path: str) -> FileGrant | None:
        """The grant of ``path`` itself when it names a file (not a host directory)."""
        if not path:
            raise SyscallError(Errno.ENOENT, "empty path")
        grant = self._by_path.get(posixpath.normpath(path))
        return grant if grant is not None and not grant.host_path.is_dir() else None

    def _tree(self, path: str) -> tuple[HostTree, str, Errno]:
        """The read-only tree ``path`` lies in, the path inside it, and the errno a write
        earns: the longest granted directory holding it (``EACCES``), else the sysroot
        (``EROFS``); ``ENOENT`` when neither does."""
        norm = posixpath.normpath(path)
        holders = [g for g in self.grants if norm == g.guest_path or
                   norm.startswith(g.guest_path.rstrip("/") + "/")]  # fmt: skip
        for grant in sorted(holders, key=lambda g: -len(g.guest_path)):
            if grant.host_path.is_dir():
                inner = norm[len(grant.guest_path) :]
                return HostTree(grant.host_path), inner, Errno.EACCES
        if self._root is not None:
            return self._root, path, Errno.EROFS
        raise SyscallError(Errno.ENOENT, f"{path} was not granted with --file")

    def _file(self, fd: int) -> _File:
        file = self._open.get(fd)
        if file is None:
            raise SyscallError(Errno.EBADF, f"descriptor {fd} is not open")
        return file

    def _free_fd(self, lowest: int = 0) -> int:
        for fd in range(max(lowest, 0), MAX_FDS):
            if fd not in self._open:
                return fd
        raise SyscallError(Errno.EMFILE, f"all {MAX_FDS} descriptors are open")

