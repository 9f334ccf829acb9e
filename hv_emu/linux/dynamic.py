"""The system calls a dynamically linked program needs beyond a static one's.

Models: what Linux gives ``ld.so`` and a C library's start-up besides ``read``/``write``: ``mmap``
(``mmap2`` on i386, offset in pages) of anonymous memory and of files (``MAP_PRIVATE``: the file's
bytes are copied into the arena at mapping time, the rest of the last page and any pages past the
end of the file are zero), ``MAP_FIXED`` over pages the program mapped before (how ``ld.so`` lays a
library's segments over its first reservation), ``munmap``, ``mprotect``, ``pread64``,
``getdents64`` on an open directory, ``readlink("/proc/self/exe")`` (the program's path),
``fadvise64`` (advice, taken as such), ``getcwd`` (``/``), ``futex`` of one thread (wake: 0; wait:
at once), ``dup``/``dup2``/``dup3`` and ``fcntl`` (``F_DUPFD``, ``F_GETFL``;
``F_GETFD``/``F_SETFD``/``F_SETFL`` succeed and change nothing). The books of the arena are
``mmap.py``'s; the files and directories ``files.py``'s.

Follows: mmap(2), munmap(2), mprotect(2), pread(2), getdents64(2), readlink(2), proc(5)
(``/proc/self/exe``), posix_fadvise(2); ``strace`` of glibc 2.36's ``ld.so`` and coreutils
(docs/ELF.md lists the calls).

Leaves out: zeroing arena pages never handed out before (the loader zeroed them; a program that
writes where it mapped nothing finds its bytes in a later mapping, where Linux would have sent it
``SIGSEGV``), ``MAP_SHARED`` writable file mappings (``ENODEV``: writes would not reach the file),
page protections (``mprotect`` checks its arguments and succeeds; every page stays readable,
writable and executable, as the loader mapped it), ``MAP_GROWSDOWN``, ``mremap``, other
``/proc`` files.

Guest controls: every argument. Lengths are rounded and checked against the arena before any
byte is copied, a file mapping copies at most the mapping's size, and every refusal is an errno.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from hv_emu.layout import PAGE_SIZE
from hv_emu.linux.files import MAX_FDS, MAX_IO, FileTable
from hv_emu.linux.mmap import MemoryMap
from hv_emu.linux.numbers import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_TYPE,
    O_CLOEXEC,
    PROT_WRITE,
    Errno,
)
from hv_emu.linux.refusals import SyscallError
from hv_emu.loaders.elf_file import page_up
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, translate

# futex() operations (``include/uapi/linux/futex.h``).
FUTEX_WAIT, FUTEX_WAKE, FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET = 0, 1, 9, 10
FUTEX_PRIVATE_FLAG, FUTEX_CLOCK_REALTIME = 128, 256
# fcntl() commands (``asm-generic/fcntl.h``, ``linux/fcntl.h``).
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
#: The one ``/proc`` file a program may read: the link to its own executable.
PROC_SELF_EXE = "/proc/self/exe"
#: The protection bits ``mprotect`` and ``mmap`` accept (``PROT_READ|WRITE|EXEC``, and
#: ``PROT_GROWSDOWN``/``GROWSUP`` for ``mprotect``).
_PROT_BITS = 0x7 | 0x0100_0000 | 0x0200_0000


class Call(Protocol):
    """What a handler gets from ``syscalls.py``: the decoded arguments and guest memory."""

    args: tuple[int, ...]
    bits: int
    mem: GuestMemory
    paging: PagingState

    def read(self, va: int, n: int) -> bytes: ...
    def write(self, va: int, data: bytes) -> None: ...
    def path(self, va: int) -> str: ...


Handler = Callable[[Call], int]


class DynamicCalls:
    """The handlers of this module for one process, and the arena's books."""

    def __init__(self, mem: GuestMemory, arena: tuple[int, int], files: FileTable,
                 exe: str, fallback: Mapping[str, Callable[[Any], object]]) -> None:  # fmt: skip
        self.mem = mem
        self.map = MemoryMap(*arena)
        #: Arena pages from here up were never handed out: still zero, as the loader left them.
        self.fresh_from = arena[0]
        self.files = files
        #: What ``readlink("/proc/self/exe")`` reads: the program's path as the guest sees it.
        self.exe = exe
        self._fallback = fallback

    def handlers(self) -> dict[str, Handler]:
        return {
            "mmap": self._mmap, "mmap2": self._mmap2, "munmap": self._munmap,
            "mprotect": self._mprotect, "pread64": self._pread64,
            "getdents64": self._getdents64, "readlink": self._readlink,
            "readlinkat": self._readlinkat, "fadvise64": self._fadvise64,
            "fcntl": self._fcntl, "fcntl64": self._fcntl, "dup": self._dup, "dup2": self._dup2,
            "dup3": self._dup3, "getcwd": self._getcwd,
            "getxattr": self._path_xattr, "lgetxattr": self._path_xattr,
            "listxattr": self._path_xattr, "llistxattr": self._path_xattr,
            "fgetxattr": self._fd_xattr, "flistxattr": self._fd_xattr,
            "futex": self._futex, "futex_time64": self._futex,
        }  # fmt: skip

    # ------------------------------------------------------------------ memory
    def _mmap(self, c: Call) -> int:
        return self.map_pages(c, *c.args[:5], offset=c.args[5])

    def _mmap2(self, c: Call) -> int:
        return self.map_pages(c, *c.args[:5], offset=c.args[5] * PAGE_SIZE)

    def map_pages(self, c: Call, addr: int, length: int, prot: int, flags: int, fd: int, *,
                  offset: int) -> int:  # fmt: skip
        """``mmap``: anonymous zeroed pages or a private copy of a file, where the arena has
        room or, with ``MAP_FIXED``, at ``addr``."""
        if length == 0 or offset % PAGE_SIZE or prot & ~0x7:
            raise SyscallError(Errno.EINVAL, f"length {length}, offset {offset}, prot {prot:#x}")
        kind = flags & MAP_TYPE
        if kind not in (MAP_SHARED, MAP_SHARED_VALIDATE, 2):  # 2: MAP_PRIVATE
            raise SyscallError(Errno.EINVAL, f"flags {flags:#x} are neither shared nor private")
        size = page_up(length)
        if size > self.map.end - self.map.start:
            raise SyscallError(Errno.ENOMEM, f"{length:#x} bytes exceed the mmap arena")
        source = None
        if not flags & MAP_ANONYMOUS:
            source = self.files.mappable(fd & 0xFFFFFFFF)
            if kind != 2 and prot & PROT_WRITE:
                raise SyscallError(Errno.ENODEV, "writable shared file mappings are not modelled")
        if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
            if addr % PAGE_SIZE:
                raise SyscallError(Errno.EINVAL, f"MAP_FIXED at unaligned {addr:#x}")
            if not self.map.inside(addr, size):
                raise SyscallError(Errno.ENOMEM, f"{addr:#x} is outside the mmap arena")
            if flags & MAP_FIXED_NOREPLACE and self.map.overlaps(addr, size):
                raise SyscallError(Errno.EEXIST, f"{addr:#x} is mapped already")
            start = addr
        else:
            start = self.map.find(size)
        self.map.take(start, size)
        copied = 0
        while source is not None and copied < size:
            data = source.pread(min(size - copied, MAX_IO), offset + copied)
            if not data:
                break
            c.write(start + copied, data)
            copied += len(data)
        self._zero(c.paging, start + copied, min(start + size, self.fresh_from))
        self.fresh_from = max(self.fresh_from, start + size)
        return start

    def _munmap(self, c: Call) -> int:
        addr, length = c.args[0], c.args[1]
        if addr % PAGE_SIZE or length == 0 or addr + length > 1 << c.bits:
            raise SyscallError(Errno.EINVAL, f"munmap {addr:#x}+{length:#x}")
        self.map.release(addr, page_up(length))
        return 0

    def _mprotect(self, c: Call) -> int:
        addr, length, prot = c.args[0], c.args[1], c.args[2]
        if addr % PAGE_SIZE or prot & ~_PROT_BITS or addr + length > 1 << c.bits:
            raise SyscallError(Errno.EINVAL, f"mprotect {addr:#x}+{length:#x} {prot:#x}")
        return 0

    def _zero(self, paging: PagingState, start: int, end: int) -> None:
        """Zero ``[start, end)`` of the arena (mapped writable: no fault is possible here)."""
        while start < end:
            size = min(PAGE_SIZE - start % PAGE_SIZE, end - start)
            self.mem.zero(translate(self.mem, paging, start), size)
            start += size

    # ------------------------------------------------------------------ files
    def _pread64(self, c: Call) -> int:
        fd, buf, count, position = c.args[:4]
        if c.bits == 32:  # i386: the position in two registers, low half first
            position = (position & 0xFFFFFFFF) | (c.args[4] << 32)
        if position < 0:
            raise SyscallError(Errno.EINVAL, f"position {position}")
        data = self.files.pread(fd, count, position)
        c.write(buf, data)
        return len(data)

    def _getdents64(self, c: Call) -> int:
        data = self.files.getdents(c.args[0], min(c.args[2], MAX_IO))
        c.write(c.args[1], data)
        return len(data)

    def _fadvise64(self, c: Call) -> int:
        if not self.files.is_open(c.args[0]):
            raise SyscallError(Errno.EBADF, f"descriptor {c.args[0]} is not open")
        return 0

    def _fcntl(self, c: Call) -> int:
        fd, cmd, arg = c.args[:3]
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            if arg >= MAX_FDS:
                raise SyscallError(Errno.EINVAL, f"F_DUPFD from {arg}")
            return self.files.dup(fd, lowest=arg)
        if cmd == F_GETFL:
            return self.files.status_flags(fd)
        if cmd in (F_GETFD, F_SETFD, F_SETFL):
            self.files.status_flags(fd)  # EBADF if not open
            return 0  # no exec to close on; O_APPEND/O_NONBLOCK changes are not modelled
        raise SyscallError(Errno.EINVAL, f"fcntl command {cmd}")

    def _dup(self, c: Call) -> int:
        return self.files.dup(c.args[0])

    def _dup2(self, c: Call) -> int:
        return self.files.dup(c.args[0], exact=c.args[1])

    def _dup3(self, c: Call) -> int:
        if c.args[0] == c.args[1] or c.args[2] & ~O_CLOEXEC:
            raise SyscallError(Errno.EINVAL, f"dup3({c.args[0]}, {c.args[1]}, {c.args[2]:#o})")
        return self.files.dup(c.args[0], exact=c.args[1])

    def _getcwd(self, c: Call) -> int:
        """The working directory is the root of the program's view (the sysroot's, where paths
        that are not granted are looked up from)."""
        if c.args[1] < 2:
            raise SyscallError(Errno.ERANGE, f"a {c.args[1]}-byte buffer")
        c.write(c.args[0], b"/\0")
        return 2

    def _path_xattr(self, c: Call) -> int:
        """Extended attributes: none are modelled (``EOPNOTSUPP``, as on a file system without
        them; ``ls -l`` then shows no ACL mark), once the path is known to exist."""
        self.files.access(c.path(c.args[0]), 0)
        raise SyscallError(Errno.EOPNOTSUPP, "no extended attributes")

    def _fd_xattr(self, c: Call) -> int:
        self.files.status_flags(c.args[0])  # EBADF if not open
        raise SyscallError(Errno.EOPNOTSUPP, "no extended attributes")

    def _futex(self, c: Call) -> int:
        """Futexes of the one thread: a wake finds no waiter (0); a wait returns at once,
        ``EAGAIN`` if the word changed, else ``ETIMEDOUT`` (no other thread could ever wake it:
        Linux would sleep until the timeout, or for ever)."""
        address, op, value = c.args[:3]
        command = op & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
        if command in (FUTEX_WAKE, FUTEX_WAKE_BITSET):
            c.read(address, 4)  # EFAULT for a bad word, as Linux checks it
            return 0
        if command in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
            if address % 4:
                raise SyscallError(Errno.EINVAL, f"futex word at unaligned {address:#x}")
            if int.from_bytes(c.read(address, 4), "little") != value:
                raise SyscallError(Errno.EAGAIN, "the futex word changed")
            raise SyscallError(Errno.ETIMEDOUT, "no other thread can wake this wait")
        raise SyscallError(Errno.ENOSYS, f"futex operation {command}")

    def _readlink(self, c: Call) -> int:
        if c.path(c.args[0]) == PROC_SELF_EXE:
            return self._exe_link(c, c.args[1], c.args[2])
        return self._answer(self._fallback["readlink"](c))

    def _readlinkat(self, c: Call) -> int:
        if c.path(c.args[1]) == PROC_SELF_EXE:
            return self._exe_link(c, c.args[2], c.args[3])
        return self._answer(self._fallback["readlinkat"](c))

    @staticmethod
    def _answer(result: object) -> int:
        """A fallback handler's answer: the ``readlink`` handlers of ``syscalls.py`` return a
        number (or refuse)."""
        if not isinstance(result, int):
            raise TypeError(f"readlink answered {result!r}")
        return result

    def _exe_link(self, c: Call, buf: int, size: int) -> int:
        """``readlink`` of ``/proc/self/exe``: the path, cut to the buffer, no NUL added."""
        if size <= 0:
            raise SyscallError(Errno.EINVAL, f"buffer size {size}")
        target = self.exe.encode("utf-8", "surrogateescape")[:size]
        c.write(buf, target)
        return len(target)
