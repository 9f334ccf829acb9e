"""The vCPU's side of INTR at VM entry: an interrupt the guest can take is acknowledged and
injected; one held off by IF = 0 or by the STI shadow opens an interrupt window instead."""

from __future__ import annotations

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import StopRequest
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.injection import EventType
from hv_emu.vcpu.platform import WINDOW_BUDGET


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
