"""The hypercall test bench (hv_emu.testing) beyond the examples of docs/TESTING.md."""

from __future__ import annotations

import pytest

from hv_emu.errors import ConfigError, GuestFault
from hv_emu.exits import Halt, Hypercall, PortOut, Timeout
from hv_emu.hypercalls.abi import SLOTS, Rc
from hv_emu.hypercalls.builtin import BUILTINS, NUMBERS
from hv_emu.machine import MachineConfig
from hv_emu.testing import HypercallContext, HypercallResult, Hypervisor


def test_registration_by_number_refuses_taken_and_outside_slots(hv: Hypervisor) -> None:
    # The first free slot is the one after the built-ins.
    assert hv.register_hypercall("first_free", lambda ctx: 0) == len(BUILTINS)
    assert hv.register_hypercall("chosen", lambda ctx: 0, nr=SLOTS - 1) == SLOTS - 1
    with pytest.raises(ConfigError, match="taken by 'update_signatures'"):
        hv.register_hypercall("mine", lambda ctx: 0, nr=NUMBERS["update_signatures"])
    with pytest.raises(ConfigError, match="outside the table"):
        hv.register_hypercall("mine", lambda ctx: 0, nr=SLOTS)
    with pytest.raises(ConfigError, match="registered already"):
        hv.register_hypercall("chosen", lambda ctx: 0)
    assert hv.machine.hypercalls.names()[SLOTS - 1] == "chosen"


def test_records_carry_all_five_arguments_and_every_register_set(hv: Hypervisor) -> None:
    def spread(ctx: HypercallContext) -> HypercallResult:
        assert ctx.mode == 64
        return HypercallResult(sum(ctx.args), {"rsi": ctx.args[3] * 10})

    nr = hv.register_hypercall("spread", spread)
    run = hv.run_asm(f"mov eax, {nr}\n mov ebx, 1\n mov ecx, 2\n mov edx, 3\n mov esi, 4\n"
                     " mov edi, 5\n vmcall\n hlt")  # fmt: skip
    (call,) = run.hypercalls
    assert call.args == (1, 2, 3, 4, 5) and call.rax == 15
    assert call.registers == {"rax": 15, "rsi": 40}
    assert run.registers["rsi"] == 40 and run.registers["rip"] == call.rip + 1  # past the HLT
    assert [type(e) for e, _outcome in run.exits] == [Hypercall, Halt]


def test_a_handler_guest_fault_becomes_unreadable(hv: Hypervisor) -> None:
    def strict(ctx: HypercallContext) -> int:
        raise GuestFault("the guest passed nonsense")

    hv.register_hypercall("strict", strict, nr=9)
    run = hv.run_asm("mov eax, 9\n vmcall\n hlt")
    assert run.registers["rax"] == Rc.UNREADABLE == run.hypercalls[0].rax


def test_each_run_reports_only_its_own_calls_output_and_events(hv: Hypervisor) -> None:
    first = hv.run_program("hello")
    second = hv.run_asm("mov eax, 77\n vmcall\n hlt")  # an unknown number: RAX = 0
    assert first.output == "hello from the guest\n" and first.hypercalls == []
    assert second.output == "" and len(second.hypercalls) == 1
    assert second.hypercalls[0].name is None and second.hypercalls[0].rax == 0
    assert [e["event"] for e in second.events] == ["hypercall", "halt"]
    assert all(isinstance(e, PortOut) for e, _o in first.exits[:-1])


def test_guests_of_every_mode_run_one_after_another_on_one_machine(hv: Hypervisor) -> None:
    """Reloading a vCPU that ran a guest of another mode starts from a clean CPU state."""
    hv.register_hypercall("double", lambda ctx: 2 * ctx.rbx, nr=5)
    for mode, paging in ((64, "none"), (32, "pae"), (16, "none"), (64, "none"), (32, "2level"),
                         (16, "none"), (32, "none"), (64, "none")):  # fmt: skip
        run = hv.run_asm("mov eax, 5\n mov ebx, 21\n vmcall\n hlt", mode=mode, paging=paging)
        assert run.halted, (mode, paging, run.exit)
        assert run.hypercalls[0].mode == mode and run.registers["rax"] & 0xFFFF == 42


def test_memory_reads_follow_the_guests_page_tables() -> None:
    bench = Hypervisor(MachineConfig(timeout=0.5))
    try:
        run = bench.run_asm("mov rax, 0x1122334455667788\n mov [0x300000], rax\n"
                            " spin: jmp spin")  # fmt: skip
        assert isinstance(run.exit, Timeout)
        assert run.read(0x300000, 8) == (0x1122334455667788).to_bytes(8, "little")
        assert run.read_physical(0x300000, 2) == b"\x88\x77"
        with pytest.raises(GuestFault):
            run.read(0x7FFF00000000, 1)
        with pytest.raises(ValueError, match="no NUL"):
            run.read_string(0x300000, limit=4)
    finally:
        bench.close()
