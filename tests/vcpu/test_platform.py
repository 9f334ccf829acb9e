"""The vCPU's side of INTR at VM entry: an interrupt the guest can take is acknowledged and
injected; one held off by IF = 0 or by the STI shadow opens an interrupt window instead."""

from __future__ import annotations

import pytest
import unicorn
from unicorn import x86_const

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import Halt, StopRequest
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.injection import IF, Event, EventType
from hv_emu.vcpu.platform import WINDOW_BUDGET, WINDOW_BUDGET_MAX


def machine_at(source: str) -> Machine:
    machine = Machine(MachineConfig(timeout=5.0))
    machine.load(assemble(source, mode=16, address=layout.DEFAULT_LOAD_REAL), mode=16)
    pic = machine.pic
    for port, value in ((0, 0x11), (1, 0x08), (1, 0x04), (1, 0x01), (1, 0x00)):
        pic.master.io_write(port, 1, value)  # vectors 0x08-0x0F, all unmasked
    return machine


def test_the_sti_shadow_holds_an_interrupt_for_one_instruction() -> None:
    machine = machine_at("sti\n nop\n hlt")
    vcpu = machine.vcpu
    assert isinstance(vcpu.run(5.0, steps=1), StopRequest)  # STI done, the shadow on
    machine.pic.set_irq(0, True)
    vcpu.hidden.load()
    assert vcpu.hidden.interrupt_shadow
    vcpu.sync_platform()
    assert vcpu.pending_event is None and vcpu.budget == WINDOW_BUDGET
    vcpu.pending_event = None
    assert isinstance(vcpu.run(5.0, steps=1), StopRequest)  # the NOP: the shadow is over
    vcpu.hidden.load()
    assert not vcpu.hidden.interrupt_shadow
    vcpu.sync_platform()
    event = vcpu.pending_event
    assert event is not None and (event.vector, event.type) == (0x08,
                                                                EventType.EXTERNAL_INTERRUPT)


def test_if_clear_opens_a_window_and_acknowledges_nothing() -> None:
    machine = machine_at("cli\n nop\n hlt")
    vcpu = machine.vcpu
    vcpu.run(5.0, steps=1)
    machine.pic.set_irq(3, True)
    vcpu.sync_platform()
    assert vcpu.pending_event is None and vcpu.budget == WINDOW_BUDGET
    assert machine.pic.master.irr == 0b1000 and machine.pic.master.isr == 0


@pytest.mark.parametrize("flag", ["sti", "cli"])
def test_an_interrupt_due_at_an_int_n_is_taken_before_it(flag: str) -> None:
    """IF = 1: the INT n is undone (RIP back on it) and the interrupt injected first; IF = 0:
    the INT n goes ahead and the interrupt waits."""
    machine = machine_at(f"{flag}\n nop\n nop\n hlt")
    vcpu = machine.vcpu
    vcpu.run(5.0, steps=3)  # the flag, then two bytes that stand for an INT n's `cd 30`
    int_n = Event(0x30, EventType.SOFTWARE_INTERRUPT, instruction_length=2)  # as the hook keeps
    vcpu.pending_event = int_n
    after = vcpu.reg("rip")
    machine.pic.set_irq(0, True)
    vcpu.sync_platform()
    if flag == "sti":
        assert vcpu.pending_event == Event(0x08, EventType.EXTERNAL_INTERRUPT)
        assert vcpu.reg("rip") == after - 2
    else:
        assert vcpu.pending_event == int_n and vcpu.reg("rip") == after
        assert machine.pic.master.irr == 1


def test_the_window_budget_doubles_while_if_stays_clear_and_resets_once_it_is_taken() -> None:
    machine = machine_at("cli\n nop\n hlt")
    vcpu = machine.vcpu
    vcpu.run(5.0, steps=1)
    vcpu.timer = None  # no deadline: the window alone sets the budget
    machine.pic.set_irq(3, True)
    budgets = []
    for _ in range(10):
        vcpu.sync_platform()
        budgets.append(vcpu.budget)
    assert budgets == [min(WINDOW_BUDGET << i, WINDOW_BUDGET_MAX) for i in range(10)]
    assert budgets[-1] == WINDOW_BUDGET_MAX
    vcpu.set_reg("rflags", vcpu.reg("rflags") | IF)
    vcpu.sync_platform()  # IF = 1: the interrupt is taken, the window is closed
    assert vcpu.pending_event is not None and vcpu.budget is None
    vcpu.pending_event = None
    vcpu.set_reg("rflags", vcpu.reg("rflags") & ~IF)
    machine.pic.set_irq(1, True)  # above IRQ3, in service: pending
    vcpu.sync_platform()
    assert vcpu.budget == WINDOW_BUDGET


#: IRQ0 pending almost at once (PIT mode 0, two input clocks) while the guest keeps IF = 0 for
#: 6M instructions, long enough for the window budget to reach its cap; then STI and a counting
#: loop (2 instructions an iteration) that the IRQ0 handler ends.
LATE_STI = """
    cli
    xor ax, ax
    mov ds, ax
    mov word ptr [0x08*4], tick
    mov word ptr [0x08*4+2], 0
    mov al, 0xfe
    out 0x21, al
    mov al, 0x30
    out 0x43, al
    mov al, 2
    out 0x40, al
    xor al, al
    out 0x40, al
    mov ecx, 3000000
spin:
    dec ecx
    jnz spin
    xor ebx, ebx
    sti
count:
    inc ebx
    jmp count
tick:
    cli
    hlt
"""


def late_sti_count() -> int:
    machine = machine_at(LATE_STI)
    assert isinstance(machine.run().exit, Halt)
    return machine.vcpu.reg("rbx")


def test_an_sti_after_a_long_cli_is_noticed_within_the_capped_window_budget() -> None:
    """The cost of not hooking STI: the interrupt arrives at most WINDOW_BUDGET_MAX
    instructions (about 10.5 ms of guest time) after it, the same count in every run."""
    counted = late_sti_count()
    assert 2 * counted <= WINDOW_BUDGET_MAX
    assert late_sti_count() == counted


@pytest.mark.parametrize("insn", ["UC_X86_INS_STI", "UC_X86_INS_POPF", "UC_X86_INS_IRET"])
def test_unicorn_has_no_hook_for_the_instructions_that_set_if(insn: str) -> None:
    """docs/UNICORN.md U47: why the window is polled on a budget, not hooked."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_16)
    uc.hook_add(unicorn.UC_HOOK_INSN, lambda *_: None, None, 1, 0, x86_const.UC_X86_INS_CPUID)
    with pytest.raises(unicorn.UcError):
        uc.hook_add(unicorn.UC_HOOK_INSN, lambda *_: None, None, 1, 0, getattr(x86_const, insn))
