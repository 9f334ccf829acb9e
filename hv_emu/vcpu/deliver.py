"""Injecting one event: the right table for the mode, and the escalation when delivery faults.

Models: the event-delivery step of VM entry (VT-x injects the event in the VM-entry
interruption-information field; KVM's ``kvm_multiple_exception`` merges a fault raised while
delivering into a #DF or a triple fault). One call delivers an event through the IVT
(``ivt.py``) or the IDT (``idt.py``); when that faults, the fault is merged with the event by the
SDM's double-fault table (``injection.merge``) and delivered instead, at most
``MAX_DELIVERIES`` times; a fault while delivering #DF is a triple fault (a PC resets; hv-emu
ends the run and says so).

Follows: Intel SDM vol. 3A 6.15 (interrupt 8, table 6-5) and 6.12; docs/UNICORN.md U39, U61 (the
CPU's ``old_exception`` is forgotten after each delivery, or the next fault would come back as
#DF).

Leaves out: events queued behind one another (one event per VM entry, as VT-x), NMI-window
and interrupt-window exits (the run loop checks IF and the shadow before it injects).

Guest controls: the tables and the stacks; the result is always a delivery, a refusal (a
report) or a triple fault, after a bounded number of attempts.
"""

from __future__ import annotations

from dataclasses import dataclass

from hv_emu.vcpu import idt, ivt
from hv_emu.vcpu.engine import Engine
from hv_emu.vcpu.faults import exception_name
from hv_emu.vcpu.hidden import HiddenState
from hv_emu.vcpu.injection import MAX_DELIVERIES, Delivered, Event, Refused, merge


@dataclass(frozen=True)
class Injection:
    """What one injection did: the events tried in order (the original first, then any fault
    or #DF it became) and how it ended: ``Delivered``, ``Refused`` or ``None`` (a triple
    fault)."""

    events: tuple[Event, ...]
    result: Delivered | Refused | None

    @property
    def triple_fault(self) -> bool:
        return self.result is None


def guest_has_handler(cpu: Engine, hidden: HiddenState, mode: int, vector: int) -> bool:
    """Whether the guest could take ``vector`` itself: a non-zero IVT entry in real mode, an IDT
    loaded (limit not 0) otherwise. The hidden state must be loaded."""
    if not hidden.usable:
        return False
    return ivt.usable(cpu, hidden, vector) if mode == 16 else idt.usable(hidden)


def inject(cpu: Engine, hidden: HiddenState, event: Event) -> Injection:
    """Deliver ``event`` now (at a VM-entry boundary: not inside ``emu_start``)."""
    tried: list[Event] = []
    current = event
    for _ in range(MAX_DELIVERIES):
        tried.append(current)
        if current.cr2 is not None:
            cpu.set_reg("cr2", current.cr2)  # the CPU sets CR2 when it raises the #PF
        hidden.load()
        mode = cpu.mode()
        if mode == 16:
            if current is not event and not ivt.usable(cpu, hidden, current.vector):
                what = exception_name(current.vector)
                return Injection(tuple(tried), Refused(
                    f"{what} while delivering vector {event.vector:#x}: no handler in the IVT"))
            attempt = ivt.deliver(cpu, hidden, current)
        else:
            attempt = idt.deliver(cpu, hidden, current)
        if isinstance(attempt, Event):
            if current.software:
                # A fault while delivering INT n: it returns to the INT itself (a fault).
                rip = cpu.reg("rip") - current.instruction_length
                cpu.set_reg("rip", rip & 0xFFFF if mode == 16 else rip)
            merged = merge(current, attempt)
            if merged is None:
                return Injection(tuple(tried), None)
            current = merged
            continue
        if isinstance(attempt, Delivered):
            hidden.forget_exception()
            hidden.clear_shadow()
            hidden.store()
        return Injection(tuple(tried), attempt)
    return Injection(tuple(tried), None)
