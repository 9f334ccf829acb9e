"""What the run recorder keeps: marks, the summary by exit reason, the final screen, and the few
words each kind of exit is drawn with.

Models: the record format of a flight recorder (``perf kvm record``'s samples): one ``Mark`` per
thing that happened, on a lane (``LANES``), with its guest time, exit ordinal, host time, a short
label and a few named details; ``ReasonSummary`` (``perf kvm stat``'s per-reason counts and
times); ``Screen`` (the guest's final text screen). ``recorder.py`` fills them, ``report_html.py``
draws them.

Follows: Intel SDM vol. 3C 24.8.3 for the interruption types of the VM-entry
interruption-information field (bits 10:8, ``INTERRUPTION_TYPES``) and vol. 3A table 6-1 for the
exception mnemonics (``EXCEPTIONS``).

Leaves out: register dumps and instructions (``--trace`` has them).

Guest controls: every value a mark carries (ports, vectors, RIPs, fault texts): each string is cut
to ``MAX_TEXT`` characters here and escaped where it is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hv_emu.exits import (
    Cpuid,
    Exit,
    Failed,
    Fault,
    FirmwareCall,
    Halt,
    Hypercall,
    Outcome,
    PortIn,
    PortOut,
    SoftwareInterrupt,
    Stopped,
    StopRequest,
    Syscall,
    Timeout,
    Unhandled,
)

#: The lanes of the timeline, top to bottom.
LANES = ("exit", "injected", "hypercall", "disk_write", "detection", "update")
#: Marks kept per lane by default (the HTML page stays a few MiB at most).
DEFAULT_MAX_MARKS = 2000
#: The longest string a mark keeps (a label or a detail's value), in characters.
MAX_TEXT = 200
#: The most bytes of debug-console output kept for the report.
MAX_CONSOLE = 64 * 1024
#: Distinct labels a lane counts past its marks; the rest are counted under ``OTHER_LABELS``.
MAX_LABELS = 256
OTHER_LABELS = "(other labels)"
#: VM-entry interruption-information field, bits 10:8 (SDM vol. 3C 24.8.3); 1 is reserved.
INTERRUPTION_TYPES = {
    0: "external interrupt",
    2: "NMI",
    3: "hardware exception",
    4: "software interrupt",
    5: "privileged software exception",
    6: "software exception",
    7: "other event",
}
#: Exception mnemonics by vector (SDM vol. 3A, table 6-1).
EXCEPTIONS = {
    0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
    10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC",
    19: "#XM", 20: "#VE", 21: "#CP",
}  # fmt: skip

Detail = tuple[str, str]


def cut(text: object) -> str:
    """``text`` as a string of at most ``MAX_TEXT`` characters (an ellipsis marks a cut)."""
    s = str(text)
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "\u2026"


@dataclass(frozen=True)
class Mark:
    """One thing that happened: on ``lane``, at guest time ``t``, during (or just before) exit
    ``exit_no``; an exit's own mark carries its ordinal."""

    lane: str
    t: float
    exit_no: int
    host: float  # seconds since the recorder was built
    label: str  # what it was, in a few words: the exit reason, the signature, the hypercall
    details: tuple[Detail, ...] = ()

    def detail(self, name: str) -> str | None:
        return dict(self.details).get(name)


@dataclass
class ReasonSummary:
    """Exits of one reason: how many, and their handling time (seconds)."""

    count: int = 0
    total: float = 0.0
    least: float = float("inf")
    most: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.least = min(self.least, seconds)
        self.most = max(self.most, seconds)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True)
class Screen:
    """The final text screen: ``cells`` is character, attribute, character, ... row-major."""

    cols: int
    rows: int
    cells: bytes


def exit_details(exit_: Exit) -> tuple[Detail, ...]:
    """The few facts that say what this exit was (``--trace`` has the registers)."""
    match exit_:
        case Hypercall(nr=nr, rip=rip):
            return (("rax", f"{nr:#x}"), ("rip", f"{rip:#x}"))
        case PortIn(port=port, size=size):
            return (("port", f"{port:#x}"), ("size", str(size)))
        case PortOut(port=port, size=size, value=value):
            return (("port", f"{port:#x}"), ("size", str(size)), ("value", f"{value:#x}"))
        case Cpuid(leaf=leaf, subleaf=subleaf):
            return (("leaf", f"{leaf:#x}"), ("subleaf", f"{subleaf:#x}"))
        case FirmwareCall(vector=vector, rip=rip, registers=regs):  # the BIOS service asked for
            return (("vector", f"{vector:#x}"), ("ah", f"{regs.get('rax', 0) >> 8 & 0xFF:#x}"),
                    ("rip", f"{rip:#x}"))  # fmt: skip
        case SoftwareInterrupt(vector=vector, rip=rip):
            return (("vector", f"{vector:#x}"), ("rip", f"{rip:#x}"))
        case Syscall(registers=regs, rip=rip):
            return (("rax", f"{regs.get('rax', 0):#x}"), ("rip", f"{rip:#x}"))
        case Halt(mode=mode, rip=rip) | Timeout(mode=mode, rip=rip) | StopRequest(
            mode=mode, rip=rip
        ):
            return (("mode", str(mode)), ("rip", f"{rip:#x}"))
        case Fault(kind=kind, vector=vector, cs=cs, rip=rip, address=address):
            return (("fault", cut(kind)), ("vector", str(vector)), ("cs:rip", f"{cs:04x}:{rip:x}"),
                    ("address", f"{address:#x}"))  # fmt: skip
    return ()


def outcome_text(outcome: Outcome) -> str:
    match outcome:
        case Stopped(reason=reason):
            return cut(f"stop: {reason}")
        case Failed(fault=fault):
            return cut(f"fault: {fault.kind}")
        case Unhandled(why=why):
            return cut(f"unhandled: {why}")
    return "handled"


def event_text(value: object) -> str:
    """An event field as text: lists joined by commas, mappings as ``k=v``."""
    if isinstance(value, list):
        return cut(",".join(str(v) for v in value))
    if isinstance(value, Mapping):
        return cut(" ".join(f"{k}={v}" for k, v in value.items()))
    return cut(value)


