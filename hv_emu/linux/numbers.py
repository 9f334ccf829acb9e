"""The Linux system-call ABI of x86 as data: call numbers, error numbers, flags, auxv types.

Models: the numbers a Linux program and kernel agree on. Each ABI has its own system-call table:
x86-64 programs use ``syscall`` with the number in RAX and arguments in RDI, RSI, RDX, R10, R8, R9;
i386 programs use ``int 0x80`` with the number in EAX and arguments in EBX, ECX, EDX, ESI, EDI,
EBP. Both return a value in RAX/EAX, or ``-errno`` (-4095..-1) on failure.

Follows: Linux ``arch/x86/entry/syscalls/syscall_64.tbl`` and ``syscall_32.tbl``,
``include/uapi/asm-generic/errno-base.h``, ``fcntl.h``, ``mman-common.h``, ``auxvec.h`` and
``arch/x86/include/uapi/asm/prctl.h``.

Leaves out: every call not named here (the personality answers ``-ENOSYS`` to all of them); the
x32 ABI; ``int 0x80`` from 64-bit programs (i386 numbers in a 64-bit process).

Guest controls: nothing here; these tables are how the personality reads what the guest asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

#: The registers carrying the number and the six arguments, by ABI (64 = syscall, 32 = int 0x80).
SYSCALL_REGISTERS = {
    64: ("rax", ("rdi", "rsi", "rdx", "r10", "r8", "r9")),
    32: ("rax", ("rbx", "rcx", "rdx", "rsi", "rdi", "rbp")),
}

#: System-call number -> name, x86-64 (``syscall_64.tbl``): the calls the personality implements
#: or answers on purpose. Any other number is unknown and gets -ENOSYS.
X86_64: dict[int, str] = {
    0: "read", 1: "write", 2: "open", 3: "close", 4: "stat", 5: "fstat", 8: "lseek",
    9: "mmap", 10: "mprotect", 11: "munmap", 12: "brk", 16: "ioctl", 17: "pread64",
    19: "readv", 20: "writev", 32: "dup", 33: "dup2", 72: "fcntl", 217: "getdents64",
    221: "fadvise64", 292: "dup3", 79: "getcwd", 191: "getxattr", 192: "lgetxattr",
    193: "fgetxattr", 194: "listxattr", 195: "llistxattr", 196: "flistxattr", 202: "futex",
    228: "clock_gettime", 229: "clock_getres", 96: "gettimeofday", 201: "time",
    21: "access", 39: "getpid", 60: "exit", 63: "uname", 89: "readlink", 102: "getuid",
    104: "getgid", 107: "geteuid", 108: "getegid", 158: "arch_prctl", 186: "gettid",
    218: "set_tid_address", 231: "exit_group", 257: "openat", 262: "newfstatat",
    267: "readlinkat", 269: "faccessat", 273: "set_robust_list", 302: "prlimit64",
    318: "getrandom", 334: "rseq",
    13: "rt_sigaction", 14: "rt_sigprocmask", 15: "rt_sigreturn", 62: "kill", 131: "sigaltstack",
    200: "tkill", 234: "tgkill", 127: "rt_sigpending", 128: "rt_sigtimedwait",
    129: "rt_sigqueueinfo", 130: "rt_sigsuspend",
}  # fmt: skip

#: System-call number -> name, i386 (``syscall_32.tbl``).
I386: dict[int, str] = {
    1: "exit", 3: "read", 4: "write", 5: "open", 6: "close", 19: "lseek", 20: "getpid",
    33: "access", 45: "brk", 54: "ioctl", 85: "readlink", 91: "munmap", 122: "uname",
    125: "mprotect", 145: "readv", 146: "writev", 180: "pread64", 192: "mmap2", 197: "fstat64",
    220: "getdents64", 183: "getcwd", 41: "dup", 63: "dup2", 55: "fcntl", 221: "fcntl64",
    330: "dup3", 229: "getxattr", 230: "lgetxattr", 231: "fgetxattr", 232: "listxattr",
    234: "flistxattr", 240: "futex", 422: "futex_time64", 265: "clock_gettime",
    266: "clock_getres", 403: "clock_gettime64", 406: "clock_getres_time64", 78: "gettimeofday",
    13: "time",
    199: "getuid32", 200: "getgid32", 201: "geteuid32", 202: "getegid32", 224: "gettid",
    243: "set_thread_area", 244: "get_thread_area", 252: "exit_group", 258: "set_tid_address",
    295: "openat", 300: "fstatat64", 305: "readlinkat", 307: "faccessat", 311: "set_robust_list",
    340: "prlimit64", 355: "getrandom", 386: "rseq",
    37: "kill", 119: "sigreturn", 173: "rt_sigreturn", 174: "rt_sigaction", 175: "rt_sigprocmask",
    186: "sigaltstack", 238: "tkill", 270: "tgkill", 176: "rt_sigpending", 177: "rt_sigtimedwait",
    178: "rt_sigqueueinfo", 179: "rt_sigsuspend", 421: "rt_sigtimedwait_time64",
}  # fmt: skip

TABLES = {64: X86_64, 32: I386}


def call_name(bits: int, registers: Mapping[str, int]) -> str:
    """The name of the system call the registers ask for (``syscall NR`` for an unknown one), as
    ``--trace`` prints it."""
    nr = registers[SYSCALL_REGISTERS[bits][0]] & ((1 << bits) - 1)
    return TABLES[bits].get(nr, f"syscall {nr}")


class Errno(IntEnum):
    """Error numbers (``errno-base.h``, ``errno.h``); a failed call returns ``-value``."""

    EPERM = 1
    ENOENT = 2
    ESRCH = 3
    EINTR = 4
    EIO = 5
    ENXIO = 6
    EBADF = 9
    ENOMEM = 12
    EACCES = 13
    EFAULT = 14
    EEXIST = 17
    EXDEV = 18
    ENODEV = 19
    ENOTDIR = 20
    EISDIR = 21
    EINVAL = 22
    ENFILE = 23
    EMFILE = 24
    ENOTTY = 25
    ETXTBSY = 26
    EFBIG = 27
    ENOSPC = 28
    ESPIPE = 29
    EROFS = 30
    EMLINK = 31
    EPIPE = 32
    ERANGE = 34
    ENAMETOOLONG = 36
    EAGAIN = 11
    ENOSYS = 38
    ENOTEMPTY = 39
    ELOOP = 40
    EOVERFLOW = 75
    EOPNOTSUPP = 95
    ETIMEDOUT = 110
    EDQUOT = 122


# open() flags (``asm-generic/fcntl.h``, the same on i386 and x86-64).
O_ACCMODE = 0o3
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_DIRECTORY = 0o200000
O_CLOEXEC = 0o2000000
#: ``openat``'s "relative to the working directory" (``fcntl.h``).
AT_FDCWD = -100
#: ``newfstatat``'s "the path is empty: stat the descriptor itself".
AT_EMPTY_PATH = 0x1000

# access() modes (``unistd.h``).
F_OK, X_OK, W_OK, R_OK = 0, 1, 2, 4

# lseek() whence.
SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2

# mmap() (``mman-common.h``, ``mman.h``).
PROT_NONE = 0
PROT_WRITE = 0x2
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_FIXED_NOREPLACE = 1 << 20

# arch_prctl() codes (``asm/prctl.h``).
ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004

# i386 thread-local storage (``arch/x86/include/asm/segment.h``, ``tls.c``): set_thread_area
# writes one of three GDT slots; an i386 kernel numbers them 6-8 (selectors 0x33, 0x3b, 0x43).
GDT_ENTRY_TLS_MIN = 6
GDT_ENTRY_TLS_ENTRIES = 3
GDT_ENTRY_TLS_MAX = GDT_ENTRY_TLS_MIN + GDT_ENTRY_TLS_ENTRIES - 1

# st_mode file types (``stat.h``).
S_IFIFO = 0o010000
S_IFCHR = 0o020000
S_IFDIR = 0o040000
S_IFREG = 0o100000


class Auxv(IntEnum):
    """Auxiliary-vector entry types (``include/uapi/linux/auxvec.h``, ``asm/auxvec.h``)."""

    AT_NULL = 0
    AT_PHDR = 3
    AT_PHENT = 4
    AT_PHNUM = 5
    AT_PAGESZ = 6
    AT_BASE = 7
    AT_FLAGS = 8
    AT_ENTRY = 9
    AT_UID = 11
    AT_EUID = 12
    AT_GID = 13
    AT_EGID = 14
    AT_PLATFORM = 15
    AT_HWCAP = 16
    AT_CLKTCK = 17
    AT_SECURE = 23
    AT_RANDOM = 25
    AT_EXECFN = 31


#: The error value range: a return of -4095..-1 is an error (``IS_ERR_VALUE``).
MAX_ERRNO = 4095
