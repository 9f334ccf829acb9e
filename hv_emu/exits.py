"""VM exits and their outcomes, as values.

Models: the moments the guest hands control to the hypervisor (a VM exit, in VT-x words) and what
the hypervisor answers. On real hardware the CPU writes an exit reason and qualification into the
VMCS; here ``vcpu/traps.py`` turns each Unicorn trap into one of these frozen dataclasses,
``dispatch.py`` maps it to an outcome, and the vCPU applies the outcome (writes registers, answers
the IN, stops the run).

Follows: kvm-ioctls' ``VcpuExit`` (each exit carries exactly its data, and an IN carries the slot
for its answer) and Firecracker's ``handle_kvm_exit`` (a function of the exit, testable with fake
exits). Intel SDM vol. 3C, appendix C (basic exit reasons: CPUID 10, HLT 12, I/O instruction 30,
VMCALL 18).

Leaves out: exits for MSR access, control-register moves, EPT violations and interrupt windows,
which Unicorn cannot trap cheaply (see docs/ARCHITECTURE.md).

Guest controls: every field of every exit (register values, ports, leaves); never which class is
built for which trap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hv_emu.memory.walk import PagingState


@dataclass(frozen=True)
class Hypercall:
    """VMCALL (``0f 01 c1``), or VMMCALL (``0f 01 d9``) on an AMD CPU (``--cpu amd``): the same
    exit for both. RIP has already been moved past the instruction.

    ``args`` are RBX, RCX, RDX, RSI, RDI (zero-extended low halves in 16/32-bit mode); ``paging`` is
    the control-register state needed to read guest-virtual pointers among them.
    """

    nr: int
    args: tuple[int, int, int, int, int]
    mode: int
    rip: int
    paging: PagingState

    @property
    def width(self) -> int:
        """Operand width of the guest's registers: 64 in long mode, else 32."""
        return 64 if self.mode == 64 else 32


@dataclass(frozen=True)
class PortIn:
    """IN from ``port`` (one element of a string instruction, for ``ins*``)."""

    port: int
    size: int


@dataclass(frozen=True)
class PortOut:
    """OUT of ``value`` to ``port``."""

    port: int
    size: int
    value: int


@dataclass(frozen=True)
class Cpuid:
    """CPUID with EAX = ``leaf`` and ECX = ``subleaf``."""

    leaf: int
    subleaf: int


@dataclass(frozen=True)
class SoftwareInterrupt:
    """``INT n`` (``cd nn``) executed by the guest; RIP is already past it.

    With no IDT/IVT delivery in Unicorn, a software interrupt is an exit like any other: an OS
    personality (Linux's ``int 0x80``) or a BIOS model may handle it; unhandled, the run faults.
    ``registers`` holds the general registers at the instruction (rax..r15).
    """

    vector: int
    mode: int
    rip: int
    registers: Mapping[str, int]
    paging: PagingState


@dataclass(frozen=True)
class FirmwareCall:
    """The firmware's own trap: the ``ud2`` at the start of a ROM stub slot (``firmware/rom.py``)
    was executed in real mode, so vector ``vector``'s BIOS service is asked for. RIP is already
    past the ``ud2``, on the stub's return instruction. ``registers`` holds the general registers
    (their low 32 bits) and ``ds``, ``es``, ``ss``, ``rflags``; the caller's FLAGS image is on
    the stack at SS:SP+4.
    """

    vector: int
    rip: int
    registers: Mapping[str, int]


@dataclass(frozen=True)
class Syscall:
    """``SYSCALL`` in 64-bit mode; RIP is already past it. ``registers`` as above."""

    mode: int
    rip: int
    registers: Mapping[str, int]
    paging: PagingState


@dataclass(frozen=True)
class GuestException:
    """A CPU exception the guest raised (not ``INT n``), offered to an OS personality before it
    ends the run as a ``Fault``: an OS delivers it to the program (Linux: as a signal).

    ``vector`` is the exception vector (6 for #UD, 14 for #PF...); ``error_code`` the code the
    CPU pushed, or ``None`` where the emulator does not say it (docs/UNICORN.md U18); ``cr2`` the
    page-fault address register; ``rip`` the faulting instruction (after it for ``int3``, a trap).
    ``registers`` holds rax..r15, ``rip``, ``rflags`` and the segment selectors.
    """

    vector: int
    error_code: int | None
    cr2: int
    mode: int
    rip: int
    registers: Mapping[str, int]
    paging: PagingState


@dataclass(frozen=True)
class Halt:
    """HLT with nothing to wake the vCPU (no interrupt controller): the run ends."""

    mode: int
    rip: int


@dataclass(frozen=True)
class Fault:
    """The guest did something the CPU refuses: an exception, an unmapped access, a bad opcode.

    ``kind`` names it (``"#PF"``, ``"#UD"``, ``"WRITE_UNMAPPED"``...); ``address`` is the memory
    address involved (or 0); ``vector`` the exception vector (or -1).
    """

    kind: str
    address: int
    vector: int
    mode: int
    cs: int
    rip: int
    linear_pc: int
    instruction: str
    registers: Mapping[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line a person can act on: what, where, which instruction, the registers."""
        regs = " ".join(f"{k.upper()}={v:#x}" for k, v in self.registers.items())
        where = f"{self.mode}-bit mode, CS:RIP={self.cs:#06x}:{self.rip:#x}"
        # A memory fault names its address even when it is 0 (a null-pointer dereference).
        memory = self.vector == 14 or "memory" in self.kind
        what = self.kind + (f" at {self.address:#x}" if self.address or memory else "")
        return f"guest fault: {what} | {where} | {self.instruction} | {regs}"


@dataclass(frozen=True)
class TripleFault(Fault):
    """A fault while the CPU delivered a double fault: the CPU shuts down (a PC resets); the
    run ends here. ``kind`` names the chain of events that led to it."""


@dataclass(frozen=True)
class Timeout:
    """The watchdog fired: the guest ran longer than ``seconds`` without halting."""

    seconds: float
    mode: int
    rip: int


@dataclass(frozen=True)
class StopRequest:
    """A handler asked the run to end here (a harness hypercall, a shutdown)."""

    reason: str
    mode: int
    rip: int


Exit = (
    Hypercall | PortIn | PortOut | Cpuid | SoftwareInterrupt | FirmwareCall | Syscall
    | GuestException | Halt
    | Fault | TripleFault | Timeout | StopRequest
)


# ------------------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class Handled:
    """Resume the guest. ``registers`` to write first (e.g. RAX of a hypercall); ``value`` answers
    an IN; ``cpuid`` gives EAX-EDX for a CPUID (``None``: run the native instruction)."""

    registers: Mapping[str, int] = field(default_factory=dict)
    value: int = 0
    cpuid: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class Stopped:
    """End the run normally (halt, timeout, a handler's request)."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """End the run because of a guest fault."""

    fault: Fault


@dataclass(frozen=True)
class Unhandled:
    """No handler exists for this exit: the vCPU reports it as a guest fault, saying ``why``."""

    why: str


Outcome = Handled | Stopped | Failed | Unhandled

#: The outcome of exits that need no answer.
RESUME = Handled()
