"""HLT or a spent instruction budget: both end ``emu_start`` normally with RIP after a byte 0xF4
(``mov al, 0F4h`` ends in one); Unicorn's instruction counter tells them apart (docs/UNICORN.md
U65), so a guest that never halts is never reported halted while a timer is armed."""

from __future__ import annotations

import pytest
import unicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from unicorn import x86_const

from guest_tool.assemble import assemble
from hv_emu.exits import Halt, Timeout
from hv_emu.loaders.flat import default_load
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu import icount
from hv_emu.vcpu.disasm import straight_run_ends_in_hlt
from hv_emu.vcpu.icount import Counter, counter_offset

#: Instructions whose last byte is 0xF4: an immediate, a ModRM byte, a displacement.
ENDS_IN_F4 = {
    16: ("mov al, 0xf4", "add ah, dh", "mov al, byte ptr [bx + si - 12]"),
    32: ("mov al, 0xf4", "add ah, dh", "mov al, byte ptr [eax - 12]"),
    64: ("mov al, 0xf4", "add ah, dh", "mov al, byte ptr [rax - 12]"),
}
#: Counter 0 of the PIT in mode 2 with a count of 0x1000 (about 3.4 ms a period); the 16-bit
#: run's BIOS arms it too, at 18.2 Hz.
ARM_PIT = """
    mov al, 0x34
    out 0x43, al
    xor al, al
    out 0x40, al
    mov al, 0x10
    out 0x40, al
"""


def spinner(mode: int) -> bytes:
    """IF = 0, the PIT armed, then a loop of instructions that end in 0xF4 forever."""
    base = "mov bx, 0x2000\n xor si, si" if mode == 16 else "mov eax, 0x2000"
    body = "\n".join(f"    {insn}" for _ in range(3) for insn in ENDS_IN_F4[mode])
    code = assemble(f"cli\n {base}\n {ARM_PIT}\nspin:\n{body}\n    jmp spin", mode=mode,
                    address=default_load(mode))  # fmt: skip
    assert code.count(b"\xb0\xf4") == 3 and code.count(b"\x00\xf4") == 3
    assert code.count(b"\x8a\x40\xf4") == 3 and b"\xf4" not in code[:-2].replace(b"\xf4", b"")
    return code


def run(code: bytes, mode: int, timeout: float) -> tuple[Machine, object]:
    machine = Machine(MachineConfig(timeout=timeout))
    machine.load(code, mode=mode)
    return machine, machine.run().exit


def test_the_counter_tells_a_spent_budget_from_a_hlt() -> None:
    """U65: ``count=N`` run out leaves the counter at N + 1 (N run); a HLT within the budget
    leaves it at the HLT's own number."""
    assert counter_offset() is not None
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\xb0\xf4" * 10 + b"\xf4")  # ten `mov al, 0F4h`, then HLT
    counter = Counter(uc)
    uc.emu_start(0, 2**64 - 1, count=4)
    assert uc.reg_read(x86_const.UC_X86_REG_RIP) == 8
    assert counter.ran(4) == (4, True)  # the byte before RIP is 0xF4: no HLT ran
    uc.emu_start(0, 2**64 - 1, count=100)
    assert uc.reg_read(x86_const.UC_X86_REG_RIP) == 21
    assert counter.ran(100) == (11, False)  # the HLT, eleventh instruction


@pytest.mark.parametrize("budget", [0, 100])
def test_a_stop_from_a_hook_lands_before_the_next_instruction_only_on_a_budget(budget: int) -> None:
    """U65: with the counting hook installed a hook's ``emu_stop`` ends the entry before the
    next instruction runs (the counter has counted it: one more than ran); without a budget the
    rest of the translation block runs (U12), a HLT in it included."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\xe6\x80\x90\x90\xf4")  # out 0x80, al; nop; nop; hlt
    uc.hook_add(unicorn.UC_HOOK_INSN, lambda u, *_: u.emu_stop(), None, 1, 0,
                x86_const.UC_X86_INS_OUT)  # fmt: skip
    counter = Counter(uc)
    uc.emu_start(0, 2**64 - 1, count=budget)
    if budget:
        assert uc.reg_read(x86_const.UC_X86_REG_RIP) == 2  # right after the OUT
        assert counter.ran(budget) == (2, False)  # the OUT, and the NOP stopped before it ran
    else:
        assert uc.reg_read(x86_const.UC_X86_REG_RIP) == 5  # after the HLT: it ran


#: One-instruction encodings, three of them ending in 0xF4 (imm8, ModRM, disp8).
_INSNS = (b"\x90", b"\xb0\xf4", b"\x00\xf4", b"\x8a\x40\xf4", b"\xf3\x90")
#: HLT, with a REP and with an operand-size prefix.
_HLTS = (b"\xf4", b"\xf3\xf4", b"\x66\xf4")


@settings(max_examples=60, deadline=None)
@given(insns=st.lists(st.sampled_from(_INSNS), min_size=1, max_size=30),
       budget=st.integers(1, 40), hlt=st.sampled_from(_HLTS))  # fmt: skip
def test_the_counter_is_exact_for_any_code_and_budget(insns: list[bytes], budget: int,
                                                      hlt: bytes) -> None:  # fmt: skip
    """Instructions (many ending in 0xF4), then a HLT, prefixed or not, under any budget: the
    counter says the budget ran out exactly when it ended before the HLT, and how many ran."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    code = b"".join(insns) + hlt
    uc.mem_write(0, code)
    uc.reg_write(x86_const.UC_X86_REG_RAX, 0x800)  # the displacement's base: mapped
    counter = Counter(uc)
    uc.emu_start(0, 2**64 - 1, count=budget)
    total = len(insns) + 1
    if budget >= total:  # the HLT ran, the total-th instruction
        assert counter.ran(budget) == (total, False)
        assert uc.reg_read(x86_const.UC_X86_REG_RIP) == len(code)
    else:
        assert counter.ran(budget) == (budget, True)
        assert uc.reg_read(x86_const.UC_X86_REG_RIP) == len(b"".join(insns[:budget]))


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_a_budget_that_runs_out_after_a_byte_f4_is_no_halt(mode: int) -> None:
    machine, ended = run(spinner(mode), mode, 1.0)
    assert isinstance(ended, Timeout), ended
    assert machine.pit.armed and machine.clock.now() > 0


def test_without_the_counter_the_byte_before_rip_is_fooled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same guest, judged by the byte before RIP alone (the run loop's fallback when the
    probe finds no counter): the run ends in a false HLT, so the test above bites."""
    monkeypatch.setattr(Counter, "ran", lambda self, budget: None)
    _, ended = run(spinner(16), 16, 5.0)
    assert isinstance(ended, Halt)


def test_the_repro_of_the_issue_runs_until_the_watchdog() -> None:
    """``cli; mov al, 0F4h; jmp $-2`` under the BIOS's armed PIT ends as ``cli; jmp $`` does."""
    for code in (b"\xfa\xb0\xf4\xeb\xfc", b"\xfa\xeb\xfe"):
        _, ended = run(code, 16, 0.5)
        assert isinstance(ended, Timeout), (code, ended)


@pytest.mark.parametrize(("mode", "source"), [
    (16, "cli\n .byte 0xf3, 0xf4"),  # rep hlt
    (32, ARM_PIT + "cli\n jmp next\n next:\n .byte 0x66, 0xf4"),  # operand-size prefix
    (64, ARM_PIT + "cli\n jmp next\n next:\n hlt"),
])  # fmt: skip
def test_a_real_hlt_with_if_clear_still_ends_the_run(mode: int, source: str) -> None:
    """The HLT in a block of its own (the jump ends the block of the OUT that armed the PIT
    and stopped the entry, U12), so it runs on a budget: the counter says it ran."""
    code = assemble(source, mode=mode, address=default_load(mode))
    machine, ended = run(code, mode, 5.0)
    assert isinstance(ended, Halt), ended
    assert ended.rip == default_load(mode) + len(code)  # after the HLT, the code's last byte
    assert machine.pit.armed


@pytest.mark.parametrize("mode", [32, 64])
@pytest.mark.parametrize("interrupts", [False, True])
def test_a_hlt_in_the_block_of_the_out_that_armed_the_pit_is_not_lost(mode: int,
                                                                       interrupts: bool) -> None:
    """``out 0x40`` arms the PIT (a stop asked in the OUT hook, no budget yet), then ``hlt`` in
    the same translation block: the stop lands after the HLT (U12), and the run loop decodes the
    straight run from the OUT to RIP to see that it ran. With IF = 0 the run ends there; with
    IF = 1 it would wait for an interrupt, but every PIC line is masked, so nothing can wake it
    and it ends there too. Were the HLT lost, the guest would spin in its last jump until the
    watchdog."""
    flag = "sti" if interrupts else "cli"
    masks = "mov al, 0xff\n out 0x21, al\n out 0xa1, al"
    source = f"{masks}\n {flag}\n {ARM_PIT}\n hlt\nspin:\n jmp spin"
    code = assemble(source, mode=mode, address=default_load(mode))
    machine, ended = run(code, mode, 5.0)
    assert isinstance(ended, Halt), ended
    assert ended.rip == default_load(mode) + len(code) - 2  # after the HLT, before the jmp
    assert machine.pit.armed


def test_a_straight_run_ends_in_hlt_only_when_decoded_so() -> None:
    """The decoder behind it: an ``mov al, 0F4h`` ending where the CPU stopped is no HLT; a
    transfer before the end means the bytes in between did not run in a row."""
    out = b"\xe6\x40"
    assert straight_run_ends_in_hlt(out + b"\x90\xf4", 0x1000, 32)
    assert straight_run_ends_in_hlt(out + b"\xf3\xf4", 0x1000, 16)  # rep hlt
    assert not straight_run_ends_in_hlt(out + b"\x90\xb0\xf4", 0x1000, 32)
    assert not straight_run_ends_in_hlt(out + b"\xeb\x00\xf4", 0x1000, 32)  # a jmp first
    assert not straight_run_ends_in_hlt(out + b"\xf4\x90\xf4", 0x1000, 64)  # a HLT first
    assert not straight_run_ends_in_hlt(b"", 0x1000, 64)
    assert not straight_run_ends_in_hlt(out + b"\x0f", 0x1000, 64)  # cut in the middle


def test_a_hlt_that_is_the_last_byte_of_a_page_ends_the_run() -> None:
    """A jump to a HLT at 0x7FFF: the HLT's byte is the page's last, RIP the next page's first."""
    load = default_load(16)
    code = bytearray(assemble("cli\n jmp 0x7fff", mode=16, address=load))
    code += bytes(0x7FFF - load - len(code)) + b"\xf4"
    machine, ended = run(bytes(code), 16, 5.0)
    assert isinstance(ended, Halt) and ended.rip == 0x8000
    assert machine.pit.armed


def test_the_same_guest_gives_the_same_time_and_ticks_twice() -> None:
    """A guest that spins through F4-ending instructions with IF = 1 (65,536 rounds, the PIT at
    about 1.2 kHz) and the BIOS's tick handler counting, then halts: two runs agree on every
    number."""
    body = "\n".join(f"    {insn}" for insn in ENDS_IN_F4[16])
    code = assemble(f"""
        {ARM_PIT.replace("0x10", "0x04")}
        sti
        mov bx, 0x2000
        xor si, si
        xor cx, cx
    spin:
    {body}
        loop spin
        cli
        hlt
    """, mode=16, address=default_load(16))  # fmt: skip
    results = []
    for _ in range(2):
        machine, ended = run(code, 16, 30.0)
        assert isinstance(ended, Halt)
        results.append((ended.rip, machine.clock.now(), machine.pit.edges,
                        machine.mem.read(0x46C, 4)))  # fmt: skip
    assert results[0] == results[1]
    assert results[0][2] >= 1  # the BIOS's tick came during the spin


def test_the_probe_reads_nothing_past_its_span() -> None:
    assert icount.PROBE_SPAN >= 2 * icount._WORD
    offset = counter_offset()
    assert offset is not None and offset + 2 * icount._WORD <= icount.PROBE_SPAN
