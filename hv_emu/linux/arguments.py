"""System-call arguments as the kernel sees them: each register narrowed to its C parameter type.

Models: the step between the registers and a system call's body in Linux's entry code. On x86-64
the stub passes the six 64-bit registers to ``__se_sys_NAME(long, ...)``, which converts each to
the type the call declares (``__SC_CAST``): an ``int`` parameter is the low 32 bits of its
register, sign-extended; an ``unsigned int`` the low 32 bits; a ``long``, pointer or ``size_t``
the whole register. So glibc's ``mov $0xffffff9c, %edi`` (a zero-extended 32-bit move) is
``AT_FDCWD`` (-100), and ``-1`` passed as ``0xffffffff`` is -1. On i386 every register is 32 bits
wide and ``int`` and ``long`` parameters are sign-extended from bit 31.

``ARGUMENTS`` is the table: for every call the personality implements, the class of each argument
it reads, in order. ``decode`` applies one class; ``decode_arguments`` a whole call.

Follows: Linux ``arch/x86/include/asm/syscall_wrapper.h`` and ``include/linux/syscalls.h``
(``__SC_LONG``, ``__SC_CAST``, ``__SC_COMPAT_CAST``) and each call's ``SYSCALL_DEFINEx``
prototype (``fs/open.c``, ``fs/read_write.c``, ``fs/stat.c``, ``mm/mmap.c``,
``arch/x86/kernel/tls.c``...). docs/ELF.md "Argument widths" restates the rule.

Leaves out: ``umode_t`` (16 bits; ``open``'s mode is read as ``unsigned int``, and hv-emu ignores
it), 64-bit values split over two i386 registers (no implemented call takes one), x32.

Guest controls: every register value; decoding cannot fail (any 64-bit value narrows to some
value of the class), and the handlers check the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum


class Arg(Enum):
    """The C type classes a system-call parameter can have, by how the kernel narrows it."""

    #: ``int``, ``pid_t``: the low 32 bits, sign-extended (fds, ``AT_*`` flags, signal numbers).
    INT = "int"
    #: ``unsigned int``, ``u32``, ``umode_t``: the low 32 bits, zero-extended.
    UINT = "unsigned int"
    #: ``long``, ``off_t``: the whole register (32 bits on i386), sign-extended.
    LONG = "long"
    #: ``unsigned long``, ``size_t``: the whole register, zero-extended.
    ULONG = "unsigned long"
    #: A pointer into the guest (``const char __user *`` ...): the whole register, as an address.
    PTR = "pointer"


_I, _U, _L, _UL, _P = Arg.INT, Arg.UINT, Arg.LONG, Arg.ULONG, Arg.PTR

#: Each implemented call's parameters, from its ``SYSCALL_DEFINEx`` prototype (the x86-64 one; the
#: i386 entry points declare the same types, or ones that narrow the same way in 32 bits).
ARGUMENTS: dict[str, tuple[Arg, ...]] = {
    # fs/read_write.c: unsigned int fd, char __user *buf, size_t count
    "read": (_U, _P, _UL), "write": (_U, _P, _UL),
    # readv/writev declare unsigned long fd, but fdget() takes an unsigned int
    "readv": (_U, _P, _UL), "writev": (_U, _P, _UL),
    "lseek": (_U, _L, _U),                      # unsigned int fd, off_t offset, unsigned whence
    # unsigned int fd, buf, size_t count, loff_t pos (i386: u32 count, u32 pos_lo, u32 pos_hi)
    "pread64": (_U, _P, _UL, _L, _UL),
    # fs/readdir.c: unsigned int fd, struct linux_dirent64 __user *dirent, unsigned int count
    "getdents64": (_U, _P, _U),
    # mm/fadvise.c: int fd, loff_t offset, size_t len, int advice
    "fadvise64": (_I, _L, _UL, _I),
    # fs/fcntl.c: unsigned int fd, unsigned int cmd, unsigned long arg; fs/file.c: dup*
    "fcntl": (_U, _U, _UL), "fcntl64": (_U, _U, _UL),
    "dup": (_U,), "dup2": (_U, _U), "dup3": (_U, _U, _I),
    "getcwd": (_P, _UL),                        # fs/d_path.c: char __user *buf, unsigned long size
    # fs/xattr.c: path (or int fd), name or list, value, size_t size[, int flags]
    "getxattr": (_P, _P, _P, _UL), "lgetxattr": (_P, _P, _P, _UL), "fgetxattr": (_I, _P, _P, _UL),
    # kernel/futex/syscalls.c: u32 __user *uaddr, int op, u32 val, utime, uaddr2, u32 val3
    "futex": (_P, _I, _U, _P, _P, _U), "futex_time64": (_P, _I, _U, _P, _P, _U),
    # kernel/time/: clockid_t which_clock (int), struct timespec __user *tp
    "clock_gettime": (_I, _P), "clock_gettime64": (_I, _P), "clock_getres": (_I, _P),
    "clock_getres_time64": (_I, _P), "gettimeofday": (_P, _P), "time": (_P,),
    "listxattr": (_P, _P, _UL), "llistxattr": (_P, _P, _UL), "flistxattr": (_I, _P, _UL),
    # fs/open.c
    "open": (_P, _I, _U),                       # filename, int flags, umode_t mode
    "openat": (_I, _P, _I, _U),                 # int dfd, filename, int flags, umode_t mode
    "close": (_U,),
    "access": (_P, _I), "faccessat": (_I, _P, _I),  # [int dfd,] filename, int mode
    # fs/stat.c
    "stat": (_P, _P),
    "fstat": (_U, _P), "fstat64": (_UL, _P),    # fstat64: unsigned long fd, narrowed below
    "newfstatat": (_I, _P, _P, _I),             # int dfd, filename, statbuf, int flag
    "fstatat64": (_I, _P, _P, _I),
    "readlink": (_P, _P, _I),                   # path, buf, int bufsiz
    "readlinkat": (_I, _P, _P, _I),
    # fs/ioctl.c: unsigned int fd, unsigned int cmd, unsigned long arg
    "ioctl": (_U, _U, _UL),
    # mm/: mmap's prot, flags, fd are unsigned long; the fd is then used as an unsigned int
    "mmap": (_P, _UL, _UL, _UL, _UL, _UL), "mmap2": (_P, _UL, _UL, _UL, _UL, _UL),
    "munmap": (_P, _UL), "mprotect": (_P, _UL, _UL), "brk": (_P,),
    # kernel/exit.c: int error_code
    "exit": (_I,), "exit_group": (_I,),
    "uname": (_P,),
    # arch/x86/kernel/process_64.c: int option, unsigned long arg2
    "arch_prctl": (_I, _UL),
    # arch/x86/kernel/tls.c: struct user_desc __user *u_info
    "set_thread_area": (_P,), "get_thread_area": (_P,),
    "set_tid_address": (_P,), "set_robust_list": (_P, _UL),
    "getpid": (), "gettid": (), "getuid": (), "geteuid": (), "getgid": (), "getegid": (),
    "getuid32": (), "geteuid32": (), "getgid32": (), "getegid32": (),
    # kernel/sys.c: pid_t pid, unsigned int resource, new_rlim, old_rlim
    "prlimit64": (_I, _U, _P, _P),
    # drivers/char/random.c: char __user *buf, size_t count, unsigned int flags
    "getrandom": (_P, _UL, _U),
    # kernel/signal.c: int sig / int how, pointers, size_t sigsetsize; pid_t pid, int sig
    "rt_sigaction": (_I, _P, _P, _UL), "rt_sigprocmask": (_I, _P, _P, _UL),
    "sigaltstack": (_P, _P), "rt_sigreturn": (), "sigreturn": (), "rt_sigpending": (_P, _UL),
    "kill": (_I, _I), "tkill": (_I, _I), "tgkill": (_I, _I, _I),
    # kernel/signal.c: sigset_t __user *, size_t; set, info, timespec, size_t; pid_t, int, info
    "rt_sigsuspend": (_P, _UL), "rt_sigtimedwait": (_P, _P, _P, _UL),
    "rt_sigtimedwait_time64": (_P, _P, _P, _UL), "rt_sigqueueinfo": (_I, _I, _P),
}  # fmt: skip


def decode(kind: Arg, value: int, bits: int) -> int:
    """``value`` (a register, any width) as the kernel sees a parameter of ``kind`` in an ABI of
    ``bits`` (32: ``int 0x80``, 64: ``syscall``)."""
    width = 32 if kind is Arg.INT or kind is Arg.UINT else bits
    value &= (1 << width) - 1
    if kind is Arg.INT or kind is Arg.LONG:
        top = 1 << (width - 1)
        if value & top:
            value -= top << 1
    return value


def decode_arguments(name: str, registers: Sequence[int], bits: int) -> tuple[int, ...]:
    """The arguments of call ``name`` from the six argument registers, each narrowed to its class
    (``ARGUMENTS``); a call not in the table gets no arguments."""
    kinds = ARGUMENTS.get(name, ())
    return tuple(decode(kind, value, bits) for kind, value in zip(kinds, registers, strict=False))
