"""The vCPU run loop: enter the guest, come back at each exit Unicorn cannot finish in a hook.

Models: a VMM's ``vcpu_run`` (KVM_RUN's loop, seen from the VMM): inject the pending event, if
any (``deliver.py``: VT-x's VM entry with an interruption-information field), enter the guest
with ``emu_start``, and when it returns decide why: the guest halted (HLT), a hook asked to stop (a
handler's request, a fault), the watchdog fired, host code wrote guest RAM (flush translated code
and go on), or Unicorn stopped without saying why (the silent invalid-opcode stop, finished here).
Also single steps for a debugger (``steps=1``).

Follows: docs/UNICORN.md (Unicorn 2.1.4): HLT ends ``emu_start`` normally (U17), and on an
instruction budget Unicorn's own counter tells it from the budget running out (U65); invalidate
translated code after host writes with a whole flush, never ``ctl_remove_cache`` (U9, U10);
a watchdog thread instead of ``timeout=``, ``count=`` only when a debugger steps (U23) or a
timer is armed (U41, the instruction budget); CR2 given back after each return (U42); the
silent stop at a thrice-met invalid opcode (U15), VMMCALL's included (U37); the exception in
flight is forgotten at each entry, so a fault is reported, or delivered, as itself (U61, U62).

A signal (``interrupt``: Ctrl-C, SIGTERM, SIGHUP) ends a run as the watchdog does, as a
``StopRequest`` that names it, and cuts short a host wait either way; both repeat their stop until
the run has returned, so one that lands just before ``emu_start`` is not lost (``stopping.py``,
docs/UNICORN.md U74).

Leaves out: SMP (one vCPU, one thread), pausing and resuming a run from another thread.

Guest controls: when it halts, faults or calls VMCALL, and the RAM host code writes on its behalf
(DMA, a hypercall's result); never how long a run lasts (the watchdog ends it).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import fields

import unicorn

from hv_emu.errors import GuestFault
from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout, TripleFault
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_virt
from hv_emu.vcpu.deliver import guest_has_handler, inject
from hv_emu.vcpu.disasm import MAX_INSN, disassemble_one, straight_run_ends_in_hlt
from hv_emu.vcpu.engine import mode_of
from hv_emu.vcpu.exception_state import forget_exception
from hv_emu.vcpu.exceptions import INVALID_OPCODE
from hv_emu.vcpu.faults import exception_name, fault_report
from hv_emu.vcpu.icount import Counter
from hv_emu.vcpu.injection import IF, Delivered, EventType, hardware_exception
from hv_emu.vcpu.mmio import MmioTraps
from hv_emu.vcpu.platform import Platform
from hv_emu.vcpu.stopping import PAUSED, Repeater, RunStop
from hv_emu.vcpu.traps import ExitHandler

_HLT = 0xF4
#: How far past a stop's instruction its translation block can reach: a page and one
#: instruction (a block never spans more, docs/UNICORN.md U12).
_BLOCK_SPAN = 4096 + MAX_INSN
_UNTIL = 2**64 - 1  # unreachable: run until a trap stops us (docs/UNICORN.md U23)


class Vcpu(MmioTraps, Platform):
    """One virtual CPU over ``mem``; every exit goes to ``on_exit``."""

    def __init__(self, mem: GuestMemory, on_exit: ExitHandler) -> None:
        super().__init__(mem, on_exit)
        Platform.__init__(self)
        self._timed_out = threading.Event()
        self._paused = threading.Event()  # a debugger's break-in (``pause``)
        self.stopping = RunStop()  # the watchdog's and the signals' end, host waits included
        self._stopper = Repeater(self.uc.emu_stop, self._timed_out.is_set)  # U74
        self._stale_code = False  # host wrote guest RAM: translated code may be stale
        self._pushing_frame = False  # delivery is writing an interrupt frame (not code)
        self._counter = Counter(self.uc)  # what a budgeted entry ran (docs/UNICORN.md U65)
        mem.add_write_listener(self._invalidate)

    def run(self, timeout: float | None, *, steps: int | None = None) -> Exit:
        """Run until the guest halts, faults, times out or a handler stops it; return that exit.

        ``steps`` runs at most that many instructions and then returns ``StopRequest("step")``
        (a debugger's single step; ``count=`` is slow, so only then)."""
        self._timed_out.clear()
        if self.stopping.rearm():  # a signal came before this run: it ends at once
            self._timed_out.set()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Timer(timeout, self._watchdog_fire)
            watchdog.daemon = True
            watchdog.start()
        try:
            while True:
                if self._paused.is_set() and not self.stopping.interrupted.is_set():
                    self._paused.clear()
                    return StopRequest(PAUSED, self.mode(), self.reg("rip"))
                if self._timed_out.is_set():
                    mode = self.mode()
                    if self.stopping.interrupted.is_set():
                        return StopRequest(self.stopping.reason(), mode, self.reg("rip"))
                    return Timeout(timeout or 0.0, mode, self.reg("rip"))
                self._stop = self._error = self._pending_fault = None
                self._resume = False
                self._stop_pc = None
                if self._stale_code:
                    self._stale_code = False
                    self.uc.ctl_flush_tb()
                self.sync_platform()
                if self.pending_event is not None:
                    ended = self._inject_pending()
                    if ended is not None:
                        return ended
                start = self.reg("rip")
                budget = None if steps is not None else self.budget
                # A stop from inside a hook can leave a page fault "in flight" that would turn
                # the guest's next fault into #DF (docs/UNICORN.md U62): forget it first.
                forget_exception(self.uc)
                err = self._enter(start, steps or budget)
                if err is not None:
                    if self._error is not None:  # raised in a hook, stored there (U22)
                        raise self._error from None
                    if self._stop is not None:  # a fault recorded by a hook, then stopped
                        return self._stop
                    return self._fault_from(err)
                if self._error is not None:
                    raise self._error
                if self._stop is not None:
                    return self._stop
                if steps is not None and self._resume and not self._timed_out.is_set():
                    # A handler wrote guest RAM during the step: the step is done all the same
                    # (the flush happens at the next emu_start).
                    return StopRequest("step", self.mode(), self.reg("rip"))
                # What the entry ran moves guest time, whatever ended it (U65), and an exit that
                # left emu_start early (a BIOS call, a host write of guest RAM, an INT n to
                # deliver) costs a fixed quantum more, so a guest polling through such exits
                # still reaches its timer's deadlines (docs/DEVICES.md, guest time).
                ran = None if budget is None else self._counter.ran(budget)
                self.charge_entry(None if ran is None else ran[0], early=self._resume)
                expired = ran is not None and ran[1]
                if self._timed_out.is_set():
                    continue  # reported at the top of the loop
                halted = False
                if self._resume:
                    # A flush, an event to inject: done at the top of the loop. Without a budget
                    # the stop landed at the end of the translation block (U12): a HLT later in
                    # that block ran, and is waited for as any HLT.
                    halted = budget is None and self._hlt_after_stop()
                    if not halted:
                        continue
                paging = self.paging_state()
                mode = mode_of(paging)
                rip = self.reg("rip")
                pc = self.linear_address(mode, rip)
                if halted or (not expired and self._byte_before(paging, pc) == _HLT):
                    # HLT with IF = 1 waits for the next interrupt (virtual time skips to the
                    # next timer deadline); with IF = 0, or nothing that could wake it, the
                    # run ends as it always did.
                    if self.reg("rflags") & IF and self.wait_for_interrupt(self._timed_out):
                        if self._paused.is_set() and not self.interrupt_pending():
                            self.set_reg("rip", rip - 1)  # still halted: the HLT runs again
                        continue
                    return Halt(mode, rip)
                if expired or (budget is not None and ran is None
                               and not self._invalid_opcode_at(paging, pc, mode)):  # fmt: skip
                    # The instruction budget ran out (a timer's deadline): time moved on (charged
                    # above). Without the counter (U65), a return at an invalid opcode is U15's
                    # silent stop, handled below, and any other is the budget, charged here.
                    if ran is None and budget is not None:
                        self.budget_spent(budget)
                    continue
                # Unicorn 2.1.4 with paging on stops silently, without calling the invalid-
                # instruction hook, at an invalid opcode it has met twice before (seen with
                # VMCALL and VMMCALL: the third call in a loop). Finish the exit here, in the
                # host loop.
                if steps is not None:
                    # A single step that did not move RIP off a hypercall is the same silent stop.
                    if rip == start and self._is_hypercall(paging, pc):
                        stop = self._silent_invalid_opcode(mode, paging, rip, pc)
                        if stop is not None:
                            return stop
                    return StopRequest("step", mode, self.reg("rip"))
                stop = self._silent_invalid_opcode(mode, paging, rip, pc)
                if stop is not None:
                    return stop
        finally:
            if watchdog is not None:
                watchdog.cancel()
                if watchdog.is_alive():
                    watchdog.join()  # a firing under way: its repeater is cancelled below
            self._stopper.cancel()

    def _enter(self, start: int, steps: int | None) -> unicorn.UcError | None:
        """One ``emu_start`` from ``start``: the Unicorn error it ended with, if any."""
        cr2 = self.reg("cr2")
        self._emulating = True
        try:
            self.uc.emu_start(start, _UNTIL, count=steps or 0)
        except unicorn.UcError as err:
            return err
        finally:
            self._emulating = False
            # With paging on, leaving emu_start writes _UNTIL - 1 into CR2 (docs/UNICORN.md
            # U42): give the guest back the CR2 it had (a #PF's address, or its own value).
            if self.reg("cr2") == _UNTIL - 1:
                self.set_reg("cr2", cr2)
        return None

    def _silent_invalid_opcode(self, mode: int, paging: PagingState, rip: int,
                               pc: int) -> Exit | None:  # fmt: skip
        """Handle a hypercall (VMCALL, or VMMCALL on AMD) Unicorn stopped at without a hook
        call; any other opcode, the other vendor's hypercall included, is a #UD, offered to an OS
        personality first (a Linux program's SIGILL: ``Traps._exception``)."""
        if not self._is_hypercall(paging, pc):
            # A #UD as the hook would have seen it: an OS personality may take it (SIGILL),
            # else the guest's IVT/IDT if it has a handler.
            if self._exception(6, mode, paging, rip):
                if self._error is not None:
                    raise self._error
                return self._stop  # None: resume where the handler put RIP
            event = hardware_exception(INVALID_OPCODE)
            if self._owner(event, mode) == "guest":
                self.pending_event = event
                return None
            return fault_report(self, "#UD invalid opcode", 0, 6)
        self._vmcall(mode, paging, rip)
        if self._error is not None:
            raise self._error
        return self._stop  # None: resume after the VMCALL

    def _inject_pending(self) -> Exit | None:
        """VM entry with an event to inject: deliver it through the guest's tables; a refusal
        or a triple fault ends the run (the one-line report names it)."""
        event, self.pending_event = self.pending_event, None
        if event is None:
            return None
        if event.type is EventType.EXTERNAL_INTERRUPT:
            self.hidden.load()
            if not guest_has_handler(self, self.hidden, self.mode(), event.vector):
                return fault_report(self, f"external interrupt (vector {event.vector:#x}): no "
                                    "handler in the guest's IVT/IDT", 0, event.vector)  # fmt: skip
        cs, rip = self.reg("cs"), self.reg("rip")
        # The frame delivery pushes is stack data: it does not make translated code stale (a
        # guest that runs code from its own interrupt stack would see the old bytes once).
        self._pushing_frame = True
        try:
            injection = inject(self, self.hidden, event)
        finally:
            self._pushing_frame = False
        for watcher in self.injection_watchers:
            watcher(injection, cs, rip)
        result = injection.result
        if isinstance(result, Delivered):
            return None
        first = injection.events[0]
        what = exception_name(first.vector) if first.type is EventType.HARDWARE_EXCEPTION \
            else f"vector {first.vector:#x}"
        if result is None:
            chain = " -> ".join(exception_name(e.vector) for e in injection.events)
            report = fault_report(self, f"triple fault ({chain} -> shutdown)", 0, 8)
            return TripleFault(**{f.name: getattr(report, f.name) for f in fields(report)})
        return fault_report(self, f"{what} not delivered: {result.reason}", first.cr2 or 0,
                            first.vector)  # fmt: skip

    def _invalid_opcode_at(self, paging: PagingState, pc: int, mode: int) -> bool:
        """Whether the instruction at linear ``pc`` is the hypercall or does not decode (where
        Unicorn's silent stop of U15 leaves RIP)."""
        if self._is_hypercall(paging, pc):
            return True
        try:
            code = read_virt(self.mem, paging, pc, MAX_INSN)
        except GuestFault:
            return False  # the fetch itself will fault, in the guest
        text = disassemble_one(code, pc, mode)
        return text.startswith(("(bad)", "ud0", "ud1", "ud2"))

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """A signal (Ctrl-C by default): end this run and every later one (a ``StopRequest``
        naming the first signal, ``stopping.ENDINGS``), even from a host wait; any thread may
        call it, as often as it likes."""
        self.stopping.interrupt(signum)
        self._watchdog_fire()

    def pause(self) -> None:
        """A debugger's break-in (gdb's Ctrl-C): end this run with ``StopRequest(PAUSED)`` at
        the next instruction boundary Unicorn stops at (U12), as the watchdog does, but leave
        later runs alone. A HLT being waited for is waited for again on the next run (RIP is put
        back on it); a break-in that lands just as ``emu_start`` returns at a HLT is reported after
        the HLT, and the next run goes on past it, as a wake-up would, even with IF = 0 (the vCPU
        cannot tell that return from any other stop without decoding backwards, and an
        instruction whose last byte is 0xF4 ends many a translation block). Host waits are not
        cut: a Linux program blocked reading standard input stops once its read returns
        (cutting the read would lose its place in the system call). Any thread may call it."""
        self._paused.set()
        self._timed_out.set()
        self._stopper.start()

    def clear_pause(self) -> None:
        """Forget a ``pause`` that came after the run had stopped for another reason (the
        debugger is told that reason; a later run must not stop for the late break-in): its
        stop repeater, started after the run had cancelled its own, ends too."""
        self._paused.clear()
        self._timed_out.clear()
        self._stopper.cancel()

    def _watchdog_fire(self) -> None:
        """End the run: its host waits now, and ``emu_start`` now and again every
        ``stopping.REPEAT`` seconds until the run returns (a stop just before ``emu_start``
        began is lost, U74)."""
        self._timed_out.set()
        self.stopping.cut()
        self._stopper.start()

    def _byte_before(self, paging: PagingState, pc: int) -> int:
        """The byte before linear ``pc`` (a HLT?), read through the guest's tables (U7); -1 when
        they do not map it."""
        try:
            return read_virt(self.mem, paging, pc - 1, 1)[0]
        except GuestFault:
            return -1

    def _hlt_after_stop(self) -> bool:
        """Whether a HLT ran between the instruction whose hook asked for an early stop and the
        end of its translation block, where the stop landed (U12): the code from that
        instruction to RIP is a straight run ending in HLT. Decoded, never guessed from the byte
        before RIP (``mov al, 0F4h`` ends in the same byte)."""
        if self._stop_pc is None:
            return False
        paging = self.paging_state()
        mode = mode_of(paging)
        start = self.linear_address(mode, self._stop_pc)
        end = self.linear_address(mode, self.reg("rip"))
        if not start < end <= start + _BLOCK_SPAN:
            return False
        try:
            code = read_virt(self.mem, paging, start, end - start)
        except GuestFault:
            return False
        return straight_run_ends_in_hlt(code, start, mode)

    def _invalidate(self, pa: int, n: int) -> None:
        """A host write to guest RAM (DMA, a hypercall's result, the loader).

        Unicorn does not notice host writes, so code translated from that RAM may be stale
        (docs/UNICORN.md U9). ``ctl_remove_cache`` cannot help: it takes a guest-*virtual*
        address and walks the guest's page tables to find the page, which faults when the tables
        do not map it (U10). So the whole translation cache is flushed at the next ``emu_start``;
        a write from a hook ends the current ``emu_start`` (at the end of the translation block,
        U12) so the guest never runs stale code, except from an IN hook, which must not stop (U11):
        there only the bulk ``rep ins*`` writes RAM, and it drops what it overwrote itself (U10);
        and except from an MMIO store, which a stop would replay (U52): the next MMIO load
        flushes instead (``vcpu/mmio.py``).
        """
        if self._pushing_frame:
            return
        if self._code_dropped_here:
            return  # the vCPU's own bulk store, whose translated code it dropped (U10)
        self._stale_code = True
        if self._emulating and not self._in_port_in and not self._in_mmio_write:
            if self._stop_pc is None:
                self._stop_pc = self.reg("rip")  # where the rest of the block starts (U12)
            self._resume = True
            self.uc.emu_stop()

    def _fault_from(self, err: unicorn.UcError) -> Fault:
        """The fault report for an ``emu_start`` that ended in a Unicorn error, with what a hook
        recorded about it, a #UD or a bad access (U19), or else Unicorn's own words."""
        if self._pending_fault is not None:
            kind, address, vector = self._pending_fault
        else:
            kind, address, vector = f"Unicorn error: {err}", 0, -1
        return fault_report(self, kind, address, vector)
