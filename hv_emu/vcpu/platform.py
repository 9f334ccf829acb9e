"""The vCPU's side of the interrupt controller and the timer: INTR, INTA, the interrupt window,
guest time while the guest runs, and HLT waiting for the next interrupt.

Models: what VT-x gives a VMM around event injection. At each VM entry the run loop asks the
interrupt controller whether INTR is up; if the guest can take an interrupt (RFLAGS.IF = 1 and no
STI / MOV SS shadow) it acknowledges it (INTA: the vector) and injects it as an external
interrupt; if not, it asks to be told when the guest can ("interrupt-window exiting"). Guest
time (``devices/clock.py``) moves with the code the guest runs while a timer is armed, and a
deadline that passes stops the guest so the timer can fire. HLT with IF = 1 waits: virtual time
jumps to the next deadline; with nothing armed and nothing pending, nothing can ever wake the
vCPU and the run ends as a HLT always did.

Follows: Intel SDM vol. 3C 24.6.2 (interrupt-window exiting), 26.3.1.5 (event injection needs
IF = 1 and no blocking by STI or MOV SS for external interrupts), 6.8.3 (the shadow); KVM's
``kvm_cpu_has_injectable_intr`` / ``enable_irq_window``; QEMU's ``-icount`` (time from an
instruction budget). docs/UNICORN.md U41 (what ``count=`` and a block hook cost, and why only
while a timer is armed or a window is open).

While a timer is armed, each ``emu_start`` gets an instruction budget (``count=``) up to the next
deadline; each return moves guest time by the instructions that ran (Unicorn's own counter,
docs/UNICORN.md U65), and an exit handled in the run loop by ``EXIT_INSTRUCTIONS`` more (the ROM
code, device or delivery the host did in no guest time; docs/DEVICES.md, guest time), so time is
deterministic and a guest that polls through exits still reaches its deadlines. An interrupt due
at an ``INT n`` the guest could be interrupted before is taken first (the ``INT n`` runs again
after it). With no timer armed and nothing pending there is no budget and no cost
(docs/UNICORN.md U41). No hook tells of STI, POPF or IRET
setting IF (docs/UNICORN.md U47), so while IF = 0 holds an interrupt off the budget between two
looks at IF doubles up to ``WINDOW_BUDGET_MAX``: a guest that keeps IF = 0 runs at full budget
speed, and an STI is noticed within that many instructions.

Leaves out: NMIs (no source), the APIC, more than one interrupt controller, SMIs.

Guest controls: IF and the shadow (when it can be interrupted), what it arms (deadlines) and
when it halts. The idle wait is bounded: at most ``MAX_IDLE_DEADLINES`` deadlines that raise no
interrupt (a masked timer) before the HLT ends the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import unicorn

from hv_emu.vcpu.hidden import HiddenState
from hv_emu.vcpu.injection import IF, Event, EventType

#: Timer deadlines an idle HLT skips through without an interrupt before it ends the run.
MAX_IDLE_DEADLINES = 64
#: Guest nanoseconds per instruction run while a timer is armed (a guest CPU of 100 MIPS).
NS_PER_INSTRUCTION = 10
#: Instructions run before the first look at IF again while an interrupt waits for the guest
#: to take it (and between two looks while the STI / MOV SS shadow holds it off).
WINDOW_BUDGET = 10_000
#: While IF stays 0 the budget between two looks doubles up to this many instructions: a guest
#: that keeps interrupts off pays an entry per ~1M instructions, not per 10,000; an STI is noticed
#: at most this many instructions (about 10.5 ms of guest time) after it ran.
WINDOW_BUDGET_MAX = 1 << 20
#: Guest instructions an exit costs that ends ``emu_start`` early and is handled in the run loop
#: (a BIOS service, a host write of guest RAM, an INT n or exception to deliver): the work the
#: ROM code, the device or the CPU's own delivery would have done meanwhile, 10 µs of guest time
#: (docs/DEVICES.md, guest time). Deterministic: the same exits cost the same in every run.
EXIT_INSTRUCTIONS = 1000


class InterruptController(Protocol):
    def pending(self) -> bool: ...

    def acknowledge(self) -> int: ...


class Timer(Protocol):
    def next_deadline(self) -> int | None: ...

    def run_until(self, now: int) -> None: ...


class Clock(Protocol):
    def now(self) -> int: ...

    def advance(self, ns: int) -> None: ...

    def skip_to(self, deadline: int) -> None: ...


class Platform:
    """Mixed into the vCPU: the machine sets ``pic``, ``timer`` and ``clock``."""

    uc: unicorn.Uc
    hidden: HiddenState
    pending_event: Event | None
    _emulating: bool
    _in_port_in: bool
    _resume: bool
    #: RIP of the instruction whose hook first asked this entry to end early (U12).
    _stop_pc: int | None = None

    def __init__(self) -> None:
        self.pic: InterruptController | None = None
        self.timer: Timer | None = None
        self.clock: Clock | None = None
        #: Instructions the next ``emu_start`` may run (``count=``): set while a timer is armed
        #: or an interrupt waits for its window, else ``None`` (no count: full speed).
        self.budget: int | None = None
        #: The budget of the next entry while IF = 0 holds an interrupt off: doubled at each
        #: such entry up to ``WINDOW_BUDGET_MAX``, back to ``WINDOW_BUDGET`` once none waits.
        self.window_budget = WINDOW_BUDGET
        #: Called at each VM entry before INTR is looked at: devices whose line follows state
        #: another thread changes (the NIC's receive queue) bring it up to date here.
        self.entry_hooks: list[Callable[[], None]] = []

    def reg(self, name: str) -> int:  # provided by the engine
        raise NotImplementedError

    def set_reg(self, name: str, value: int) -> None:  # provided by the engine
        raise NotImplementedError

    def kick(self) -> None:
        """Leave ``emu_start`` soon (end of the translation block) so the run loop looks at
        INTR and the timers again; never from an IN hook (docs/UNICORN.md U11): an interrupt
        raised there is seen at the next exit."""
        if self._emulating and not self._in_port_in:
            if self._stop_pc is None:
                self._stop_pc = self.reg("rip")  # where the rest of the block starts (U12)
            self._resume = True
            self.uc.emu_stop()

    def sync_platform(self) -> None:
        """At VM entry: fire due timers, take an interrupt the guest can take, and set the
        instruction budget of the next entry: up to the next timer deadline, or a short one
        while an interrupt waits for its window (IF = 0 or the shadow)."""
        for hook in self.entry_hooks:
            hook()
        timer, clock = self.timer, self.clock
        deadline = None
        if timer is not None and clock is not None:
            timer.run_until(clock.now())
            deadline = timer.next_deadline()
        window = None  # the budget of an open interrupt window
        pic = self.pic
        self._interrupt_before_int_n()
        if self.pending_event is None and pic is not None and pic.pending():
            if self.reg("rflags") & IF:
                self.hidden.load()
                if self.hidden.interrupt_shadow:
                    window = WINDOW_BUDGET  # over after one instruction
                else:
                    self.pending_event = Event(pic.acknowledge(), EventType.EXTERNAL_INTERRUPT)
            else:
                # IF = 0: no window until STI, POPF, IRET or a mode change sets IF, which no
                # hook tells us of (docs/UNICORN.md U47): look again after a budget that doubles
                # while IF stays 0, bounded by WINDOW_BUDGET_MAX.
                window = self.window_budget
                self.window_budget = min(2 * window, WINDOW_BUDGET_MAX)
        if window is None:
            self.window_budget = WINDOW_BUDGET
        budget = None
        if deadline is not None and clock is not None:
            budget = max(1, (deadline - clock.now()) // NS_PER_INSTRUCTION)
        if window is not None:
            budget = min(budget or window, window)
        self.budget = budget

    def _interrupt_before_int_n(self) -> None:
        """An ``INT n`` waits to be delivered (RIP past it) while INTR is up and the guest can
        take an interrupt: the interrupt came first, at the boundary before the ``INT n`` (it
        was raised before it: the ``INT n`` raises none, and a timer deadline that passed during
        the entry passed before the ``INT n`` that ended it). Undo the ``INT n`` (nothing of it has
        happened: its delivery is this entry's work) so the interrupt is taken, and the
        ``INT n`` runs again after the handler's IRET. Without this a guest that polls a BIOS
        service in a loop, IF = 1 between the calls and IF = 0 inside them, would reach an entry
        with IF = 1 only at its ``INT n`` and never take the timer's interrupt."""
        event, pic = self.pending_event, self.pic
        if (event is None or event.type is not EventType.SOFTWARE_INTERRUPT
                or not event.instruction_length or pic is None or not pic.pending()
                or not self.reg("rflags") & IF):  # fmt: skip
            return
        self.hidden.load()
        if self.hidden.interrupt_shadow:
            return
        self.set_reg("rip", self.reg("rip") - event.instruction_length)
        self.pending_event = None

    def budget_spent(self, instructions: int) -> None:
        """The guest ran ``instructions`` of its budget: its time moved on by that much."""
        if self.clock is not None:
            self.clock.advance(instructions * NS_PER_INSTRUCTION)

    def charge_entry(self, ran: int | None, *, early: bool) -> None:
        """After a budgeted ``emu_start`` (``ran``: the instructions it ran, docs/UNICORN.md U65;
        ``None``: no budget, or no counter): charge them, and ``EXIT_INSTRUCTIONS`` more when an
        exit ended it ``early`` (stopped it to be handled in the run loop)."""
        if ran is None:
            return
        self.budget_spent(ran + (EXIT_INSTRUCTIONS if early else 0))

    def interrupt_pending(self) -> bool:
        """Whether the interrupt controller has an interrupt waiting for the vCPU."""
        return self.pic is not None and self.pic.pending()

    def wait_for_interrupt(self, give_up: threading.Event) -> bool:
        """HLT with IF = 1: whether an interrupt is (or becomes) pending, after skipping guest
        time to timer deadlines; False when nothing can wake the vCPU."""
        pic, timer, clock = self.pic, self.timer, self.clock
        if pic is None:
            return False
        for _ in range(MAX_IDLE_DEADLINES):
            if pic.pending() or give_up.is_set():
                return True
            if timer is None or clock is None:
                return False
            due = timer.next_deadline()
            if due is None:
                return False
            clock.skip_to(due)
            timer.run_until(clock.now())
        return pic.pending()
