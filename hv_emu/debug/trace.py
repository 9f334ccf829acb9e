"""The exit tracer: every VM exit as it happens, and a summary by exit reason at the end.

Models: what ``perf kvm stat live`` / ``perf kvm stat report`` and KVM's ``kvm_exit`` tracepoint
show of a real VMM: for each exit its reason, where the guest was (CS:RIP), the instruction that
trapped, the registers that matter for that reason, what the handler did and how long it took;
then, per reason, how many exits and how much handling time. ``hv-emu run --trace`` prints the
lines on standard error; ``--trace-json FILE`` writes the same facts as JSON lines for tools, one
object per exit: ``t`` (seconds since the tracer started), ``reason``, ``cs``, ``rip`` (of the
trapping instruction), ``instruction`` (disassembled, with its bytes), ``registers`` (name ->
integer), ``action`` and ``seconds`` (time spent handling the exit).

Beside the exits, every event the vCPU injects into the guest at VM entry is a line (and a
record) of reason ``INJECT``, at the CS:RIP it interrupted, in VT-x's terms: ``registers`` holds
``vector``, ``type`` (the interruption type: 0 external interrupt, 2 NMI, 3 hardware exception,
4 software interrupt, 5 privileged software exception, 6 software exception), ``info`` (the
32-bit VM-entry interruption-information field) and, when valid, ``error_code`` and ``cr2``;
``action`` says ``delivered -> CS:RIP`` (the handler), ``refused: ...`` or ``triple fault``, and
``seconds`` is 0. An event that faulted while being delivered is followed by a line per fault it
became (#GP, #DF), as the CPU tried them. Injections are not counted in the summary, which is of
exits only.

Follows: Intel SDM vol. 3C, appendix C for the reason names (``VMCALL``, ``IO_INSTRUCTION``,
``CPUID``, ``HLT``, ``EXCEPTION_NMI``), as ``perf kvm stat`` prints them; the summary's columns
are perf's (samples, their share, the time share, min/max/avg handling time and its spread).

Leaves out: time spent running guest code between exits (Unicorn runs it without a clock), and
exits that are not exits here (memory reads and writes, which Unicorn does not trap).

Guest controls: every value traced (registers, ports, instruction bytes); never the shape of a
line. Instruction bytes are read through the guest's page tables, at most 15 of them, and an
unreadable instruction is traced as such.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from hv_emu.bus import PortIoBus
from hv_emu.errors import GuestFault
from hv_emu.exits import (
    Cpuid,
    Exit,
    Failed,
    Fault,
    FirmwareCall,
    GuestException,
    Halt,
    Handled,
    Hypercall,
    Outcome,
    PortIn,
    PortOut,
    SoftwareInterrupt,
    Stopped,
    StopRequest,
    Syscall,
    Timeout,
    TripleFault,
    Unhandled,
)
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.linux.numbers import call_name
from hv_emu.memory.walk import read_virt
from hv_emu.vcpu import Vcpu
from hv_emu.vcpu.deliver import Injection
from hv_emu.vcpu.disasm import MAX_INSN, disassemble_one
from hv_emu.vcpu.injection import Delivered, Refused

#: Exit reason names, as VT-x numbers them (SDM vol. 3C, appendix C) where there is one.
REASONS: dict[type, str] = {
    Hypercall: "VMCALL",  # basic exit reason 18
    PortIn: "IO_INSTRUCTION",  # 30
    PortOut: "IO_INSTRUCTION",  # 30
    Cpuid: "CPUID",  # 10
    Halt: "HLT",  # 12
    Fault: "EXCEPTION_NMI",  # 0
    TripleFault: "TRIPLE_FAULT",  # 2
    SoftwareInterrupt: "SOFTWARE_INT",  # an INT n; VT-x reports it as reason 0 when intercepted
    FirmwareCall: "FIRMWARE",  # hv-emu's own: a BIOS stub's ud2 (docs/DEVICES.md, the firmware)
    Syscall: "SYSCALL",  # not an exit on VT-x; Unicorn traps it, an OS personality handles it
    GuestException: "EXCEPTION_NMI",  # 0: an exception an OS personality takes (a signal)
    Timeout: "WATCHDOG",  # hv-emu's own: the run took longer than --timeout
    StopRequest: "STOP",  # hv-emu's own: a handler or a debugger asked the run to end
}
#: The reason of an injected event's line: not an exit, the VM entry that delivers an event.
INJECT = "INJECT"
#: Instruction lengths that let the tracer find a trap's instruction when RIP is already past it.
_LENGTH_BEHIND = {Hypercall: 3, SoftwareInterrupt: 2, FirmwareCall: 2, Syscall: 2,
                  Halt: 1}  # fmt: skip
_WIDTH_REASON = 14


#: A system call's name from the registers at the ``SYSCALL``/``INT 0x80`` (``linux/numbers.py``).


@dataclass(frozen=True)
class TracedExit:
    """One traced exit: the facts of a trace line (and of a ``--trace-json`` record)."""

    t: float  # seconds since the tracer started
    reason: str
    cs: int
    rip: int  # the instruction that trapped
    instruction: str
    registers: dict[str, int]
    action: str
    seconds: float  # time spent handling the exit

    def line(self) -> str:
        regs = " ".join(f"{name}={value:#x}" if name != "size" else f"size={value}"
                        for name, value in self.registers.items())  # fmt: skip
        return (
            f"{self.t:9.6f} {self.reason:<{_WIDTH_REASON}} {self.cs:04x}:{self.rip:08x} "
            f"{self.instruction:<24} {regs:<38} {self.action:<28} {_micro(self.seconds)}"
        )

    def record(self) -> dict[str, object]:
        return {
            "t": round(self.t, 6), "reason": self.reason, "cs": self.cs, "rip": self.rip,
            "instruction": self.instruction, "registers": self.registers, "action": self.action,
            "seconds": self.seconds,
        }  # fmt: skip


@dataclass
class ReasonStats:
    """Handling times of the exits of one reason (the rows of the summary)."""

    times: list[float] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.times)

    def spread(self) -> float:
        """The standard error of the mean as a percentage of the mean (perf's ``+-``)."""
        n = len(self.times)
        mean = self.total / n
        if n < 2 or mean == 0:
            return 0.0
        variance = sum((t - mean) ** 2 for t in self.times) / (n - 1)
        return 100.0 * math.sqrt(variance / n) / mean


class ExitTracer:
    """An exit observer (``Machine.exit_observers``) that prints, records and counts exits.

    ``lines`` gets one aligned text line per exit (``None``: no lines); ``records`` one JSON object
    per exit (``None``: none). The vCPU is read for what an exit does not carry (CS, RIP of a port
    exit, the instruction bytes): cheap enough when tracing, never done when not.
    """

    def __init__(self, vcpu: Vcpu, bus: PortIoBus, hypercalls: HypercallTable, *,
                 lines: TextIO | None = None, records: TextIO | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self._vcpu = vcpu
        self._bus = bus
        self._hypercalls = hypercalls
        self._lines = lines
        self._records = records
        self._clock = clock
        self._t0 = clock()
        self.stats: dict[str, ReasonStats] = {}
        # A port exit's CS:RIP is read from the vCPU, which must then keep RIP exact: after a hook
        # writes RIP, Unicorn gives later hooks a stale one (docs/UNICORN.md U16).
        vcpu.exact_rip_in_hooks = True
        vcpu.injection_watchers.append(self.injected)
        if lines is not None:
            lines.write(self.header() + "\n")

    @staticmethod
    def header() -> str:
        return (
            f"{'t(s)':>9} {'reason':<{_WIDTH_REASON}} {'cs:rip':<13} {'instruction':<24} "
            f"{'registers':<38} {'action':<28} took"
        )

    def __call__(self, exit_: Exit, outcome: Outcome, seconds: float) -> None:
        traced = self.trace(exit_, outcome, seconds)
        self.stats.setdefault(traced.reason, ReasonStats()).times.append(seconds)
        self._emit(traced)

    def injected(self, injection: Injection, cs: int, rip: int) -> None:
        """An injection watcher (``Vcpu.injection_watchers``): a line per event tried."""
        instruction = self._instruction(cs, rip)
        last = len(injection.events) - 1
        for n, event in enumerate(injection.events):
            registers = {"vector": event.vector, "type": int(event.type),
                         "info": event.interruption_info()}  # fmt: skip
            if event.error_code is not None:
                registers["error_code"] = event.error_code
            if event.cr2 is not None:
                registers["cr2"] = event.cr2
            result = injection.result
            if n < last:
                action = f"{event.type.label}: faulted"
            elif isinstance(result, Delivered):
                action = f"{event.type.label} delivered -> {result.cs:04x}:{result.rip:x}"
            elif isinstance(result, Refused):
                action = f"refused: {result.reason}"
            else:
                action = "triple fault"
            self._emit(TracedExit(self._clock() - self._t0, INJECT, cs, rip, instruction,
                                  registers, action, 0.0))  # fmt: skip

    def _emit(self, traced: TracedExit) -> None:
        if self._lines is not None:
            self._lines.write(traced.line() + "\n")
            self._lines.flush()
        if self._records is not None:
            self._records.write(json.dumps(traced.record(), separators=(",", ":")) + "\n")
            self._records.flush()

    def trace(self, exit_: Exit, outcome: Outcome, seconds: float) -> TracedExit:
        """The facts of one exit, read from the exit, its outcome and (where needed) the vCPU."""
        reason = REASONS[type(exit_)]
        cs = self._vcpu.reg("cs")
        match exit_:
            case Fault(cs=cs, rip=rip, instruction=instruction):
                pass  # a fault report already says where and what
            case (Hypercall(rip=past) | SoftwareInterrupt(rip=past) | FirmwareCall(rip=past)
                  | Syscall(rip=past) | Halt(rip=past)):  # fmt: skip
                # RIP has moved past the trapping instruction, as VT-x leaves it
                rip = past - _LENGTH_BEHIND[type(exit_)]
                instruction = self._instruction(cs, rip)
            case Timeout(rip=rip) | StopRequest(rip=rip) | GuestException(rip=rip):
                instruction = self._instruction(cs, rip)
            case _:  # port I/O and CPUID trap with RIP still on the instruction
                rip = self._vcpu.reg("rip")
                instruction = self._instruction(cs, rip)
        return TracedExit(self._clock() - self._t0, reason, cs, rip, instruction,
                          self._registers(exit_), self._action(exit_, outcome), seconds)

    def _instruction(self, cs: int, rip: int) -> str:
        mode = self._vcpu.mode()
        linear = (cs << 4) + (rip & 0xFFFF) if mode == 16 else rip
        try:
            code = read_virt(self._vcpu.mem, self._vcpu.paging_state(), linear, MAX_INSN)
        except GuestFault:  # near the end of mapped memory: try the shortest instructions
            try:
                code = read_virt(self._vcpu.mem, self._vcpu.paging_state(), linear, 1)
            except GuestFault:
                return "<instruction unreadable>"
        return disassemble_one(code, rip, mode)

    def _registers(self, exit_: Exit) -> dict[str, int]:
        """The registers that matter for this reason."""
        match exit_:
            case Hypercall(nr=nr, args=args):
                return {"rax": nr, "rbx": args[0], "rcx": args[1], "rdx": args[2]}
            case PortIn(port=port, size=size):
                return {"port": port, "size": size}
            case PortOut(port=port, size=size, value=value):
                return {"port": port, "size": size, "value": value}
            case Cpuid(leaf=leaf, subleaf=subleaf):
                return {"eax": leaf, "ecx": subleaf}
            case SoftwareInterrupt(registers=regs) | Syscall(registers=regs):
                return {name: regs[name] for name in ("rax", "rbx", "rcx", "rdx", "rdi")}
            case FirmwareCall(vector=vector, registers=regs):
                return {"vector": vector, **{name: regs[name] & 0xFFFF
                                             for name in ("rax", "rbx", "rcx", "rdx")}}
            case Fault(address=address, vector=vector):
                return {"address": address, "vector": vector}
            case GuestException(vector=vector, cr2=cr2):
                return {"vector": vector, "cr2": cr2}
        return {}

    def _action(self, exit_: Exit, outcome: Outcome) -> str:
        """What the handler did, in a few words."""
        match outcome:
            case Stopped(reason=reason):
                return f"stop: {reason}"
            case Failed(fault=fault):
                return f"fault: {fault.kind}"
            case Unhandled(why=why):
                return f"unhandled: {why}"
        assert isinstance(outcome, Handled)
        match exit_:
            case Syscall() | SoftwareInterrupt(vector=0x80):
                results = " ".join(f"{k}={v:#x}" for k, v in outcome.registers.items())
                return f"{_syscall_name(exit_)} -> {results}"
            case Hypercall(nr=nr):
                name = self._hypercalls.name(nr) or "unknown number"
                results = " ".join(f"{k}={v:#x}" for k, v in outcome.registers.items())
                return f"{name} -> {results}"
            case PortIn(port=port):
                return f"{self._owner(port)} -> {outcome.value:#x}"
            case PortOut(port=port):
                return f"-> {self._owner(port)}"
            case Cpuid():
                if outcome.cpuid is None:
                    return "native"
                return "-> " + " ".join(f"{v:08x}" for v in outcome.cpuid)
        changed = " ".join(f"{k}={v:#x}" for k, v in outcome.registers.items())
        if isinstance(exit_, FirmwareCall):
            return f"bios int {exit_.vector:02x}h {changed}".rstrip()
        return f"handled {changed}".rstrip()

    def _owner(self, port: int) -> str:
        owner = self._bus.find(port)
        return owner.name if owner is not None else "no device"

    # ------------------------------------------------------------------ the summary
    def summary(self) -> str:
        """Exits by reason, in the manner of ``perf kvm stat report``."""
        samples = sum(len(s.times) for s in self.stats.values())
        total = sum(s.total for s in self.stats.values())
        rows = [
            "Analyze events for all VCPUs:",
            "",
            f"{'VM-EXIT':>16} {'Samples':>8} {'Samples%':>9} {'Time%':>8} {'Min Time':>11} "
            f"{'Max Time':>11} {'Avg time':>11}",
            "",
        ]
        ordered = sorted(self.stats.items(), key=lambda item: (-len(item[1].times), item[0]))
        for reason, stats in ordered:
            n = len(stats.times)
            rows.append(
                f"{reason:>16} {n:>8} {100 * n / samples:>8.2f}% "
                f"{100 * stats.total / total if total else 0.0:>7.2f}% "
                f"{_micro(min(stats.times)):>11} {_micro(max(stats.times)):>11} "
                f"{_micro(stats.total / n):>11} ( +- {stats.spread():6.2f}% )"
            )
        rows += ["", f"Total Samples:{samples}, Total events handled time:{_micro(total)}."]
        return "\n".join(rows)


def _syscall_name(exit_: Syscall | SoftwareInterrupt) -> str:
    """The Linux system call a SYSCALL (x86-64 numbers) or ``int 0x80`` (i386) names."""
    return call_name(64 if isinstance(exit_, Syscall) else 32, exit_.registers)


def _micro(seconds: float) -> str:
    return f"{seconds * 1e6:.2f}us"
