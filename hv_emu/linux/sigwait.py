"""Waiting for signals: ``rt_sigsuspend``, ``rt_sigtimedwait`` and sending one with its own
siginfo, ``rt_sigqueueinfo``, for the one Linux process.

Models: ``kernel/signal.c``'s ``sigsuspend`` (the blocked mask replaced by the caller's until a
handler has run: the handler's frame saves the mask from before the call, so ``rt_sigreturn``
puts it back, and the call returns ``-EINTR``), ``do_sigtimedwait`` (a pending signal of the set
is taken without running its handler: the call returns its number and copies its siginfo) and
``do_rt_sigqueueinfo`` to the process itself (the caller's siginfo, ``si_signo`` set to the
signal). Nothing outside the process sends signals and time is not waited for, so a wait that no
pending signal ends is decided at once: ``rt_sigtimedwait`` with a timeout returns ``-EAGAIN``
(the timeout expired), and a wait that could only end by a signal from outside (``rt_sigsuspend``,
``rt_sigtimedwait`` with no timeout) ends the run (the process would wait forever).

Follows: the Linux man-pages ``sigsuspend(2)``, ``sigtimedwait(2)``, ``rt_sigqueueinfo(2)``; the
timespec of ``rt_sigtimedwait`` is ``struct __kernel_timespec`` on x86-64 and for i386's
``rt_sigtimedwait_time64``, ``struct old_timespec32`` for i386's ``rt_sigtimedwait``.

Leaves out: queueing several instances of a real-time signal (``signals.py``), sleeping for the
timeout, ``rt_tgsigqueueinfo``.

Guest controls: every pointer (read through the page tables: a bad one is ``-EFAULT``), the set,
the siginfo bytes ``rt_sigqueueinfo`` queues, the timeout (checked as the kernel checks it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from hv_emu.exits import Outcome, Stopped
from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError
from hv_emu.linux.signal_numbers import NSIG, UNBLOCKABLE
from hv_emu.linux.signals import SignalCall, Signals

#: The kernel's sigset size; any other ``sigsetsize`` is ``EINVAL``.
SIGSET_SIZE = 8
#: ``sizeof(siginfo_t)``.
SIGINFO_SIZE = 128
_NSEC_PER_SEC = 1_000_000_000


class SignalWaits:
    """The waiting calls, over the process's ``Signals``."""

    def __init__(self, signals: Signals) -> None:
        self.signals = signals

    def handlers(self) -> dict[str, Callable[[SignalCall], int | Outcome]]:
        """The system calls, by name, for the personality's table."""
        return {
            "rt_sigsuspend": self._rt_sigsuspend,
            "rt_sigtimedwait": lambda c: self._rt_sigtimedwait(c, time64=self.signals.bits == 64),
            "rt_sigtimedwait_time64": lambda c: self._rt_sigtimedwait(c, time64=True),
            "rt_sigqueueinfo": self._rt_sigqueueinfo,
        }

    def _rt_sigsuspend(self, c: SignalCall) -> int | Outcome:
        mask_ptr, size = c.args
        if size != SIGSET_SIZE:
            raise SyscallError(Errno.EINVAL, f"sigset size {size}")
        mask = int.from_bytes(c.read(mask_ptr, SIGSET_SIZE), "little") & ~UNBLOCKABLE
        signals = self.signals
        before = signals.blocked
        signals.blocked, signals.frame_mask = mask, before
        try:
            outcome = signals.returning(c, -Errno.EINTR)
        finally:
            signals.frame_mask = None
        if isinstance(outcome, int):  # no pending signal the new mask lets through
            signals.blocked = before
            return Stopped("rt_sigsuspend: the program waits for a signal nothing will send")
        return outcome

    def _rt_sigtimedwait(self, c: SignalCall, *, time64: bool) -> int | Outcome:
        set_ptr, info_ptr, timeout_ptr, size = c.args
        if size != SIGSET_SIZE:
            raise SyscallError(Errno.EINVAL, f"sigset size {size}")
        wanted = int.from_bytes(c.read(set_ptr, SIGSET_SIZE), "little") & ~UNBLOCKABLE
        if timeout_ptr:
            layout = "<qq" if time64 else "<ii"
            sec, nsec = struct.unpack(layout, c.read(timeout_ptr, struct.calcsize(layout)))
            if sec < 0 or not 0 <= nsec < _NSEC_PER_SEC:
                raise SyscallError(Errno.EINVAL, f"timeout {sec} s {nsec} ns")
        pending = self.signals.pending
        ready = sorted(sig for sig in pending if wanted >> (sig - 1) & 1)
        if ready:
            sig = ready[0]
            if info_ptr:
                c.write(info_ptr, pending[sig])
            del pending[sig]
            return sig
        if timeout_ptr:
            return -Errno.EAGAIN  # nothing can arrive before the timeout expires
        return Stopped("rt_sigtimedwait: the program waits for a signal nothing will send")

    def _rt_sigqueueinfo(self, c: SignalCall) -> int | Outcome:
        tgid, sig, info_ptr = c.args
        info = bytearray(c.read(info_ptr, SIGINFO_SIZE))
        if tgid != self.signals.pid:
            raise SyscallError(Errno.ESRCH, f"no process {tgid}")
        if not 0 <= sig <= NSIG:
            raise SyscallError(Errno.EINVAL, f"signal {sig}")
        if sig == 0:
            return 0
        struct.pack_into("<i", info, 0, sig)  # si_signo is the signal sent, whatever was there
        return self.signals.raise_on_return(c, sig, 0, info=bytes(info))
