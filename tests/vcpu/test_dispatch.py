"""Dispatch is a function of the exit: tested with exits built by hand, no CPU."""

from __future__ import annotations

import pytest

from hv_emu.bus import PortIoBus
from hv_emu.cpuid import HYPERVISOR_PRESENT, CpuidTable
from hv_emu.dispatch import Handlers, dispatch
from hv_emu.events import EventLog
from hv_emu.exits import (
    Cpuid,
    Failed,
    Fault,
    Halt,
    Handled,
    Hypercall,
    PortIn,
    PortOut,
    Stopped,
    StopRequest,
    Timeout,
)
from hv_emu.hypercalls.abi import SLOTS
from hv_emu.hypercalls.spec import HypercallResult
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState

FLAT = PagingState(cr0=0x11, cr3=0, cr4=0, efer=0)


class Latch:
    def __init__(self) -> None:
        self.value = 0

    def io_read(self, offset: int, size: int) -> int:
        return self.value + offset

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.value = value


def fake_native(leaf: int, subleaf: int) -> tuple[int, int, int, int]:
    return (leaf, subleaf, 0x1234, 0x5678)


@pytest.fixture
def handlers() -> Handlers:
    mem = GuestMemory(1 << 20)
    bus = PortIoBus()
    bus.register(0x60, 4, Latch(), "latch")
    table = HypercallTable(mem, EventLog())
    table.register("answer", lambda ctx: HypercallResult(42, {"rcx": ctx.rbx + 1}))
    return Handlers(bus, table, CpuidTable(fake_native, SLOTS))


def test_port_out_then_in_goes_through_the_bus(handlers: Handlers) -> None:
    assert dispatch(PortOut(0x60, 1, 7), handlers) == Handled()
    assert dispatch(PortIn(0x62, 1), handlers) == Handled(value=9)
    assert dispatch(PortIn(0x70, 2), handlers) == Handled(value=0xFFFF)


def test_cpuid_hypervisor_leaves_and_native_fallback(handlers: Handlers) -> None:
    out = dispatch(Cpuid(0x40000000, 0), handlers)
    assert isinstance(out, Handled) and out.cpuid is not None
    eax, ebx, ecx, _ = out.cpuid
    assert eax == 0x40000001
    assert ebx.to_bytes(4, "little") + ecx.to_bytes(4, "little") == b"hv-emu\0\0"
    leaf1 = dispatch(Cpuid(1, 0), handlers)
    assert isinstance(leaf1, Handled) and leaf1.cpuid is not None
    assert leaf1.cpuid[2] & HYPERVISOR_PRESENT
    assert dispatch(Cpuid(7, 1), handlers) == Handled(cpuid=None)  # the CPU model answers
    assert dispatch(Cpuid(0x40000005, 0), handlers) == Handled(cpuid=(0, 0, 0, 0))


def test_hypercall_result_becomes_register_writes(handlers: Handlers) -> None:
    out = dispatch(Hypercall(1, (10, 0, 0, 0, 0), 64, 0x1000, FLAT), handlers)
    assert out == Handled(registers={"rax": 42, "rcx": 11})


def test_unknown_hypercall_leaves_rax_zero(handlers: Handlers) -> None:
    for nr in (2, 127, 128, 2**63):
        assert dispatch(Hypercall(nr, (0,) * 5, 64, 0, FLAT), handlers) == Handled(
            registers={"rax": 0}
        )


def test_ends_of_the_run(handlers: Handlers) -> None:
    fault = Fault("#GP", 0, 13, 64, 0x18, 0x1000, 0x1000, "mov ds, ax [8e d8]")
    assert dispatch(Halt(64, 0x1001), handlers) == Stopped("halt")
    assert dispatch(Timeout(1.0, 64, 0), handlers) == Stopped("timeout")
    assert dispatch(StopRequest("harness", 64, 0), handlers) == Stopped("harness")
    assert dispatch(fault, handlers) == Failed(fault)


def test_fault_description_is_one_line_with_what_where_and_registers() -> None:
    fault = Fault("write to unmapped memory", 0xDEAD0000, -1, 64, 0x18, 0x105A, 0x105A,
                  "mov dword ptr [rbx], 1 [c7 03 01 00 00 00]", {"rax": 0, "rbx": 0xDEAD0000})
    line = fault.describe()
    assert "\n" not in line
    for part in ("write to unmapped memory at 0xdead0000", "64-bit mode", "CS:RIP=0x0018:0x105a",
                 "mov dword ptr [rbx], 1", "RBX=0xdead0000"):
        assert part in line


def test_a_null_pointer_fault_names_address_zero() -> None:
    fault = Fault("#PF", 0, 14, 64, 0x18, 0x1000, 0x1000, "mov eax, dword ptr [0]")
    assert "#PF at 0x0 |" in fault.describe()
    not_memory = Fault("#UD invalid opcode", 0, 6, 64, 0x18, 0x1000, 0x1000, "ud2 [0f 0b]")
    assert " at 0x0" not in not_memory.describe()
