"""The lean exit path: port I/O straight to the bus while nobody watches, the same to the guest.

Without an exit observer the vCPU's IN and OUT hooks call the bus's resolved handler of the port
directly; with one, every port access is a ``PortIn``/``PortOut`` value passed through ``dispatch``.
These tests run the same guests both ways and compare everything the guest or a device can see.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from hv_emu.bus import PortIoBus
from hv_emu.exits import Exit, Halt, Outcome, PortIn, PortOut
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.ports import Fifo

PORTS_GUEST = """
    mov dx, 0xe9
    in al, dx            # the debug console reads back 0xe9
    movzx r12, al
    mov dx, 0x80
    in eax, dx           # nobody there: all ones
    mov r13, rax
    in ax, 0x81
    movzx r14, ax
    out 0x80, al
    mov al, 0x41
    out 0xe9, al
    mov dx, 0x300
    mov edi, 0x200000
    mov ecx, 64
    rep insw
    in eax, dx           # a 4-byte IN of the fifo: one call
    mov r15, rax
    mov esi, 0x200000
    mov ecx, 64
    rep outsw
    out dx, eax
    hlt
"""


def _run(source: str, *, watched: bool) -> tuple[Machine, Fifo, list[Exit]]:
    machine = Machine(MachineConfig(timeout=10.0))
    fifo = Fifo()
    machine.bus.register(0x300, 2, fifo, "fifo")
    seen: list[Exit] = []
    if watched:
        machine.exit_observers.append(lambda e, _o, _s: seen.append(e))
    machine.load(assemble(source, mode=64, address=0x100000))
    assert isinstance(machine.run().exit, Halt)
    return machine, fifo, seen


def test_direct_and_dispatched_port_exits_look_the_same_to_guest_and_devices() -> None:
    direct, fifo_d, seen_d = _run(PORTS_GUEST, watched=False)
    watched, fifo_w, seen_w = _run(PORTS_GUEST, watched=True)
    regs = ("r12", "r13", "r14", "r15", "rsi", "rdi", "rcx")
    assert {r: direct.vcpu.reg(r) for r in regs} == {r: watched.vcpu.reg(r) for r in regs}
    assert direct.mem.read(0x200000, 128) == watched.mem.read(0x200000, 128)
    assert fifo_d.written == fifo_w.written and fifo_d.next == fifo_w.next == 66
    assert direct.bus.unknown == watched.bus.unknown
    assert direct.vcpu.reg("r13") == 0xFFFFFFFF and direct.vcpu.reg("r12") == 0xE9
    # The watched run saw every port access as an exit value, one per string element.
    assert seen_d == []
    ports = [e for e in seen_w if isinstance(e, PortIn | PortOut)]
    assert len(ports) == 3 + 2 + 64 + 1 + 64 + 1


class Boom:
    """A device whose every access raises: a host bug inside a hook."""

    def io_read(self, offset: int, size: int) -> int:
        raise RuntimeError("device bug on read")

    def io_write(self, offset: int, size: int, value: int) -> None:
        raise RuntimeError("device bug on write")


@pytest.mark.parametrize("insn", ["in al, dx", "out dx, al"])
@pytest.mark.parametrize("watched", [False, True])
def test_an_exception_in_a_device_is_raised_from_run_not_lost_in_unicorn(
    insn: str, watched: bool
) -> None:
    """docs/UNICORN.md U22 and U34: the raw hooks catch everything and the run loop re-raises."""
    machine = Machine(MachineConfig(timeout=10.0))
    machine.bus.register(0x300, 1, Boom(), "boom")
    if watched:
        machine.exit_observers.append(lambda _e, _o, _s: None)
    machine.load(assemble(f"mov dx, 0x300\n{insn}\nhlt\n", mode=64, address=0x100000))
    with pytest.raises(RuntimeError, match="device bug"):
        machine.run()


def test_observers_attached_mid_life_see_port_exits() -> None:
    machine = Machine(MachineConfig(timeout=10.0))
    machine.load(assemble("out 0x80, al\nin al, 0x80\nhlt\n", mode=64, address=0x100000))
    seen: list[tuple[Exit, Outcome]] = []
    machine.exit_observers.append(lambda e, o, _s: seen.append((e, o)))
    machine.run()
    assert [type(e) for e, _ in seen] == [PortOut, PortIn, Halt]


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def io_read(self, offset: int, size: int) -> int:
        self.log.append(("in", offset, size, 0))
        return 0x89ABCDEF

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("out", offset, size, value))


@settings(max_examples=60, deadline=None)
@given(port=st.integers(0, 0xFFFF), size=st.sampled_from([1, 2, 4]),
       value=st.integers(0, 0xFFFFFFFF))  # fmt: skip
def test_the_resolved_tables_answer_as_read_and_write_do(port: int, size: int, value: int) -> None:
    tables, checked = PortIoBus(), PortIoBus()
    devices = (Recorder(), Recorder())
    for bus, dev in zip((tables, checked), devices, strict=True):
        bus.register(0x1F0, 8, dev, "ata")
        bus.register(0x3F6, 1, Recorder(), "ctrl")
    assert tables.readers[port](port, size) == checked.read(port, size)
    tables.writers[port](port, size, value)
    checked.write(port, size, value)
    assert devices[0].log == devices[1].log
    assert tables.unknown == checked.unknown
    owner = tables.find(port)
    assert (owner is not None) == (0x1F0 <= port < 0x1F8 or port == 0x3F6)


@pytest.mark.parametrize(("mode", "paging"), [(64, "none"), (32, "pae"), (32, "2level")])
def test_fetched_bytes_match_the_page_walk_and_a_failed_read_overwrites_cr2(
    mode: int, paging: str
) -> None:
    """docs/UNICORN.md U36: ``uc_vmem_read`` reads code through the CPU's own MMU, the same
    bytes as the hypervisor's walk; when the address is unmapped it fails and sets CR2, which
    is why the #UD hook asks it only for bytes the CPU has just fetched."""
    from hv_emu.hypercalls.abi import VMCALL_BYTES
    from hv_emu.memory.walk import read_virt

    machine = Machine(MachineConfig(timeout=10.0))
    machine.load(assemble("vmcall\nhlt\n", mode=mode, address=0x100000), mode=mode,
                 paging=paging)  # fmt: skip
    vcpu = machine.vcpu
    state = vcpu.paging_state()
    assert vcpu.fetched_bytes(0x100000, 3) == read_virt(machine.mem, state, 0x100000, 3)
    assert vcpu.fetched_bytes(0x100000, 3) == VMCALL_BYTES
    assert vcpu.fetched_bytes(0x100FFE, 3) is None  # would cross a page: left to the walk
    unmapped = 0xFFC00000  # beyond the identity map of 64 MiB of RAM, in every paging mode
    assert vcpu.reg("cr2") == 0
    assert vcpu.fetched_bytes(unmapped, 3) is None
    assert vcpu.reg("cr2") == unmapped
