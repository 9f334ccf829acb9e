"""Linux system calls for one static x86 program: the personality's system-call handler.

Models: the kernel's system-call entry for a single-threaded process: decode the call number and
arguments from the registers of the ABI (``syscall`` in 64-bit programs, ``int 0x80`` in 32-bit
ones: both reach hv-emu as VM exits), each argument narrowed to its C type as the kernel's entry
code does (``arguments.py``: so AT_FDCWD arrives as -100 however glibc loads it), run the call
against the process's files, memory, TLS slots (``tls.py``) and signals (``signals.py``,
which also takes the CPU's exceptions as signals), and put the result (or ``-errno``) in RAX.
``exit``/``exit_group`` end the run with the program's exit status. A call this personality
does not implement returns ``-ENOSYS`` (as a kernel without that feature would) and is reported
once, as a ``syscall_unsupported`` event.

Follows: the Linux man-pages (section 2) for each call's semantics and errors, the register
conventions of ``numbers.py``, and glibc's and musl's static start-up paths (``arch_prctl``,
``set_tid_address``, ``brk``, ``mmap``, ``uname``...), measured with ``strace`` on
``gcc -static`` programs.

Leaves out: threads (``clone``), ``fork``/``exec``, sockets, ``RCX``/``R11`` clobbering by
``syscall``; ``mmap``, ``munmap``, ``mprotect`` and the other calls a dynamically linked program
needs are ``dynamic.py``'s (with what it leaves out), signals ``signals.py``'s.

Guest controls: the call number and every argument. Pointers are read and written through the
guest's page tables (a bad one is ``-EFAULT``), lengths are capped before anything is copied,
and no guest value can raise out of this module: every handler's refusal is an errno.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping

from hv_emu.errors import GuestMemoryError, PageFault
from hv_emu.events import EventLog
from hv_emu.exits import GuestException, Handled, Outcome, SoftwareInterrupt, Stopped, Syscall
from hv_emu.layout import LINUX_STACK_SIZE
from hv_emu.linux.arguments import decode_arguments
from hv_emu.linux.clock import ClockCalls
from hv_emu.linux.dynamic import DynamicCalls
from hv_emu.linux.files import MAX_IO, PATH_MAX, FileTable, SyscallError
from hv_emu.linux.numbers import (
    ARCH_GET_FS,
    ARCH_GET_GS,
    ARCH_SET_FS,
    ARCH_SET_GS,
    AT_EMPTY_PATH,
    AT_FDCWD,
    MAX_ERRNO,
    SYSCALL_REGISTERS,
    TABLES,
    Errno,
)
from hv_emu.linux.signal_numbers import SIGPIPE
from hv_emu.linux.signals import Signals
from hv_emu.linux.sigwait import SignalWaits
from hv_emu.linux.startup import GID, PLATFORM, UID
from hv_emu.linux.tls import USER_DESC, TlsSlots, UserDesc, selector
from hv_emu.loaders.elf_process import ProcessImage
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_cstring, read_virt, write_virt

#: The process and thread id the program sees (it is the only process).
PID = 1
#: Most entries in a ``readv``/``writev`` vector (``IOV_MAX``).
IOV_MAX = 1024
#: ``uname``'s answers: six NUL-padded 65-byte fields (``struct new_utsname``).
UTSNAME = ("Linux", "hv-emu", "6.1.0-hv-emu", "#1 hv-emu", "", "(none)")
_UTS_FIELD = 65
#: ``prlimit64``'s RLIMIT_STACK (3); every other resource reads as unlimited.
RLIMIT_STACK = 3
RLIM_INFINITY = (1 << 64) - 1
#: The calls that write to a stream: ``-EPIPE`` from one comes with ``SIGPIPE``.
_PIPE_WRITES = frozenset({"write", "writev"})

#: What a handler returns: a value for RAX (negative: an errno) or an outcome of its own.
Result = int | Outcome
#: Reads the vCPU's visible data-segment selectors (``ds``, ``es``, ``fs``, ``gs``).
Selectors = Callable[[], Mapping[str, int]]


class _Call:
    """One system call in progress: its arguments and the guest memory they point into."""

    def __init__(self, mem: GuestMemory, paging: PagingState, bits: int, args: tuple[int, ...],
                 registers: Mapping[str, int], rip: int) -> None:  # fmt: skip
        self.mem, self.paging, self.bits, self.args = mem, paging, bits, args
        self.word = bits // 8
        #: The caller's registers and the RIP after its call instruction (for signals).
        self.registers, self.rip = registers, rip

    def read(self, va: int, n: int) -> bytes:
        return read_virt(self.mem, self.paging, va, n)

    def write(self, va: int, data: bytes) -> None:
        write_virt(self.mem, self.paging, va, data)

    def path(self, va: int) -> str:
        raw = read_cstring(self.mem, self.paging, va, PATH_MAX)
        if raw is None:
            raise SyscallError(Errno.ENAMETOOLONG, f"no NUL within {PATH_MAX} bytes")
        return raw.decode("utf-8", "surrogateescape")

    def iovec(self, va: int, count: int) -> list[tuple[int, int]]:
        """A ``struct iovec`` array: (base, length) pairs of words."""
        if not 0 <= count <= IOV_MAX:
            raise SyscallError(Errno.EINVAL, f"iovcnt {count}")
        raw = self.read(va, 2 * self.word * count)
        words = [int.from_bytes(raw[i : i + self.word], "little")
                 for i in range(0, len(raw), self.word)]  # fmt: skip
        return list(zip(words[::2], words[1::2], strict=True))


class LinuxProcess:
    """The one process of a Linux guest: its files, break, mmap arena and exit status."""

    def __init__(self, mem: GuestMemory, process: ProcessImage, files: FileTable,
                 events: EventLog, selectors: Selectors | None = None,
                 exe: str = "") -> None:  # fmt: skip
        self.mem = mem
        #: The vCPU's loaded DS/ES/FS/GS selectors (set_thread_area refreshes a changed one).
        self.selectors = selectors
        self.tls = TlsSlots(mem, process.boot.gdt_base)
        self.image = process
        self.bits = process.bits
        self.files = files
        self.events = events
        self.brk = process.heap.start
        self.segment_bases = {"fs_base": 0, "gs_base": 0}
        #: The status given to exit/exit_group, once the program has exited (128 + the signal
        #: number when a signal killed it, as a shell shows it).
        self.exit_status: int | None = None
        #: The signal that killed the program, if one did.
        self.killed_by: int | None = None
        self.signals = Signals(mem, self.bits, PID, UID, self._killed)
        #: Call numbers answered -ENOSYS (and reported once), with their names if known.
        self.unsupported: dict[int, str | None] = {}
        self.calls = 0
        self._table = TABLES[self.bits]
        self._handlers: Mapping[str, Callable[[_Call], Result]] = {
            "read": self._read, "write": self._write, "readv": self._readv,
            "writev": self._writev, "open": self._open, "openat": self._openat,
            "close": self._close, "lseek": self._lseek, "fstat": self._fstat,
            "fstat64": self._fstat, "stat": self._stat, "newfstatat": self._newfstatat,
            "brk": self._brk, "exit": self._exit,
            "exit_group": self._exit, "uname": self._uname, "arch_prctl": self._arch_prctl,
            "set_tid_address": lambda c: PID, "set_robust_list": lambda c: 0,
            "getpid": lambda c: PID, "gettid": lambda c: PID, "ioctl": self._ioctl,
            "getuid": lambda c: UID, "geteuid": lambda c: UID, "getgid": lambda c: GID,
            "getegid": lambda c: GID, "getuid32": lambda c: UID, "geteuid32": lambda c: UID,
            "getgid32": lambda c: GID, "getegid32": lambda c: GID,
            "prlimit64": self._prlimit64, "getrandom": self._getrandom,
            "access": self._access, "faccessat": self._faccessat, "readlink": self._readlink,
            "readlinkat": self._readlinkat, "fstatat64": self._newfstatat,
            "set_thread_area": self._set_thread_area, "get_thread_area": self._get_thread_area,
            **self.signals.handlers(), **SignalWaits(self.signals).handlers(),
        }  # fmt: skip
        # mmap, munmap, mprotect, pread64, getdents64, readlink of /proc/self/exe (dynamic.py).
        self.dynamic = DynamicCalls(mem, (process.mmap.start, process.mmap.end), files, exe,
                                    fallback=self._handlers)  # fmt: skip
        self._handlers = {**self._handlers, **self.dynamic.handlers(), **ClockCalls().handlers()}

    @property
    def implemented(self) -> frozenset[str]:
        """The names of the calls this personality implements (any other gets -ENOSYS)."""
        return frozenset(self._handlers)

    # ------------------------------------------------------------------ the exits
    def on_syscall(self, exit_: Syscall) -> Outcome:
        """``syscall`` (x86-64 ABI)."""
        return self.handle(exit_.registers, exit_.paging, exit_.rip)

    def on_int80(self, exit_: SoftwareInterrupt) -> Outcome:
        """``int 0x80`` (i386 ABI)."""
        return self.handle(exit_.registers, exit_.paging, exit_.rip)

    def on_exception(self, exit_: GuestException) -> Outcome:
        """A CPU exception in the program: the signal Linux would send (``signals.py``)."""
        return self.signals.on_exception(exit_)

    def _killed(self, sig: int) -> None:
        self.killed_by = sig
        self.exit_status = 128 + sig

    def handle(self, registers: Mapping[str, int], paging: PagingState,
               rip: int = 0) -> Outcome:  # fmt: skip
        """Decode, run and answer one system call."""
        self.calls += 1
        number_register, arg_registers = SYSCALL_REGISTERS[self.bits]
        mask = (1 << self.bits) - 1
        # The number is an int (the entry code compares EAX/RAX as unsigned, so no negatives).
        nr = registers[number_register] & mask
        name = self._table.get(nr)
        handler = self._handlers.get(name) if name is not None else None
        if name is None or handler is None:
            result: Result = self._unsupported(nr, name)
        else:
            # Each argument narrowed to its C type, as the kernel's entry code does.
            args = decode_arguments(name, [registers[r] for r in arg_registers], self.bits)
            call = _Call(self.mem, paging, self.bits, args, registers, rip)
            try:
                result = handler(call)
            except SyscallError as refused:
                result = -refused.errno
                if refused.errno == Errno.EPIPE and name in _PIPE_WRITES:
                    # pipe_write: the reader has gone, SIGPIPE to the writer (pipe(7)).
                    result = self.signals.raise_on_return(call, SIGPIPE, result)
            except (PageFault, GuestMemoryError):
                result = -Errno.EFAULT
        if isinstance(result, int):
            return Handled(registers={"rax": result & mask})
        return result

    def _unsupported(self, nr: int, name: str | None) -> int:
        if nr not in self.unsupported:
            self.unsupported[nr] = name
            self.events.emit("syscall_unsupported", nr=nr, name=name, abi=self.bits)
        return -Errno.ENOSYS

    # ------------------------------------------------------------------ files
    def _read(self, c: _Call) -> int:
        data = self.files.read(c.args[0], c.args[2])
        c.write(c.args[1], data)
        return len(data)

    def _write(self, c: _Call) -> int:
        return self.files.write(c.args[0], c.read(c.args[1], min(c.args[2], MAX_IO)))

    def _readv(self, c: _Call) -> int:
        total = 0
        for base, length in c.iovec(c.args[1], c.args[2]):
            data = self.files.read(c.args[0], min(length, MAX_IO - total))
            c.write(base, data)
            total += len(data)
            if len(data) < length or total >= MAX_IO:
                break  # a short read ends the vector, as in the kernel
        return total

    def _writev(self, c: _Call) -> int:
        total = 0
        for base, length in c.iovec(c.args[1], c.args[2]):
            if total >= MAX_IO:
                break
            total += self.files.write(c.args[0], c.read(base, min(length, MAX_IO - total)))
        return total

    def _open(self, c: _Call) -> int:
        return self.files.open(c.path(c.args[0]), c.args[1])

    def _openat(self, c: _Call) -> int:
        return self.files.open(self._at_path(c, c.args[0], c.path(c.args[1])), c.args[2])

    def _at_path(self, c: _Call, dirfd: int, path: str) -> str:
        """``*at`` calls: absolute paths, paths relative to AT_FDCWD, and paths relative to an
        open directory (``ENOTDIR`` for another descriptor)."""
        if path.startswith("/") or dirfd == AT_FDCWD:
            return path
        if self.files.is_open(dirfd):
            return posixpath.join(self.files.directory_path(dirfd), path)
        raise SyscallError(Errno.EBADF, f"descriptor {dirfd} is not open")

    def _close(self, c: _Call) -> int:
        self.files.close(c.args[0])
        return 0

    def _lseek(self, c: _Call) -> int:
        position = self.files.seek(c.args[0], c.args[1], c.args[2])
        if position > (1 << (self.bits - 1)) - 1 - MAX_ERRNO:
            raise SyscallError(Errno.EINVAL, "position does not fit the return value")
        return position

    def _fstat(self, c: _Call) -> int:
        c.write(c.args[1], self.files.fstat(c.args[0], self.bits))
        return 0

    def _stat(self, c: _Call) -> int:
        c.write(c.args[1], self.files.stat(c.path(c.args[0]), self.bits))
        return 0

    def _newfstatat(self, c: _Call) -> int:
        path = c.path(c.args[1])
        if not path and c.args[3] & AT_EMPTY_PATH:
            stat = self.files.fstat(c.args[0], self.bits)
        else:
            stat = self.files.stat(self._at_path(c, c.args[0], path), self.bits)
        c.write(c.args[2], stat)
        return 0

    def _access(self, c: _Call) -> int:
        self.files.access(c.path(c.args[0]), c.args[1])
        return 0

    def _faccessat(self, c: _Call) -> int:
        self.files.access(self._at_path(c, c.args[0], c.path(c.args[1])), c.args[2])
        return 0

    def _readlink(self, c: _Call) -> int:
        return self._link(c, c.path(c.args[0]), c.args[1], c.args[2])

    def _readlinkat(self, c: _Call) -> int:
        return self._link(c, self._at_path(c, c.args[0], c.path(c.args[1])), c.args[2], c.args[3])

    def _link(self, c: _Call, path: str, buf: int, size: int) -> int:
        """``readlink``: a symbolic link's target (in the sysroot or a granted directory: granted
        files are none), cut to the buffer, no NUL added."""
        if size <= 0:
            raise SyscallError(Errno.EINVAL, f"buffer size {size}")
        target = self.files.readlink(path).encode("utf-8", "surrogateescape")[:size]
        c.write(buf, target)
        return len(target)

    def _ioctl(self, c: _Call) -> int:
        if not self.files.is_open(c.args[0]):
            raise SyscallError(Errno.EBADF, "descriptor not open")
        raise SyscallError(Errno.ENOTTY, "no descriptor is a terminal")

    # ------------------------------------------------------------------ memory
    def _brk(self, c: _Call) -> int:
        """Move the program break inside the heap; any other request leaves it (Linux returns
        the current break on failure). Memory given back is zeroed, so it grows back zeroed."""
        wanted, heap = c.args[0], self.image.heap
        if heap.start <= wanted <= heap.end:
            if wanted < self.brk:
                c.write(wanted, bytes(self.brk - wanted))
            self.brk = wanted
        return self.brk

    # ------------------------------------------------------------------ process
    def _exit(self, c: _Call) -> Outcome:
        self.exit_status = c.args[0] & 0xFF
        return Stopped(f"exit({self.exit_status})")

    def _uname(self, c: _Call) -> int:
        fields = list(UTSNAME)
        fields[4] = PLATFORM[self.bits]
        c.write(c.args[0], b"".join(f.encode().ljust(_UTS_FIELD, b"\0") for f in fields))
        return 0

    def _arch_prctl(self, c: _Call) -> Result:
        """x86-64 thread-local storage: the C library points FS at its thread control block."""
        code, address = c.args[0], c.args[1]
        setters = {ARCH_SET_FS: "fs_base", ARCH_SET_GS: "gs_base"}
        getters = {ARCH_GET_FS: "fs_base", ARCH_GET_GS: "gs_base"}
        if code in setters:
            self.segment_bases[setters[code]] = address
            return Handled(registers={"rax": 0, setters[code]: address})
        if code in getters:
            c.write(address, self.segment_bases[getters[code]].to_bytes(8, "little"))
            return 0
        raise SyscallError(Errno.EINVAL, f"arch_prctl code {code:#x}")

    def _set_thread_area(self, c: _Call) -> Result:
        """i386 thread-local storage: a GDT slot for the C library's thread control block."""
        info = UserDesc.from_bytes(c.read(c.args[0], USER_DESC.size))
        entry = self.tls.choose(info)
        if info.entry_number == 0xFFFFFFFF:
            c.write(c.args[0], entry.to_bytes(4, "little"))  # the chosen slot, written back
        base = self.tls.install(entry, info)
        # Linux reloads a segment register that holds the changed selector; here FS's or GS's
        # base follows (a selector write would not reload the hidden part: docs/UNICORN.md U38).
        loaded = self.selectors() if self.selectors is not None else {}
        registers = {"rax": 0}
        for seg in ("fs", "gs"):
            if loaded.get(seg) == selector(entry):
                registers[f"{seg}_base"] = base
        return Handled(registers=registers)

    def _get_thread_area(self, c: _Call) -> int:
        entry = int.from_bytes(c.read(c.args[0], 4), "little")
        c.write(c.args[0], self.tls.get(entry).to_bytes())
        return 0

    def _prlimit64(self, c: _Call) -> int:
        if c.args[0] not in (0, PID):
            raise SyscallError(Errno.EPERM, "only this process")
        if c.args[2]:
            raise SyscallError(Errno.EPERM, "limits cannot be changed")
        if c.args[3]:
            limit = LINUX_STACK_SIZE if c.args[1] == RLIMIT_STACK else RLIM_INFINITY
            c.write(c.args[3], limit.to_bytes(8, "little") + RLIM_INFINITY.to_bytes(8, "little"))
        return 0

    def _getrandom(self, c: _Call) -> int:
        data = os.urandom(min(c.args[1], MAX_IO))
        c.write(c.args[0], data)
        return len(data)
