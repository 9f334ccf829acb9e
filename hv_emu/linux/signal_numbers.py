"""The x86 Linux signal ABI as numbers: signals and their names, ``sigaction`` and ``sigaltstack``
flags, ``si_code`` values, and which signal each CPU exception becomes.

Models: the constants of ``uapi/asm-generic/signal.h``, ``signal-defs.h`` and ``siginfo.h`` for
x86, and the vector -> (signal, ``si_code``, ``si_addr``) map of ``arch/x86/kernel/traps.c``
(its ``DO_ERROR`` table and the #PF, #GP and #BP handlers), which ``signals.py`` (the process's
signal state) and ``sigwait.py`` use.

Follows: the Linux man-pages ``signal(7)``, ``sigaction(2)``, ``sigaltstack(2)``; Linux's
``arch/x86/kernel/traps.c``; docs/ELF.md "Signals".

Leaves out: real-time signal names (``SIGRTMIN`` and up are shown by number), the i386 legacy
``sigaction`` flags.

Guest controls: nothing here; the guest's numbers are looked up in these tables, bounded by
``NSIG``.
"""

from __future__ import annotations

NSIG = 64
SIGNAMES = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
            7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
            13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
            18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
            23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF",
            28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS"}  # fmt: skip
SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGKILL, SIGSEGV, SIGPIPE, SIGSTOP = 4, 5, 7, 8, 9, 11, 13, 19
#: Signals whose default action is to do nothing here (ignore; stop and continue have no
#: job control to answer to).
DEFAULT_IGNORED = frozenset({17, 18, 19, 20, 21, 22, 23, 28})
SIG_DFL, SIG_IGN = 0, 1
SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SA_SIGINFO = 0x4
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000
SS_ONSTACK, SS_DISABLE, SS_AUTODISARM = 1, 2, 1 << 31
MINSIGSTKSZ = 2048
#: si_code values (``uapi/asm-generic/siginfo.h``).
SI_USER, SI_KERNEL, SI_TKILL = 0, 0x80, -6
ILL_ILLOPN, FPE_INTDIV, SEGV_MAPERR, SEGV_ACCERR, BUS_ADRALN, TRAP_TRACE = 2, 1, 1, 2, 1, 2
#: EFLAGS.TF: a single-step trap (#DB) after the next instruction.
EFLAGS_TF = 0x100
SIGSET_BYTES = 8
#: SIGKILL and SIGSTOP: no mask blocks them.
UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
#: Vector -> (signal, si_code, what si_addr is: "rip", "cr2" or None for 0), from Linux's
#: ``DO_ERROR`` table and its #PF, #GP, #BP handlers.
VECTOR_SIGNALS: dict[int, tuple[int, int, str | None]] = {
    0: (SIGFPE, FPE_INTDIV, "rip"), 1: (SIGTRAP, TRAP_TRACE, "rip"), 3: (SIGTRAP, SI_KERNEL, None),
    4: (SIGSEGV, SI_KERNEL, None), 5: (SIGSEGV, SI_KERNEL, None), 6: (SIGILL, ILL_ILLOPN, "rip"),
    10: (SIGSEGV, SI_KERNEL, None), 11: (SIGBUS, SI_KERNEL, None), 12: (SIGBUS, SI_KERNEL, None),
    13: (SIGSEGV, SI_KERNEL, None), 14: (SIGSEGV, SEGV_MAPERR, "cr2"),
    16: (SIGFPE, SI_KERNEL, "rip"), 17: (SIGBUS, BUS_ADRALN, None), 19: (SIGFPE, SI_KERNEL, "rip"),
}  # fmt: skip


def signal_name(sig: int) -> str:
    """``SIGSEGV`` for 11; a signal with no name (a real-time one) by its number."""
    return SIGNAMES.get(sig, f"signal {sig}")


def sig_bit(sig: int) -> int:
    """The bit of ``sig`` in a signal set (``sigset_t``)."""
    return 1 << (sig - 1)
