"""Event injection: an interrupt or exception handed to the guest at VM entry, as VT-x does it.

Models: the VM-entry interruption-information field of VT-x (vector, type, error code valid
and its value) and what the CPU does with it at VM entry: deliver the event through the guest's
IVT (real mode, ``ivt.py``) or IDT (protected and long mode, ``idt.py``), and when that delivery
itself faults, combine the two as the SDM's double-fault table says (benign, contributory and
page-fault classes: contributory then contributory, or #PF then #PF or contributory, is a #DF;
a fault while delivering #DF is a triple fault, which shuts the CPU down). Also the event types'
rules: only software ``INT n``, ``INT3`` and ``INTO`` check the gate's DPL, only hardware
exceptions push an error code, and the EXT bit of a selector error code says the original event
came from outside the program.

Follows: Intel SDM vol. 3A 6.3 (sources of interrupts), 6.12 (delivery), 6.13 (error codes),
6.15 (exception classes, table 6-5) and vol. 3C 24.8.3 (VM-entry interruption-information
field: type 0 external interrupt, 2 NMI, 3 hardware exception, 4 software interrupt, 5
privileged software exception, 6 software exception). KVM's ``kvm_multiple_exception`` (the same
double-fault merge in a VMM). docs/UNICORN.md U18, U39, U40 (which error codes are exact).

Leaves out: task switches (a task gate is refused with a report), virtual-8086 mode, #MC, SMIs,
the vectors 21 (#CP) and up as anything but plain vectors, nested events from a handler of the
hypervisor itself.

Guest controls: the tables the events go through and every register pushed; this module bounds
the escalation (at most six deliveries per event, then a triple fault) and returns either a
delivery, an escalation or a report, never an exception of Python's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class EventType(IntEnum):
    """The type field (bits 10:8) of VT-x's interruption-information field."""

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


#: Vectors whose hardware exception pushes an error code (SDM table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
DOUBLE_FAULT = 8
GENERAL_PROTECTION = 13
NOT_PRESENT = 11
STACK_FAULT = 12
INVALID_TSS = 10
PAGE_FAULT = 14
_CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
#: Deliveries tried for one event before the CPU is declared shut down (benign, contributory,
#: page fault, #DF and one more: the longest chain the double-fault table allows).
MAX_DELIVERIES = 6


@dataclass(frozen=True)
class Event:
    """One event to inject: ``vector``, ``type``, the error code (``None``: none pushed), for
    a #PF the faulting linear address the CPU puts in CR2 on delivery, and for a software event
    the length of the instruction that raised it (VT-x's VM-entry instruction-length field:
    RIP is past it, and a fault while delivering it returns to the instruction itself)."""

    vector: int
    type: EventType
    error_code: int | None = None
    cr2: int | None = None
    instruction_length: int = 0

    @property
    def software(self) -> bool:
        """INT n, INT3, INTO or INT1: RIP already points after the instruction."""
        return self.type in (EventType.SOFTWARE_INTERRUPT, EventType.SOFTWARE_EXCEPTION,
                             EventType.PRIVILEGED_SOFTWARE_EXCEPTION)  # fmt: skip

    @property
    def external(self) -> bool:
        """The EXT bit of an error code raised while delivering this event (SDM 6.13)."""
        return self.type in (EventType.EXTERNAL_INTERRUPT, EventType.NMI,
                             EventType.HARDWARE_EXCEPTION)  # fmt: skip

    @property
    def checks_gate_dpl(self) -> bool:
        """INT n, INT3 and INTO are refused by a gate of lower privilege (SDM 6.12.1.1)."""
        return self.type in (EventType.SOFTWARE_INTERRUPT, EventType.SOFTWARE_EXCEPTION)

    def interruption_info(self) -> int:
        """The 32-bit VM-entry interruption-information field: vector, type, error-code valid,
        valid (SDM vol. 3C table 24-16)."""
        info = (self.vector & 0xFF) | (int(self.type) << 8) | (1 << 31)
        return info | (1 << 11) if self.error_code is not None else info

    def describe(self) -> str:
        """The event in VT-x terms, as ``--trace`` prints it."""
        text = f"vector={self.vector:#04x} type={self.type.label}"
        if self.error_code is not None:
            text += f" error_code={self.error_code:#x}"
        if self.cr2 is not None:
            text += f" cr2={self.cr2:#x}"
        return text


def hardware_exception(vector: int, error_code: int = 0, cr2: int | None = None) -> Event:
    """A CPU exception: with its error code when the vector has one."""
    code = error_code if vector in ERROR_CODE_VECTORS else None
    return Event(vector, EventType.HARDWARE_EXCEPTION, code, cr2)


def selector_error(index: int, *, idt: bool, external: bool) -> int:
    """A selector error code (SDM 6.13): bit 0 EXT, bit 1 IDT, bits 15:3 the index."""
    return ((index & 0x1FFF) << 3) | (2 if idt else 0) | (1 if external else 0)


def _klass(vector: int) -> str:
    if vector == PAGE_FAULT:
        return "page fault"
    return "contributory" if vector in _CONTRIBUTORY else "benign"


def merge(first: Event, second: Event) -> Event | None:
    """What the CPU delivers when ``second`` faults while ``first`` is delivered: ``second``
    (handled serially), a #DF, or ``None`` for a triple fault (SDM table 6-5)."""
    if first.type is EventType.HARDWARE_EXCEPTION and first.vector == DOUBLE_FAULT:
        return None
    if first.type is not EventType.HARDWARE_EXCEPTION:
        return second
    one, two = _klass(first.vector), _klass(second.vector)
    if (one, two) in (("contributory", "contributory"), ("page fault", "contributory"),
                      ("page fault", "page fault")):  # fmt: skip
        return hardware_exception(DOUBLE_FAULT, 0)
    return second


@dataclass(frozen=True)
class Refused:
    """An event that cannot be delivered and ends the run with ``reason`` (no usable handler,
    a task gate, a stack outside RAM)."""

    reason: str


@dataclass(frozen=True)
class Delivered:
    """The event went through its gate: the guest's handler runs next, at ``cs``:``rip``."""

    cs: int
    rip: int


#: What one delivery attempt gives: done, a fault to merge (``merge``), or a refusal.
Attempt = Delivered | Event | Refused

#: RFLAGS bits delivery reads or clears (SDM 2.3).
TF = 1 << 8
IF = 1 << 9
NT = 1 << 14
RF = 1 << 16
VM = 1 << 17
AC = 1 << 18
