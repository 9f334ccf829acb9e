"""The run recorder: what happened during a run, over guest time, kept in bounded memory.

Models: the flight recorder behind ``hv-emu run --report`` (drawn by ``report_html.py``), in the
manner of ``perf kvm record`` over KVM's tracepoints (``kvm_exit``, ``kvm_hypercall``,
``kvm_inj_virq``, ``kvm_inj_exception``): one *mark* per thing that happened, on one of six lanes
(``LANES``): VM exits, injected events, hypercalls, disk writes, detections and updates. It is fed
from four places, none of which knows it: the machine's exit observer (``on_exit``, after every
exit), the event log's listeners (``on_event``: detections, updates, the network cut), the disk's
write watcher (``on_disk_write``: every write and the inspection policy's verdict) and, for event
injection, the vCPU's injection watcher (``on_injection``, ``Vcpu.injection_watchers``: every
event tried at VM entry) through ``record_injection``.
At the end of the run ``capture_screen`` and ``capture_console`` keep the guest's final text screen
(characters and attribute bytes) and what it printed on the debug console.

Guest time: each mark carries ``t`` from the ``clock`` callable given to the recorder, an exit
ordinal (``exit_no``) and the host seconds since the recorder was built (``host``). An exit's mark
carries its own ordinal (the n-th exit is n). Every other mark carries the ordinal of the first
exit not yet finished when it happened: the exit being handled (the machine calls its exit
observers after the handler returns, so a disk write, a detection or an update done by exit n's
handler reaches the recorder while only n - 1 exits are counted: it is stamped n), or, for what
happens between two exits (an event injected at VM entry, a compile finishing on its own thread),
the exit that comes next. Without a clock, ``t`` is that ordinal (guest time measured in exits,
deterministic from run to run); a clock of guest time, when there is one, is passed as ``clock``
with its unit as ``clock_unit`` (``hv-emu run`` passes the machine's ``GuestClock``, virtual by
default: it moves only while a timer is armed or an interrupt waits for IF, ``devices/clock.py``).
The axis a reader should draw on (``when``, ``t_max``, ``unit``) is that clock if a timer was
armed during the run (``timed``; ``timer_armed`` says so: ``hv-emu run`` passes the PIT's
``armed``), else the exit ordinal: the clock's value does not decide it, since the budgets that
hold a pending interrupt for IF = 1 move a few instructions' time with no timer (a 64-bit guest
that writes the disk with IF = 0 and IRQ14 pending), and a run without a timer drawn on that
clock would stand at one point. Without ``timer_armed``, a clock that moved counts as a timer.

Follows: Intel SDM vol. 3C, appendix C for exit reason names (``trace.REASONS``, as ``--trace``
prints them) and 24.8.3 for the interruption types of the VM-entry interruption-information field
(bits 10:8, ``INTERRUPTION_TYPES``); docs/EVENTS.md for the events it reads.

Bounds: every lane keeps its first ``max_marks`` marks and counts the rest by label (``dropped``;
at most ``MAX_LABELS`` labels a lane, the rest counted as one);
the exit that ended the run is always kept (``final``). The summary by exit reason
(``reasons``: count, total, min and max handling time) counts every exit, and there are only as many
reasons as exit kinds. Every string is cut to ``MAX_TEXT`` characters; the console to
``MAX_CONSOLE`` bytes; the screen is 80x25 cells. So memory is bounded by ``max_marks`` whatever
the guest does.

Leaves out: register dumps and instructions of each exit (``--trace`` has them), reads from the
disk, and events of kinds that are not drawn (``receiver_stats``, ``hypercall``: the exit says it).

Guest controls: how many marks there are and every value in them (ports, vectors, LBAs, return
codes; signature names come from a database an update may bring); never the lanes, the bounds or
the summary's shape. Strings are kept as text here and escaped where they are drawn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hv_emu.debug.marks import (
    DEFAULT_MAX_MARKS,
    EXCEPTIONS,
    INTERRUPTION_TYPES,
    LANES,
    MAX_CONSOLE,
    MAX_LABELS,
    MAX_TEXT,
    OTHER_LABELS,
    Detail,
    Mark,
    ReasonSummary,
    Screen,
    cut,
    event_text,
    exit_details,
    outcome_text,
)
from hv_emu.debug.trace import REASONS
from hv_emu.devices.storage.observer import Action, StorageWrite, Verdict
from hv_emu.devices.vga import CELL, VgaText
from hv_emu.events import Event
from hv_emu.exits import Exit, Fault, Halt, Handled, Hypercall, Outcome, StopRequest, Timeout
from hv_emu.hypercalls.builtin import BUILTINS
from hv_emu.vcpu.deliver import Injection
from hv_emu.vcpu.injection import Delivered, Refused

#: Events drawn, by kind: the lane each goes to.
EVENT_LANES = {
    "detection": "detection",
    "network_cut": "detection",
    "update_accepted": "update",
    "update_rejected": "update",
    "database_active": "update",
    "database_failed": "update",
}
#: The exits that end a run: the last one is kept (``final``) even past the cap.
_ENDINGS = frozenset({Halt, Fault, Timeout, StopRequest})
#: The return codes each built-in hypercall declares (a name gets its code's name only if declared).
_DECLARED = {spec.name: spec.returns for spec in BUILTINS}


@dataclass
class RunRecorder:
    """Marks on lanes, the summary by exit reason, the final screen; see the module docstring."""

    hypercall_name: Callable[[int], str | None] = lambda nr: None
    clock: Callable[[], float] | None = None
    clock_unit: str = "exits"
    #: Whether a timer was armed during the run (then the axis is ``clock``; module docstring).
    timer_armed: Callable[[], bool] | None = None
    max_marks: int = DEFAULT_MAX_MARKS
    host_clock: Callable[[], float] = time.perf_counter
    marks: dict[str, list[Mark]] = field(default_factory=lambda: {lane: [] for lane in LANES})
    #: Per lane, marks not kept, counted by label (an exit's reason, a detection's signature...).
    dropped: dict[str, dict[str, int]] = field(default_factory=lambda: {ln: {} for ln in LANES})
    reasons: dict[str, ReasonSummary] = field(default_factory=dict)
    exits: int = 0
    final: Mark | None = None
    screen: Screen | None = None
    console: bytes = b""
    console_total: int = 0

    def __post_init__(self) -> None:
        if self.max_marks < 0:
            raise ValueError(f"max_marks must be >= 0, not {self.max_marks}")
        self._t0 = self.host_clock()
        self._lock = threading.Lock()  # exits come from the vCPU, events from other threads too

    # ------------------------------------------------------------------ the feeds
    def on_exit(self, exit_: Exit, outcome: Outcome, seconds: float) -> None:
        """The machine's exit observer (``Machine.exit_observers``). Once the exit lane is full,
        an exit costs a count and a sum: nothing is formatted for a mark that is not kept."""
        kind = type(exit_)
        reason = REASONS.get(kind) or kind.__name__
        ending = kind in _ENDINGS
        with self._lock:
            self.exits += 1
            summary = self.reasons.get(reason)
            if summary is None:
                summary = self.reasons[reason] = ReasonSummary()
            summary.add(seconds)
            if ending or len(self.marks["exit"]) < self.max_marks:
                details = (*exit_details(exit_), ("action", outcome_text(outcome)))
                mark = self._add("exit", reason, details, self.exits)
                if ending:
                    self.final = mark
            else:
                dropped = self.dropped["exit"]
                dropped[reason] = dropped.get(reason, 0) + 1
            if isinstance(exit_, Hypercall):
                self._add("hypercall", *self._hypercall(exit_, outcome), self.exits)

    def on_event(self, event: Event) -> None:
        """An ``EventLog`` listener: detections, updates and the network cut become marks."""
        kind = str(event.get("event"))
        lane = EVENT_LANES.get(kind)
        if lane is None:
            return
        fields = {k: v for k, v in event.items() if k not in ("event", "t")}
        match kind:
            case "detection":
                label = str(fields.get("signature"))
            case "network_cut":
                label = "network cut"
            case "update_accepted":
                label = f"v{fields.get('db_version')} accepted"
            case "update_rejected":
                label = f"refused: {fields.get('error')}"
            case "database_active":
                label = f"v{fields.get('db_version')} in force"
            case _:
                label = f"v{fields.get('db_version')} failed to compile"
        details = tuple((cut(k), event_text(v)) for k, v in fields.items())
        with self._lock:
            self._add(lane, label, details)

    def on_disk_write(self, write: StorageWrite, verdict: Verdict) -> None:
        """The disk's write watcher (``Machine.watch_disk_writes``): the write and its verdict."""
        what = {Action.COMMIT: "written", Action.COMMIT_MODIFIED: "written modified",
                Action.REFUSE: "refused"}[verdict.action]  # fmt: skip
        label = f"LBA {write.lba} +{write.sector_count}"
        details: tuple[Detail, ...] = (
            ("lba", str(write.lba)), ("sectors", str(write.sector_count)),
            ("transport", write.transport), ("command", f"{write.command:#04x}"), ("verdict", what),
        )  # fmt: skip
        if verdict.reason:
            details += (("reason", cut(verdict.reason)),)
        with self._lock:
            self._add("disk_write", label, details)

    def record_injection(self, vector: int, interruption_type: int | str,
                         error_code: int | None = None,
                         extra: tuple[Detail, ...] = ()) -> None:  # fmt: skip
        """An event injected into the guest (VT-x: the VM-entry interruption-information field):
        ``vector`` 0-255, its type (a number of ``INTERRUPTION_TYPES`` or its name), the error
        code delivered with it, if any, and ``extra`` details (where, how it went). For the code
        that injects (``on_injection``); ``ValueError`` on a bad call."""
        if not 0 <= vector <= 255:
            raise ValueError(f"vector must be 0..255, not {vector}")
        if isinstance(interruption_type, int):
            if interruption_type not in INTERRUPTION_TYPES:
                raise ValueError(f"no interruption type {interruption_type}")
            kind = INTERRUPTION_TYPES[interruption_type]
        elif interruption_type in INTERRUPTION_TYPES.values():
            kind = interruption_type
        else:
            raise ValueError(f"no interruption type {interruption_type!r}")
        name = EXCEPTIONS.get(vector) if kind.endswith("exception") else None
        label = f"{name} ({vector})" if name else f"vector {vector:#04x}"
        details: tuple[Detail, ...] = (("vector", str(vector)), ("type", kind))
        if error_code is not None:
            details += (("error_code", f"{error_code:#x}"),)
        details += extra
        with self._lock:
            self._add("injected", label, details)

    def on_injection(self, injection: Injection, cs: int, rip: int) -> None:
        """The vCPU's injection watcher (``Vcpu.injection_watchers``): each event tried at one VM
        entry (the original, then any fault or #DF delivering it became), interrupted at
        ``cs``:``rip``, and how it ended: the handler it reached, a refusal, a triple fault."""
        last = len(injection.events) - 1
        for n, event in enumerate(injection.events):
            result = injection.result
            if n < last:
                outcome = "faulted while delivered"
            elif isinstance(result, Delivered):
                outcome = f"delivered -> {result.cs:04x}:{result.rip:x}"
            elif isinstance(result, Refused):
                outcome = cut(f"refused: {result.reason}")
            else:
                outcome = "triple fault"
            self.record_injection(event.vector, int(event.type), event.error_code,
                                  (("at", f"{cs:04x}:{rip:x}"), ("result", outcome)))  # fmt: skip

    # ------------------------------------------------------------------ the end of the run
    def capture_screen(self, vga: VgaText) -> None:
        """Keep the guest's text screen as it is now (characters and attributes)."""
        cells = vga.mem.read(vga.base, vga.cols * vga.rows * CELL)
        self.screen = Screen(vga.cols, vga.rows, bytes(cells))

    def capture_console(self, data: bytes) -> None:
        """Keep the first ``MAX_CONSOLE`` bytes of what the guest printed."""
        self.console, self.console_total = bytes(data[:MAX_CONSOLE]), len(data)

    # ------------------------------------------------------------------ reading
    @property
    def timed(self) -> bool:
        """Whether the axis is the clock: one was given and a timer was armed during the run
        (without ``timer_armed``: the clock moved)."""
        if self.clock is None:
            return False
        if self.timer_armed is not None:
            return self.timer_armed()
        return any(m.t for lane in self.marks.values() for m in lane)

    @property
    def unit(self) -> str:
        """What the axis counts: the clock's unit, or exits."""
        return self.clock_unit if self.timed else "exits"

    def when(self, mark: Mark, timed: bool | None = None) -> float:
        """Where ``mark`` stands on the axis (``timed``: ``self.timed``, computed once by a
        caller that places many marks)."""
        return mark.t if (self.timed if timed is None else timed) else float(mark.exit_no)

    @property
    def t_max(self) -> float:
        """The latest point on the axis of any kept mark (0 without marks)."""
        timed = self.timed
        times = [self.when(m, timed) for lane in self.marks.values() for m in lane]
        if self.final is not None:
            times.append(self.when(self.final, timed))
        return max(times, default=0.0)

    def total(self, lane: str) -> int:
        """Marks of ``lane`` seen, kept or not."""
        return len(self.marks[lane]) + sum(self.dropped[lane].values())

    # ------------------------------------------------------------------ inside
    def _add(self, lane: str, label: str, details: tuple[Detail, ...],
             ordinal: int | None = None) -> Mark:  # fmt: skip
        """A mark, kept if its lane has room, else counted (``_lock`` held). ``ordinal``: the
        exit's own for an exit's marks; else the exit in progress or next (module docstring)."""
        if ordinal is None:
            ordinal = self.exits + 1
        t = float(ordinal) if self.clock is None else float(self.clock())
        mark = Mark(lane, t, ordinal, self.host_clock() - self._t0, cut(label), details)
        kept = self.marks[lane]
        if len(kept) < self.max_marks:
            kept.append(mark)
        else:
            counts = self.dropped[lane]
            # Labels carry guest values (a hypercall's number, an LBA): past MAX_LABELS distinct
            # ones a lane counts the rest together, so the counts stay bounded too.
            key = mark.label if mark.label in counts or len(counts) < MAX_LABELS else OTHER_LABELS
            counts[key] = counts.get(key, 0) + 1
        return mark

    def _hypercall(self, exit_: Hypercall, outcome: Outcome) -> tuple[str, tuple[Detail, ...]]:
        name = self.hypercall_name(exit_.nr)
        details: tuple[Detail, ...] = (
            ("nr", str(exit_.nr)), ("name", name or "(none)"), ("rbx", f"{exit_.args[0]:#x}"),
            ("rcx", f"{exit_.args[1]:#x}"), ("rdx", f"{exit_.args[2]:#x}"),
        )  # fmt: skip
        if not isinstance(outcome, Handled) or "rax" not in outcome.registers:
            return (name or f"#{exit_.nr}"), (*details, ("result", outcome_text(outcome)))
        rax = outcome.registers["rax"]
        declared = _DECLARED.get(name or "", frozenset())
        code = next((rc.name for rc in declared if rc == rax), None)
        details += (("ret", f"{rax:#x}" + (f" ({code})" if code else "")),)
        if code is not None:
            details += (("rc", code),)
        return f"{name or f'#{exit_.nr}'} -> {code or hex(rax)}", details


__all__ = [
    "DEFAULT_MAX_MARKS", "EXCEPTIONS", "INTERRUPTION_TYPES", "LANES", "MAX_CONSOLE", "MAX_LABELS",
    "MAX_TEXT", "OTHER_LABELS", "Mark", "ReasonSummary", "RunRecorder", "Screen",
]  # fmt: skip
