"""Guest exceptions and INT n as the interrupt hook sees them: who takes each vector.

Models: the exception-bitmap side of VT-x. Every exception and software interrupt reaches
Unicorn's interrupt hook (docs/UNICORN.md U18); here it becomes an event in VT-x's terms
(``error_codes.raised_event``: type, error code, CR2), and one decision, ``_owner``, says who
takes it: the hypervisor (a software INT n it has a handler for, Linux's ``int 0x80`` or a BIOS
model, or one nobody handles: an exit dispatch reports), the guest (it has an IVT entry or an
IDT: the event is kept, ``emu_start`` stopped with RIP where it was (docs/UNICORN.md U44), and
the run loop injects it at the next VM entry, docs/UNICORN.md U39),
or nobody (the one-line fault report, as before delivery existed). An OS personality that takes
CPU exceptions itself (Linux's signals) is offered them first, as a ``GuestException`` exit
(``_exception``; docs/UNICORN.md U61 for the exception it must forget).

Follows: Intel SDM vol. 3C 25.2 (the exception bitmap decides which exceptions exit) and 24.8.3
(the event injected at VM entry).

Leaves out: the exception bitmap as a setting (the rule above is fixed), NMIs, #MC.

Guest controls: which vectors it raises, its tables, the bytes before RIP; the hook never lets
an exception escape into Unicorn (U22).
"""

from __future__ import annotations

from collections.abc import Callable, Container

import unicorn

from hv_emu.errors import GuestFault
from hv_emu.exits import Exit, GuestException, Handled, Outcome, SoftwareInterrupt, Unhandled
from hv_emu.memory.walk import PagingState, read_virt
from hv_emu.vcpu.bulk_io import BulkStringIo
from hv_emu.vcpu.deliver import guest_has_handler
from hv_emu.vcpu.engine import U64, mode_of
from hv_emu.vcpu.error_codes import raised_event
from hv_emu.vcpu.exception_state import forget_exception
from hv_emu.vcpu.faults import PAGE_FAULT, exception_name, fault_report
from hv_emu.vcpu.hidden import HiddenState
from hv_emu.vcpu.injection import ERROR_CODE_VECTORS, Event, EventType

INVALID_OPCODE = 6  # #UD


class ExceptionTraps(BulkStringIo):
    """The interrupt hook and the ownership of vectors; ``Traps`` provides the rest."""

    hidden: HiddenState
    owned_vectors: Container[int]
    pending_event: Event | None
    _resume: bool
    _stop: Exit | None
    offer_exceptions: bool
    on_exit: Callable[[Exit], Outcome]  # the machine's dispatch, set by Traps

    def _apply(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def _hook_error(self, err: BaseException) -> None:
        raise NotImplementedError

    def _on_interrupt(self, uc: unicorn.Uc, intno: int, _ud: object) -> None:
        """A guest exception or INT n: one decision, who takes this vector (``_owner``)."""
        try:  # a handler that writes guest RAM ends this emu_start (_invalidate)
            paging = self.paging_state()
            mode = mode_of(paging)
            pc = self.linear_pc(mode)
            try:  # the two bytes before RIP, through the guest's tables (U7)
                before = read_virt(self.mem, paging, pc - 2, 2)
            except GuestFault:
                before = b""
            event = self._classify(intno, before, paging, mode, pc)
            owner = self._owner(event, mode)
            if owner == "hypervisor":
                # A software INT n (RIP is already past it) the hypervisor handles: a BIOS
                # call, Linux's int 0x80, or one nobody handles (the exit's report says so).
                exit_ = SoftwareInterrupt(intno, mode, self.reg("rip"),
                                          self.general_registers(mode), paging)  # fmt: skip
                self._apply(self.on_exit(exit_))
                return  # Unicorn resumes after the INT unless _apply stopped it
            if self._exception(intno, mode, paging, self.reg("rip")):
                return  # an OS personality took it: its handler moved RIP (U18)
            if owner == "guest":
                self._inject_next(event)
                return
            address = self.reg("cr2") if intno == PAGE_FAULT else 0
            self._stop = fault_report(self, exception_name(intno), address, intno)
        except BaseException as err:
            self._hook_error(err)
            return
        uc.emu_stop()

    def _owner(self, event: Event, mode: int) -> str:
        """Who takes ``event``: ``"hypervisor"`` (a software INT n a handler owns, or one with no
        guest handler: dispatch reports it), ``"guest"`` (delivered through its IVT/IDT at the
        next VM entry) or ``"none"`` (the run ends with a fault report, as a guest with no
        handler always did). An OS personality that takes exceptions itself (signals) decides
        here too."""
        software = event.type is EventType.SOFTWARE_INTERRUPT
        if software and event.vector in self.owned_vectors:
            return "hypervisor"
        self.hidden.load()
        if guest_has_handler(self, self.hidden, mode, event.vector):
            return "guest"
        return "hypervisor" if software else "none"

    def _classify(self, intno: int, before: bytes, paging: PagingState, mode: int,
                  pc: int) -> Event:  # fmt: skip
        """The event Unicorn reported as vector ``intno`` (``error_codes.raised_event``)."""

        def cpl() -> int:
            self.hidden.load()
            return self.hidden.cpl

        return raised_event(intno, before, mem=self.mem, paging=paging, mode=mode, pc=pc,
                            code=lambda: self._code_at(paging, pc), cr2=lambda: self.reg("cr2"),
                            cpl=cpl, registers=lambda: self.general_registers(mode))  # fmt: skip

    def _inject_next(self, event: Event) -> None:
        """Keep ``event`` for the next VM entry and end this ``emu_start`` (the run loop
        injects it: a CS load needs the CPU state edited between two entries, U39)."""
        self.pending_event = event
        self._resume = True
        self.uc.emu_stop()

    def _exception(self, vector: int, mode: int, paging: PagingState, rip: int) -> bool:
        """Offer a CPU exception to its handler (an OS personality) as a ``GuestException``;
        True if it was taken (the outcome applied), False if nobody handles it: the caller
        delivers it to the guest or reports the fault."""
        if not self.offer_exceptions:
            return False  # nobody takes them: no exit value, the fault is the one exit
        registers = self.general_registers(mode)
        mask = U64 if mode == 64 else 0xFFFFFFFF
        registers.update(rip=rip & mask, rflags=self.reg("rflags"), cs=self.reg("cs"),
                         ss=self.reg("ss"), **self.selectors())  # fmt: skip
        # Unicorn does not pass the error code to the hook (U18): a GuestException says None for
        # the vectors that push one, 0 for the others.
        error_code = None if vector in ERROR_CODE_VECTORS else 0
        exit_ = GuestException(vector, error_code, self.reg("cr2"), mode, rip & mask, registers,
                               paging)  # fmt: skip
        outcome = self.on_exit(exit_)
        if isinstance(outcome, Unhandled):
            return False
        if isinstance(outcome, Handled):
            # Delivered: the CPU must not take the next fault for a double fault (U61).
            forget_exception(self.uc)
        self._apply(outcome)
        return True
