"""Signals for the one Linux process: dispositions, the blocked mask, the alternate stack, sending
a signal to itself, and turning the CPU's exceptions into the signals Linux sends for them.

Models: the signal half of Linux's ``kernel/signal.c`` and ``arch/x86/kernel/{signal,traps}.c`` for
a single-threaded process. ``rt_sigaction`` sets a handler (with ``SA_SIGINFO``, ``SA_RESTORER``,
``SA_ONSTACK``, ``SA_NODEFER``, ``SA_RESETHAND`` and a mask), ``rt_sigprocmask`` the blocked set,
``sigaltstack`` the alternate stack; ``kill``/``tkill``/``tgkill`` to the process itself make a
signal pending, and a pending, unblocked signal is delivered when the call returns; a write to a
pipe whose reader went away sends ``SIGPIPE`` as it fails with ``EPIPE`` (``raise_on_return``). A
guest exception (a ``GuestException`` exit) becomes the signal Linux's trap handlers send: #DE
SIGFPE/FPE_INTDIV, #UD SIGILL/ILL_ILLOPN, #PF SIGSEGV (SEGV_MAPERR where nothing is mapped,
SEGV_ACCERR otherwise, ``si_addr`` = CR2), #GP SIGSEGV/SI_KERNEL, #NP/#SS SIGBUS, #AC
SIGBUS/BUS_ADRALN, ``int3`` SIGTRAP, #DB SIGTRAP/TRAP_TRACE (docs/UNICORN.md U64), #MF/#XM SIGFPE.
Delivery writes a frame (``sigframe.py``) and enters the handler; ``rt_sigreturn``/``sigreturn``
resume the interrupted code. Default actions: terminate (the exit status a shell shows, 128 + the
signal number), or ignore (SIGCHLD, SIGURG, SIGWINCH, SIGCONT, and the stop signals: nothing would
continue the process). A fault signal that is blocked or ignored kills, as Linux's
``force_sig_info`` does.

Follows: the Linux man-pages ``sigaction(2)``, ``sigprocmask(2)``, ``sigaltstack(2)``,
``kill(2)``, ``tgkill(2)``, ``signal(7)``; ``arch/x86/kernel/traps.c`` (``DO_ERROR`` table) for
the vector -> signal map; docs/ELF.md "Signals".

Leaves out: real-time signal queueing (a pending signal is one bit, as for standard signals),
delivering several pending signals at once (one per system call return or sigreturn), signals
from other processes, timers or the terminal, ``SA_RESTART`` (no call blocks), the i386 legacy
``sigaction``/``signal`` calls (glibc uses ``rt_sigaction``), core dumps (the core bit is not in
the status, as a shell's ``$?`` does not show it), the FPU state in frames (``sigframe.py``).

Guest controls: every argument and every byte of a frame ``sigreturn`` reads; pointers go
through the guest's page tables (a bad one is ``-EFAULT``), a frame that cannot be written
kills the process with SIGSEGV as in Linux, and nothing the guest does raises out of here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from hv_emu.errors import GuestFault, GuestMemoryError, PageFault
from hv_emu.exits import GuestException, Handled, Outcome, Stopped, Unhandled
from hv_emu.linux.files import SyscallError
from hv_emu.linux.numbers import Errno
from hv_emu.linux.sigframe import (
    EFLAGS_DEFAULT,
    AltStack,
    Interrupted,
    build_frame,
    frame_size,
    restore_frame,
    siginfo,
    stack_t_size,
)
from hv_emu.linux.signal_numbers import (
    DEFAULT_IGNORED,
    EFLAGS_TF,
    MINSIGSTKSZ,
    NSIG,
    SA_NODEFER,
    SA_ONSTACK,
    SA_RESETHAND,
    SA_RESTORER,
    SA_SIGINFO,
    SEGV_ACCERR,
    SI_TKILL,
    SI_USER,
    SIG_BLOCK,
    SIG_DFL,
    SIG_IGN,
    SIG_SETMASK,
    SIG_UNBLOCK,
    SIGKILL,
    SIGSEGV,
    SIGSET_BYTES,
    SIGSTOP,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    VECTOR_SIGNALS,
    sig_bit,
    signal_name,
)
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_virt, translate, write_virt


class SignalCall(Protocol):
    """What a signal system call sees of the call in progress (``syscalls._Call``)."""

    args: tuple[int, ...]
    registers: Mapping[str, int]
    rip: int
    paging: PagingState

    def read(self, va: int, n: int) -> bytes: ...

    def write(self, va: int, data: bytes) -> None: ...


@dataclass
class Action:
    """One signal's disposition (``struct k_sigaction``)."""

    handler: int = SIG_DFL
    flags: int = 0
    restorer: int = 0
    mask: int = 0


class Signals:
    """The process's signal state and its system calls; ``on_death(sig)`` ends the process."""

    def __init__(self, mem: GuestMemory, bits: int, pid: int, uid: int,
                 on_death: Callable[[int], None]) -> None:  # fmt: skip
        self.mem, self.bits, self.pid, self.uid = mem, bits, pid, uid
        self.on_death = on_death
        self.actions = [Action() for _ in range(NSIG + 1)]
        self.blocked = 0
        #: Pending signals and the siginfo each will be delivered with.
        self.pending: dict[int, bytes] = {}
        self.altstack = AltStack(0, SS_DISABLE, 0)
        self.delivered = 0
        #: The mask a handler's frame saves instead of ``blocked`` (``sigwait.py``'s sigsuspend).
        self.frame_mask: int | None = None
        #: Where a 64-bit ``rt_sigreturn`` resumed with TF set (docs/UNICORN.md U64).
        self._early_step: int | None = None
        self._word = bits // 8
        self._mask = (1 << bits) - 1

    def handlers(self) -> dict[str, Callable[[SignalCall], int | Outcome]]:
        """The system calls, by name, for the personality's table."""
        return {
            "rt_sigaction": self._rt_sigaction, "rt_sigprocmask": self._rt_sigprocmask,
            "sigaltstack": self._sigaltstack, "rt_sigreturn": self._rt_sigreturn,
            "sigreturn": self._sigreturn, "kill": self._kill, "tkill": self._tkill,
            "tgkill": self._tgkill, "rt_sigpending": self._rt_sigpending,
        }  # fmt: skip

    # ------------------------------------------------------------------ system calls
    def _rt_sigaction(self, c: SignalCall) -> int:
        sig, act, oact, size = c.args
        if size != SIGSET_BYTES or not 1 <= sig <= NSIG:
            raise SyscallError(Errno.EINVAL, f"signal {sig}, sigset size {size}")
        w = self._word
        layout = "<QQQQ" if w == 8 else "<IIIQ"
        new = None
        if act:
            if sig in (SIGKILL, SIGSTOP):
                raise SyscallError(Errno.EINVAL, f"{signal_name(sig)} cannot be caught")
            handler, flags, restorer, mask = struct.unpack(layout, c.read(act, 3 * w + 8))
            new = Action(handler, flags & 0xFFFFFFFF, restorer, mask & ~UNBLOCKABLE)
        if oact:
            old = self.actions[sig]
            c.write(oact, struct.pack(layout, old.handler, old.flags, old.restorer, old.mask))
        if new is not None:
            self.actions[sig] = new
            if self._ignored(sig):
                self.pending.pop(sig, None)  # an ignored pending signal is discarded
        return 0

    def _rt_sigprocmask(self, c: SignalCall) -> int | Outcome:
        how, new, old, size = c.args
        if size != SIGSET_BYTES:
            raise SyscallError(Errno.EINVAL, f"sigset size {size}")
        if new:
            if how not in (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK):
                raise SyscallError(Errno.EINVAL, f"how {how}")
            value = int.from_bytes(c.read(new, 8), "little")
        if old:
            c.write(old, self.blocked.to_bytes(8, "little"))
        if new:
            if how == SIG_BLOCK:
                self.blocked |= value
            elif how == SIG_UNBLOCK:
                self.blocked &= ~value
            else:
                self.blocked = value
            self.blocked &= ~UNBLOCKABLE & (2**64 - 1)
        return self._returning(c, 0)

    def _rt_sigpending(self, c: SignalCall) -> int:
        if c.args[1] > SIGSET_BYTES:
            raise SyscallError(Errno.EINVAL, f"sigset size {c.args[1]}")
        pending = sum(sig_bit(sig) for sig in self._blocked_signals())
        c.write(c.args[0], pending.to_bytes(8, "little")[: c.args[1]])
        return 0

    def _sigaltstack(self, c: SignalCall) -> int:
        new, old = c.args
        sp = c.registers.get("rsp", 0) & self._mask
        on = self._on_altstack(sp)
        size = stack_t_size(self.bits)
        if new:
            want = AltStack.unpack(c.read(new, size), self.bits)
            if on:
                raise SyscallError(Errno.EPERM, "on the alternate stack")
            mode = want.flags & ~SS_AUTODISARM
            if mode not in (0, SS_ONSTACK, SS_DISABLE):
                raise SyscallError(Errno.EINVAL, f"flags {want.flags:#x}")
        if old:
            current = self.altstack
            flags = SS_ONSTACK if on else current.flags
            c.write(old, AltStack(current.sp, flags, current.size).pack(self.bits))
        if new:
            if mode == SS_DISABLE:
                self.altstack = AltStack(0, SS_DISABLE, 0)
            else:
                if want.size < MINSIGSTKSZ:
                    raise SyscallError(Errno.ENOMEM, f"{want.size} bytes < MINSIGSTKSZ")
                self.altstack = AltStack(want.sp, want.flags & SS_AUTODISARM, want.size)
        return 0

    def _rt_sigreturn(self, c: SignalCall) -> Outcome:
        back = self._word if self.bits == 64 else 4  # the handler's ret popped the pretcode
        return self._return(c, (c.registers.get("rsp", 0) - back) & self._mask, rt=True)

    def _sigreturn(self, c: SignalCall) -> Outcome:
        if self.bits == 64:
            raise SyscallError(Errno.ENOSYS, "no sigreturn on x86-64")
        # __restore popped the pretcode and the signal number
        return self._return(c, (c.registers.get("rsp", 0) - 8) & self._mask, rt=False)

    def _return(self, c: SignalCall, frame: int, *, rt: bool) -> Outcome:
        try:
            raw = read_virt(self.mem, c.paging, frame, frame_size(self.bits, rt))
        except GuestFault:
            return self._die(SIGSEGV, fault=False)  # Linux: signal_fault -> SIGSEGV
        restored = restore_frame(self.bits, raw, rt=rt, current_flags=EFLAGS_DEFAULT)
        self.blocked = restored.mask & ~UNBLOCKABLE
        registers = {name: value & self._mask for name, value in restored.registers.items()}
        stack = restored.stack
        if stack is not None and not self._on_altstack(registers["rsp"]):
            mode = stack.flags & ~SS_AUTODISARM
            if mode == SS_DISABLE:
                self.altstack = AltStack(0, SS_DISABLE, 0)
            elif mode in (0, SS_ONSTACK) and stack.size >= MINSIGSTKSZ:
                self.altstack = AltStack(stack.sp, stack.flags & SS_AUTODISARM, stack.size)
        if self.bits == 64 and registers.get("rflags", 0) & EFLAGS_TF:
            self._early_step = registers["rip"]  # docs/UNICORN.md U64: drop the #DB at once
        return self._next(registers, c.paging) or Handled(registers=registers)

    def _kill(self, c: SignalCall) -> int | Outcome:
        pid, sig = c.args
        if pid not in (self.pid, 0):
            raise SyscallError(Errno.ESRCH, f"no process {pid}")
        return self._send(c, sig, SI_USER)

    def _tkill(self, c: SignalCall) -> int | Outcome:
        tid, sig = c.args
        if tid != self.pid:
            raise SyscallError(Errno.EINVAL if tid <= 0 else Errno.ESRCH, f"no thread {tid}")
        return self._send(c, sig, SI_TKILL)

    def _tgkill(self, c: SignalCall) -> int | Outcome:
        tgid, tid, sig = c.args
        if tgid <= 0 or tid <= 0:
            raise SyscallError(Errno.EINVAL, f"thread group {tgid}, thread {tid}")
        if (tgid, tid) != (self.pid, self.pid):
            raise SyscallError(Errno.ESRCH, f"no thread {tgid}/{tid}")
        return self._send(c, sig, SI_TKILL)

    def _send(self, c: SignalCall, sig: int, code: int) -> int | Outcome:
        if not 0 <= sig <= NSIG:
            raise SyscallError(Errno.EINVAL, f"signal {sig}")
        if sig == 0:
            return 0  # only asks whether the process exists
        if sig == SIGKILL:
            return self._die(SIGKILL, fault=False)
        if not self._ignored(sig):
            self.pending[sig] = siginfo(self.bits, sig, code, pid=self.pid, uid=self.uid)
        return self._returning(c, 0)

    def raise_on_return(self, c: SignalCall, sig: int, result: int, *,
                        info: bytes | None = None) -> int | Outcome:  # fmt: skip
        """``sig`` is sent to the caller as the call returns ``result`` (``SIGPIPE`` on ``-EPIPE``:
        ``send_sig``, ``si_code`` SI_USER; ``info``: the siginfo ``rt_sigqueueinfo`` gave):
        pending unless ignored, delivered as the call returns unless blocked."""
        if not self._ignored(sig):
            self.pending[sig] = info or siginfo(self.bits, sig, SI_USER, pid=self.pid,
                                                uid=self.uid)  # fmt: skip
        return self._returning(c, result)

    def returning(self, c: SignalCall, result: int) -> int | Outcome:
        """The call returns ``result``, a pending unblocked signal delivered first if any."""
        return self._returning(c, result)

    # ------------------------------------------------------------------ delivery
    def _returning(self, c: SignalCall, result: int) -> int | Outcome:
        """A system call returns ``result``: deliver a pending unblocked signal first, if any."""
        if not self.pending.keys() - self._blocked_signals():
            return result
        registers = dict(c.registers)
        registers.update(rax=result & self._mask, rip=c.rip)
        outcome = self._next(registers, c.paging)
        return result if outcome is None else outcome

    def _blocked_signals(self) -> set[int]:
        return {sig for sig in self.pending if self.blocked & sig_bit(sig)}

    def _next(self, registers: Mapping[str, int], paging: PagingState) -> Outcome | None:
        """Deliver the lowest pending unblocked signal to code about to resume at ``registers``
        (``None``: nothing to deliver, or it was ignored: resume as is)."""
        ready = sorted(self.pending.keys() - self._blocked_signals())
        if not ready:
            return None
        sig = ready[0]
        info = self.pending.pop(sig)
        return self._dispose(sig, info, Interrupted(registers), paging, fault=False)

    def on_exception(self, exit_: GuestException) -> Outcome:
        """A CPU exception: the signal Linux sends for it, delivered now (it cannot wait)."""
        early, self._early_step = self._early_step, None
        if exit_.vector == 1 and exit_.rip == early:
            # The #DB Unicorn raises as the SYSCALL hook returns with TF set, before the first
            # instruction ran (docs/UNICORN.md U64): IRET would trap after it; TF stays set.
            return Handled(registers={"rip": exit_.rip})
        mapped = VECTOR_SIGNALS.get(exit_.vector)
        if mapped is None:  # #DF, #MC...: nothing a handler could resume from
            return Unhandled(f"exception vector {exit_.vector} has no signal")
        sig, code, what = mapped
        err = exit_.error_code or 0
        if exit_.vector == 14:
            try:
                translate(self.mem, exit_.paging, exit_.cr2)
                code, err = SEGV_ACCERR, 0x7  # present: a write to a read-only page (no NX)
            except GuestFault:
                err = 0x4  # not present, from user mode
        addr = {"rip": exit_.rip, "cr2": exit_.cr2, None: 0}[what] & self._mask
        info = siginfo(self.bits, sig, code, addr=addr)
        ctx = Interrupted(exit_.registers, trapno=exit_.vector, err=err, cr2=exit_.cr2)
        outcome = self._dispose(sig, info, ctx, exit_.paging, fault=True)
        return outcome if outcome is not None else Handled(registers={"rip": exit_.rip})

    def _dispose(self, sig: int, info: bytes, ctx: Interrupted, paging: PagingState, *,
                 fault: bool) -> Outcome | None:  # fmt: skip
        action = self.actions[sig]
        if fault and (self.blocked & sig_bit(sig) or action.handler == SIG_IGN):
            # force_sig_info: a fault signal the program cannot take kills it
            self.actions[sig] = action = Action()
            self.blocked &= ~sig_bit(sig)
        if action.handler == SIG_IGN or (action.handler == SIG_DFL and sig in DEFAULT_IGNORED):
            return None
        if action.handler == SIG_DFL:
            return self._die(sig, fault=fault)
        return self._enter(sig, info, ctx, paging, action)

    def _enter(self, sig: int, info: bytes, ctx: Interrupted, paging: PagingState,
               action: Action) -> Outcome:  # fmt: skip
        sp = ctx.reg("rsp") & self._mask
        stack = self.altstack
        on = self._on_altstack(sp)
        saved = AltStack(stack.sp, SS_ONSTACK if on else stack.flags, stack.size)
        if self.bits == 64:
            sp -= 128  # the red zone
        if action.flags & SA_ONSTACK and not stack.flags & SS_DISABLE and not on:
            sp = stack.sp + stack.size
            if stack.flags & SS_AUTODISARM:
                self.altstack = AltStack(0, SS_DISABLE, 0)
        restorer = action.restorer if action.flags & SA_RESTORER else None
        if self.bits == 64 and restorer is None:
            return self._die(SIGSEGV, fault=False)  # x86-64 Linux: no restorer, no frame
        rt = self.bits == 64 or bool(action.flags & SA_SIGINFO)
        frame = build_frame(self.bits, sp=sp & self._mask, signo=sig, info=info, ctx=ctx,
                            mask=self.blocked if self.frame_mask is None else self.frame_mask,
                            stack=saved, handler=action.handler,
                            restorer=restorer, rt=rt)  # fmt: skip
        try:
            write_virt(self.mem, paging, frame.address, frame.data)
        except (PageFault, GuestMemoryError, GuestFault):
            return self._die(SIGSEGV, fault=False)  # force_sigsegv: the stack is unusable
        self.blocked |= action.mask
        if not action.flags & SA_NODEFER:
            self.blocked |= sig_bit(sig)
        self.blocked &= ~UNBLOCKABLE
        if action.flags & SA_RESETHAND:
            self.actions[sig] = Action()
        self.delivered += 1
        return Handled(registers={k: v & self._mask for k, v in frame.entry.items()})

    def _die(self, sig: int, *, fault: bool) -> Outcome:
        """The default action "terminate": a fault keeps the vCPU's fault report (Unhandled)."""
        self.on_death(sig)
        if fault:
            return Unhandled(f"{signal_name(sig)} with no handler")
        return Stopped(f"killed by {signal_name(sig)}")

    # ------------------------------------------------------------------ helpers
    def _ignored(self, sig: int) -> bool:
        handler = self.actions[sig].handler
        return handler == SIG_IGN or (handler == SIG_DFL and sig in DEFAULT_IGNORED)

    def _on_altstack(self, sp: int) -> bool:
        stack = self.altstack
        if stack.flags & SS_DISABLE or not stack.size:
            return False
        return stack.sp < sp <= stack.sp + stack.size
