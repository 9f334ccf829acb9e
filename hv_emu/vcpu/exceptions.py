"""Guest exceptions and INT n as the interrupt hook sees them: who takes each vector.

Models: the exception-bitmap side of VT-x. Every exception and software interrupt reaches
Unicorn's interrupt hook (docs/UNICORN.md U18); here it becomes an event in VT-x's terms
(``error_codes.raised_event``: type, error code, CR2), and one decision, ``_owner``, says who
takes it: the hypervisor (a software INT n it has a handler for, Linux's ``int 0x80`` or a BIOS
model, or one nobody handles: an exit dispatch reports), the guest (it has an IVT entry or an
IDT: the event is kept, ``emu_start`` stopped with RIP where it was (docs/UNICORN.md U44), and
the run loop injects it at the next VM entry, docs/UNICORN.md U39),
or nobody (the one-line fault report, as before delivery existed). An OS personality that takes
exceptions itself (signals) is one more answer of ``_owner``.

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
from hv_emu.exits import Exit, Outcome, SoftwareInterrupt
from hv_emu.memory.walk import PagingState, read_virt
from hv_emu.vcpu.deliver import guest_has_handler
from hv_emu.vcpu.engine import Engine, mode_of
from hv_emu.vcpu.error_codes import raised_event
from hv_emu.vcpu.faults import PAGE_FAULT, exception_name, fault_report
from hv_emu.vcpu.hidden import HiddenState
from hv_emu.vcpu.injection import Event, EventType

INVALID_OPCODE = 6  # #UD


class ExceptionTraps(Engine):
    """The interrupt hook and the ownership of vectors; ``Traps`` provides the rest."""

    hidden: HiddenState
    owned_vectors: Container[int]
    pending_event: Event | None
    _resume: bool
    _stop: Exit | None
    on_exit: Callable[[Exit], Outcome]  # the machine's dispatch, set by Traps

    def _apply(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def _hook_error(self, err: BaseException) -> None:
        raise NotImplementedError

    def _code_at(self, paging: PagingState, pc: int) -> bytes:
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

