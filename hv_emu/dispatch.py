"""Dispatch: from a VM exit to what the hypervisor does about it.

Models: the exit handler at the heart of every VMM's run loop ("read the exit reason, call the
handler for it, resume or stop"), kept a function of the exit and the handlers so it can be tested
with exits built by hand, no CPU needed.

Follows: Firecracker's ``Vcpu::run_emulation`` / ``handle_kvm_exit`` and kvm-ioctls' numbered run
loop: IO-in answers through the exit's data slot, IO-out goes to the bus, HLT and faults end the
run.

Leaves out: MMIO exits (no MMIO device yet) and interrupt windows (no interrupt controller).

Guest controls: the exit's fields; which handler runs is decided by the exit's type alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hv_emu.bus import PortIoBus
from hv_emu.cpuid import CpuidTable
from hv_emu.exits import (
    RESUME,
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
    Unhandled,
)
from hv_emu.hypercalls.table import HypercallTable

InterruptHandler = Callable[[SoftwareInterrupt], Outcome]
SyscallHandler = Callable[[Syscall], Outcome]
ExceptionHandler = Callable[[GuestException], Outcome]
FirmwareHandler = Callable[[FirmwareCall], Outcome]


@dataclass(frozen=True)
class Handlers:
    """What the dispatcher may call: the port bus, the hypercall and CPUID tables, and optional
    handlers of software interrupts (by vector), SYSCALL and CPU exceptions, such as an OS
    personality, and the firmware's services (``firmware/bios.py``) for its ROM stubs' traps."""

    bus: PortIoBus
    hypercalls: HypercallTable
    cpuid: CpuidTable
    interrupts: Mapping[int, InterruptHandler] = field(default_factory=dict)
    syscall: SyscallHandler | None = None
    exception: ExceptionHandler | None = None
    firmware: FirmwareHandler | None = None


def dispatch(exit_: Exit, handlers: Handlers) -> Outcome:
    """The outcome of one VM exit."""
    match exit_:
        case PortIn(port=port, size=size):
            return Handled(value=handlers.bus.read(port, size))
        case PortOut(port=port, size=size, value=value):
            handlers.bus.write(port, size, value)
            return RESUME
        case Cpuid(leaf=leaf, subleaf=subleaf):
            return Handled(cpuid=handlers.cpuid.lookup(leaf, subleaf))  # None: native CPUID
        case Hypercall():
            return handlers.hypercalls.handle(exit_)
        case SoftwareInterrupt(vector=vector):
            handler = handlers.interrupts.get(vector)
            if handler is None:
                return Unhandled(f"INT {vector:#x}: no handler (no IDT/IVT delivery, no BIOS)")
            return handler(exit_)
        case FirmwareCall(vector=vector):
            if handlers.firmware is None:
                return Unhandled(f"firmware call for INT {vector:#x}: no firmware in this run")
            return handlers.firmware(exit_)
        case Syscall():
            if handlers.syscall is None:
                return Unhandled("SYSCALL: no OS personality to handle it")
            return handlers.syscall(exit_)
        case GuestException():
            if handlers.exception is None:  # the vCPU reports the fault as it stands
                return Unhandled("no OS personality takes CPU exceptions")
            return handlers.exception(exit_)
        case Halt():
            return Stopped("halt")
        case Timeout():
            return Stopped("timeout")
        case StopRequest(reason=reason):
            return Stopped(reason)
        case Fault():
            return Failed(exit_)
    raise TypeError(f"not a VM exit: {exit_!r}")  # unreachable for the Exit union (mypy checks)
