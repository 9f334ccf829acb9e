"""Delivery against hostile tables: whatever the IDT, GDT and TSS hold and whatever their limits,
one injection is a delivery to what the gate names, an escalation the SDM allows, a refusal or
a triple fault, never a Python exception (Hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from unicorn import x86_const as X

from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.deliver import inject
from hv_emu.vcpu.injection import (
    DOUBLE_FAULT,
    Delivered,
    Event,
    EventType,
    Refused,
    hardware_exception,
)

IDT, GDT, TSS = 0x3000, 0x800, 0x4000
#: The loader's flat GDT (null, code32, data, code64) is kept in the first four entries.
LOADER_GDT = 4 * 8

EVENTS = st.one_of(
    st.builds(Event, st.integers(0, 255), st.just(EventType.EXTERNAL_INTERRUPT)),
    st.builds(Event, st.integers(0, 255), st.just(EventType.SOFTWARE_INTERRUPT),
              instruction_length=st.just(2)),
    st.sampled_from([hardware_exception(13, 0x10), hardware_exception(14, 2, cr2=0x1234),
                     hardware_exception(0), hardware_exception(8, 0)]),
)  # fmt: skip


@st.composite
def gates(draw: st.DrawFn, mode: int) -> bytes:
    """One IDT entry, mostly plausible: a selector of the loader's GDT or not, a gate type
    among those the CPU knows or not, present or not, any DPL, any offset, any IST."""
    selector = draw(st.sampled_from([0x08, 0x18, 0x10, 0x0B, 0x00, 0x20, 0x28, 0x38, 0x1234]))
    kind = draw(st.sampled_from([0xE, 0xF, 0xE, 0xF, 0x5, 0x6, 0x7, 0xC, 0x0]))
    present = draw(st.sampled_from([1, 1, 1, 0]))
    dpl = draw(st.integers(0, 3))
    offset = draw(st.integers(0, 2**64 - 1 if mode == 64 else 2**32 - 1))
    ist = draw(st.integers(0, 7)) if mode == 64 else 0
    low = (selector << 16) | (offset & 0xFFFF)
    high = (offset & 0xFFFF0000) | present << 15 | dpl << 13 | kind << 8 | ist
    entry = struct.pack("<II", low, high)
    return entry + struct.pack("<II", offset >> 32, 0) if mode == 64 else entry


@pytest.fixture(scope="module")
def machines() -> dict[int, Machine]:
    made = {}
    for mode in (32, 64):
        machine = Machine(MachineConfig(mem_mib=2, timeout=5.0))
        machine.load(b"\xf4", mode=mode)
        made[mode] = machine
    return made


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from([32, 64]), data=st.data(), idt_limit=st.integers(1, 0xFFFF),
       gdt_extra=st.binary(max_size=64),
       tss=st.binary(max_size=104), tr_limit=st.integers(0, 0x80), cpl3=st.booleans(),
       event_=EVENTS)  # fmt: skip
def test_any_tables_give_a_delivery_an_escalation_or_a_report(
    machines: dict[int, Machine], mode: int, data: st.DataObject, idt_limit: int,
    gdt_extra: bytes,
    tss: bytes, tr_limit: int, cpl3: bool, event_: Event,
) -> None:
    size = 16 if mode == 64 else 8
    idt = bytearray(data.draw(st.binary(max_size=256 * size)).ljust(256 * size, b"\0"))
    for vector in {event_.vector, 8, 10, 11, 12, 13, 14}:
        idt[vector * size:(vector + 1) * size] = data.draw(gates(mode))
    machine = machines[mode]
    assert machine.boot is not None
    machine.vcpu.reset(machine.boot)
    vcpu, mem = machine.vcpu, machine.mem
    mem.write(IDT, bytes(idt))
    mem.write(GDT + LOADER_GDT, gdt_extra.ljust(64, b"\0"))
    mem.write(TSS, tss.ljust(104, b"\0"))
    vcpu.uc.reg_write(X.UC_X86_REG_IDTR, (0, IDT, idt_limit, 0))
    vcpu.uc.reg_write(X.UC_X86_REG_GDTR, (0, GDT, LOADER_GDT + 63, 0))
    vcpu.uc.reg_write(X.UC_X86_REG_TR, (0x40, TSS, tr_limit, 0x8B00))
    if cpl3:  # the CPL lives in SS's DPL (hflags): a ring-3 interrupted context
        vcpu.hidden.load()
        sel, base, limit, flags = vcpu.hidden.segment(2)
        vcpu.hidden.load_segment(2, sel | 3, base, limit, flags | (3 << 13),
                                 vcpu.reg("cr0"), vcpu.reg("rflags"))  # fmt: skip
        vcpu.hidden.store()
    vcpu.set_reg("rflags", vcpu.reg("rflags") | 0x200)  # IF set: a gate's kind decides
    injection = inject(vcpu, vcpu.hidden, event_)
    result = injection.result
    event(type(result).__name__)
    assert injection.events[0] == event_
    assert 1 <= len(injection.events) <= 6
    if result is None:  # a triple fault: the last event tried was a #DF
        assert injection.events[-1].vector == DOUBLE_FAULT
        return
    assert isinstance(result, (Delivered, Refused))
    if isinstance(result, Delivered):
        delivered = injection.events[-1]
        gate = mem.read(IDT + delivered.vector * size, 8)
        low, high = struct.unpack("<II", gate)
        assert result.cs & ~3 == (low >> 16) & ~3
        assert vcpu.reg("rip") == result.rip
        assert result.rip & 0xFFFF == low & 0xFFFF
        assert delivered.vector * size + size - 1 <= idt_limit
        assert high & 0x8000  # present
        trap_gate = (high >> 8) & 1  # 0xF (or 0x7): a trap gate leaves IF as it was
        assert bool(vcpu.reg("rflags") & 0x200) == bool(trap_gate)
