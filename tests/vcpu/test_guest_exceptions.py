"""Guest exceptions an OS personality takes (docs/UNICORN.md U60-U62): the Unicorn facts, raw, and
the vCPU's GuestException exit, its dispatch and its resumption, with handlers built by hand."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest
import unicorn
from unicorn import x86_const as X

from hv_emu.bus import PortIoBus
from hv_emu.cpuid import CpuidTable
from hv_emu.dispatch import Handlers, dispatch
from hv_emu.events import EventLog
from hv_emu.exits import Fault, GuestException, Halt, Handled, Outcome, Syscall, Unhandled
from hv_emu.hypercalls.abi import SLOTS
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.machine import Machine, MachineConfig
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState
from hv_emu.vcpu import runloop
from hv_emu.vcpu.exception_state import forget_exception, in_flight_offset
from hv_emu.vcpu.hidden import HiddenState
from tests.conftest import boot_asm
from tests.rigs.linux import run_program, sys

_DIV_TWICE = bytes.fromhex("f7f1f7f1f4")  # div ecx; div ecx; hlt


def _raw_engine(code: bytes) -> unicorn.Uc:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, code)
    return uc


def test_a_syscall_hook_rip_write_gets_two_added() -> None:
    # syscall; hlt; ... at 0x1010: mov al, 1 (b0 01); hlt at 0x1012, inside nothing else
    uc = _raw_engine(bytes.fromhex("0f05f4") + bytes(13) + bytes.fromhex("b001f4"))

    def hook(engine: unicorn.Uc, _ud: object) -> None:
        engine.reg_write(X.UC_X86_REG_RIP, 0x1010)

    uc.hook_add(unicorn.UC_HOOK_INSN, hook, None, 1, 0, X.UC_X86_INS_SYSCALL)
    uc.emu_start(0x1000, 0x2000)
    # Resumed at 0x1012 (two past the written RIP): the mov at 0x1010 never ran.
    assert uc.reg_read(X.UC_X86_REG_RIP) == 0x1013 and uc.reg_read(X.UC_X86_REG_RAX) == 0


def test_a_syscall_handler_resumes_where_it_says() -> None:
    machine = Machine(MachineConfig(timeout=10))

    def personality(exit_: Syscall) -> Outcome:
        return Handled(registers={"rax": 5, "rip": exit_.registers["rbx"]})

    machine.set_syscall_handler(personality)
    _, result = boot_asm("lea rbx, [rip + there]\n mov edx, 1\n syscall\n mov edx, 2\n hlt\n"
                         " there: mov edx, 3\n hlt", machine=machine)  # fmt: skip
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("rdx") == 3 and machine.vcpu.reg("rax") == 5


def test_a_second_divide_error_is_a_double_fault_until_forgotten() -> None:
    for forget in (False, True):
        uc = _raw_engine(_DIV_TWICE)
        vectors: list[int] = []

        def hook(engine: unicorn.Uc, vector: int, _ud: object, forget: bool = forget,
                 vectors: list[int] = vectors) -> None:  # fmt: skip
            vectors.append(vector)
            engine.reg_write(X.UC_X86_REG_RIP, engine.reg_read(X.UC_X86_REG_RIP) + 2)
            if forget:
                assert forget_exception(engine)
            engine.emu_stop()

        uc.hook_add(unicorn.UC_HOOK_INTR, hook)
        for start in (0x1000, 0x1002):
            uc.emu_start(start, 0x1005)
        assert vectors == ([0, 0] if forget else [0, 8])
    offset = in_flight_offset()
    assert offset is not None
    fresh = bytes(_raw_engine(b"\xf4").context_save())
    assert struct.unpack_from("<i", fresh, offset)[0] == -1


def test_a_stop_in_the_syscall_hook_leaves_a_page_fault_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # prlimit64 writes guest RAM, so the SYSCALL hook stops emu_start to flush translated code;
    # then a divide error. Without the run loop's clearing it is the #DF Unicorn makes of it;
    # with it, the program gets its #DE (SIGFPE, no handler: status 136).
    body = "lea r10, [rsp - 64]\n" + sys(64, 302, 0, 3, 0, "r10") + "xor ecx, ecx\n div ecx\n"
    run = run_program(body)
    assert isinstance(run.result.exit, Fault) and run.result.exit.vector == 0
    assert run.process.killed_by == 8 and run.process.exit_status == 136

    monkeypatch.setattr(runloop, "forget_exception", lambda uc: False)
    stale = run_program(body)
    assert isinstance(stale.result.exit, Fault) and stale.result.exit.vector == 8
    # The stray CR2 (until - 1) is U42's, which the run loop gives back after each emu_start.
    assert stale.machine.vcpu.reg("cr2") != 2**64 - 2


def test_a_page_fault_after_a_hypercall_that_wrote_ram_is_a_page_fault() -> None:
    _, result = boot_asm("lea rbx, [rip + name]\n xor eax, eax\n vmcall\n"
                         "lea rbx, [rip + buf]\n mov ecx, 512\n vmcall\n"  # get_status
                         "mov rax, 0x7fff00000000\n mov eax, [rax]\n hlt\n"
                         "name: .asciz \"get_status\"\n buf: .space 512\n")  # fmt: skip
    assert isinstance(result.exit, Fault)
    assert (result.exit.kind, result.exit.address) == ("#PF", 0x7FFF00000000)


def _handlers() -> Handlers:
    mem = GuestMemory(1 << 20)
    return Handlers(PortIoBus(), HypercallTable(mem, EventLog()),
                    CpuidTable(lambda leaf, sub: (0, 0, 0, 0), SLOTS))  # fmt: skip


def test_dispatch_sends_exceptions_to_the_personality_or_leaves_them_unhandled() -> None:
    exit_ = GuestException(14, None, 0x8, 64, 0x401000, {"rip": 0x401000},
                           PagingState(0, 0, 0, 0))  # fmt: skip
    assert isinstance(dispatch(exit_, _handlers()), Unhandled)
    seen: list[GuestException] = []

    def personality(e: GuestException) -> Outcome:
        seen.append(e)
        return Handled(registers={"rip": 0x402000})

    handlers = replace(_handlers(), exception=personality)
    assert dispatch(exit_, handlers) == Handled(registers={"rip": 0x402000})
    assert seen == [exit_]


def test_without_a_personality_an_exception_is_the_same_fault_report() -> None:
    _, result = boot_asm("xor ecx, ecx\n div ecx\n hlt")
    assert isinstance(result.exit, Fault) and result.exit.kind == "#DE" and result.exit.vector == 0


def _in_flight(uc: unicorn.Uc) -> int:
    offset = in_flight_offset()
    assert offset is not None
    return int(struct.unpack_from("<i", bytes(uc.context_save()), offset)[0])


def test_injection_and_the_run_loop_clear_the_one_field() -> None:
    # Both ways of forgetting (a whole save/restore, and the injection's edited copy) write the
    # one field exception_state knows: after either, the next #DE arrives as itself.
    for through_hidden in (False, True):
        uc = _raw_engine(_DIV_TWICE)
        vectors: list[int] = []

        def hook(engine: unicorn.Uc, vector: int, _ud: object,
                 vectors: list[int] = vectors) -> None:  # fmt: skip
            vectors.append(vector)
            engine.reg_write(X.UC_X86_REG_RIP, engine.reg_read(X.UC_X86_REG_RIP) + 2)
            engine.emu_stop()

        uc.hook_add(unicorn.UC_HOOK_INTR, hook)
        uc.emu_start(0x1000, 0x1005)
        assert _in_flight(uc) == 0  # the #DE is in flight
        if through_hidden:
            state = HiddenState(uc)
            assert state.usable
            state.load()
            state.forget_exception()
            assert _in_flight(uc) == 0  # only the copy changed, until it is stored
            state.store()
        else:
            assert forget_exception(uc)
        assert _in_flight(uc) == -1
        uc.emu_start(0x1002, 0x1005)
        assert vectors == [0, 0]


def test_without_the_field_nothing_is_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A Unicorn where the field is not found: nothing forgotten, and delivery is off (a
    # delivered exception would come back as #DF).
    from hv_emu.vcpu import exception_state, hidden

    monkeypatch.setattr(exception_state, "in_flight_offset", lambda: None)
    monkeypatch.setattr(hidden, "in_flight_offset", lambda: None)
    hidden._layout_holds.cache_clear()
    try:
        uc = _raw_engine(_DIV_TWICE)
        assert not forget_exception(uc)
        assert not HiddenState(uc).usable
    finally:
        hidden._layout_holds.cache_clear()
        monkeypatch.undo()
    assert HiddenState(_raw_engine(b"\xf4")).usable
