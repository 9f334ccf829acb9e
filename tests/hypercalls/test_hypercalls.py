"""The hypercall table: slots in registration order, name lookup through guest memory."""

from __future__ import annotations

import pytest

from hv_emu.errors import ConfigError, GuestMemoryError
from hv_emu.events import EventLog
from hv_emu.exits import Handled, Hypercall
from hv_emu.hypercalls.abi import MAX_NAME, SLOTS, Rc
from hv_emu.hypercalls.builtin import NUMBERS
from hv_emu.hypercalls.spec import HypercallContext, HypercallResult
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState

Setup = tuple[GuestMemory, HypercallTable, EventLog]
FLAT32 = PagingState(cr0=0x11, cr3=0, cr4=0, efer=0)


def call(table: HypercallTable, nr: int, *args: int) -> Handled:
    regs = (list(args) + [0] * 5)[:5]
    return table.handle(Hypercall(nr, (regs[0], regs[1], regs[2], regs[3], regs[4]), 32, 0,
                                  FLAT32))


def ok(ctx: HypercallContext) -> HypercallResult:
    return HypercallResult(Rc.OK)


@pytest.fixture
def setup() -> Setup:
    mem = GuestMemory(1 << 20)
    events = EventLog()
    table = HypercallTable(mem, events)
    return mem, table, events


def test_slots_follow_registration_order(setup: Setup) -> None:
    _, table, _ = setup
    assert table.number("get_vmmcall_number") == NUMBERS["get_vmmcall_number"] == 0
    assert table.register("get_status", ok) == 1
    assert table.register("update_signatures", ok) == 2
    assert table.names() == {0: "get_vmmcall_number", 1: "get_status", 2: "update_signatures"}


def test_lookup_by_name_in_guest_memory(setup: Setup) -> None:
    mem, table, events = setup
    table.register("get_status", ok)
    table.register("update_signatures", ok)
    mem.write(0x5000, b"update_signatures\0")
    assert call(table, 0, 0x5000).registers["rax"] == 2
    mem.write(0x5000, b"no_such_function\0")
    assert call(table, 0, 0x5000).registers["rax"] == 0
    assert events.of("hypercall")[0] == {
        "event": "hypercall", "t": events.records[0]["t"], "nr": 0,
        "name": "get_vmmcall_number", "args": [0x5000, 0, 0], "ret": 2,
    }


def test_lookup_limits(setup: Setup) -> None:
    mem, table, _ = setup
    table.register("x" * (MAX_NAME - 1), ok)
    mem.write(0x6000, b"x" * (MAX_NAME - 1) + b"\0")  # exactly 256 bytes with the NUL
    assert call(table, 0, 0x6000).registers["rax"] == 1
    mem.write(0x7000, b"x" * MAX_NAME + b"\0")  # no NUL within 256 bytes
    assert call(table, 0, 0x7000).registers["rax"] == 0
    mem.write(mem.size - 3, b"abc")
    assert call(table, 0, mem.size - 3).registers["rax"] == 0  # runs off the end of RAM
    assert call(table, 0, 0xFFFFFFFF).registers["rax"] == 0
    mem.write(0x8000, b"\xff\xfe\0")  # not ASCII
    assert call(table, 0, 0x8000).registers["rax"] == 0


def test_registration_errors(setup: Setup) -> None:
    _, table, _ = setup
    with pytest.raises(ConfigError, match="already"):
        table.register("get_vmmcall_number", ok)
    with pytest.raises(ConfigError):
        table.register("", ok)
    with pytest.raises(ConfigError):
        table.register("y" * MAX_NAME, ok)
    for i in range(SLOTS - 1):
        table.register(f"f{i}", ok)
    with pytest.raises(ConfigError, match="slots"):
        table.register("one_too_many", ok)


def test_a_guest_fault_escaping_a_handler_still_answers_the_guest(
    setup: Setup,
) -> None:
    _, table, _ = setup

    def careless(ctx: HypercallContext) -> HypercallResult:
        raise GuestMemoryError(ctx.rbx, 1)

    nr = table.register("careless", careless)
    assert call(table, nr, 0xDEAD).registers["rax"] == Rc.UNREADABLE
