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

from dataclasses import dataclass

from hv_emu.bus import PortIoBus
from hv_emu.cpuid import CpuidTable
from hv_emu.exits import (
    RESUME,
    Cpuid,
    Exit,
    Failed,
    Fault,
    Halt,
    Handled,
    Hypercall,
    Outcome,
    PortIn,
    PortOut,
    Stopped,
    StopRequest,
    Timeout,
)
from hv_emu.hypercalls import HypercallTable


@dataclass(frozen=True)
class Handlers:
    """What the dispatcher may call: the port bus, the hypercall table and the CPUID table."""

    bus: PortIoBus
    hypercalls: HypercallTable
    cpuid: CpuidTable


def dispatch(exit_: Exit, handlers: Handlers) -> Outcome:
    """The outcome of one VM exit."""
    match exit_:
        case PortIn(port=port, size=size):
            return Handled(value=handlers.bus.read(port, size))
        case PortOut(port=port, size=size, value=value):
            handlers.bus.write(port, size, value)
            return RESUME
        case Cpuid(leaf=leaf, subleaf=subleaf):
            return Handled(cpuid=handlers.cpuid.lookup(leaf, subleaf))
        case Hypercall():
            return handlers.hypercalls.handle(exit_)
        case Halt():
            return Stopped("halt")
        case Timeout():
            return Stopped("timeout")
        case StopRequest(reason=reason):
            return Stopped(reason)
        case Fault():
            return Failed(exit_)
    raise TypeError(f"not a VM exit: {exit_!r}")  # unreachable for the Exit union (mypy checks)
