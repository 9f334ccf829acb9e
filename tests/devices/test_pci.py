"""PCI configuration mechanism #1: what an enumerating driver reads and writes."""

from __future__ import annotations

from hv_emu import layout
from hv_emu.devices.pci import PciConfigSpace
from tests.rigs.devices import Rig

ADDR, DATA = layout.PORT_PCI_CONFIG_ADDRESS, layout.PORT_PCI_CONFIG_DATA


def cfg_read(rig: Rig, bus: int, dev: int, fn: int, reg: int, size: int = 4) -> int:
    rig.outl(ADDR, 0x80000000 | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC))
    return rig.bus.read(DATA + (reg & 3), size)


def cfg_write(rig: Rig, dev: int, fn: int, reg: int, value: int, size: int = 4) -> None:
    rig.outl(ADDR, 0x80000000 | dev << 11 | fn << 8 | (reg & 0xFC))
    rig.bus.write(DATA + (reg & 3), size, value)


def test_ide_function_identity() -> None:
    rig = Rig()
    assert cfg_read(rig, 0, 1, 1, 0x00) == 0x7010_8086
    assert cfg_read(rig, 0, 1, 1, 0x08) >> 8 == 0x01_01_80  # class, subclass, prog-if
    assert cfg_read(rig, 0, 1, 1, 0x0A, 2) == 0x0101
    assert cfg_read(rig, 0, 1, 1, 0x09, 1) == 0x80
    assert cfg_read(rig, 0, 1, 1, 0x20) == layout.PORT_BUSMASTER | 1
    assert cfg_read(rig, 0, 1, 1, 0x04, 2) & 0x05 == 0x05  # I/O space and bus master on
    assert cfg_read(rig, 0, 1, 1, 0x41, 1) & 0x80  # primary channel decode enabled
    assert cfg_read(rig, 0, 0, 0, 0x00) == 0x1237_8086
    assert cfg_read(rig, 0, 1, 0, 0x0E, 1) == 0x80  # multi-function ISA bridge


def test_absent_functions_and_disabled_address() -> None:
    rig = Rig()
    assert cfg_read(rig, 0, 2, 0, 0x00) == 0xFFFFFFFF
    assert cfg_read(rig, 1, 1, 1, 0x00, 2) == 0xFFFF
    rig.outl(ADDR, 0x00000800 | 1 << 8)  # enable bit clear
    assert rig.bus.read(DATA, 4) == 0xFFFFFFFF
    rig.outb(ADDR, 0x12)  # byte writes do not touch CONFIG_ADDRESS
    assert rig.inl(ADDR) == 0x00000900


def test_bar4_sizing_protocol() -> None:
    rig = Rig()
    cfg_write(rig, 1, 1, 0x20, 0xFFFFFFFF)
    assert cfg_read(rig, 0, 1, 1, 0x20) == 0x0000FFF1  # 16 I/O ports, 16-bit decode
    cfg_write(rig, 1, 1, 0x20, layout.PORT_BUSMASTER | 1)
    assert cfg_read(rig, 0, 1, 1, 0x20) == layout.PORT_BUSMASTER | 1
    cfg_write(rig, 1, 1, 0x10, 0xFFFFFFFF)  # BAR0: not implemented in compatibility mode
    assert cfg_read(rig, 0, 1, 1, 0x10) == 0


def test_bar4_move_is_ignored_unless_the_machine_accepts_it() -> None:
    rig = Rig()
    cfg_write(rig, 1, 1, 0x20, 0xD001)
    assert rig.pci.busmaster_base == layout.PORT_BUSMASTER
    moves: list[int] = []

    def accept(base: int) -> bool:
        moves.append(base)
        return True

    pci = PciConfigSpace(layout.PORT_BUSMASTER, bar4_moved=accept)
    pci.address_port.io_write(0, 4, 0x80000000 | 1 << 11 | 1 << 8 | 0x20)
    pci.data_port.io_write(0, 4, 0xD001)
    assert moves == [0xD000] and pci.busmaster_base == 0xD000


def test_read_only_bits_and_command_register() -> None:
    rig = Rig()
    cfg_write(rig, 1, 1, 0x00, 0x12345678)
    cfg_write(rig, 1, 1, 0x08, 0)
    assert cfg_read(rig, 0, 1, 1, 0x00) == 0x7010_8086
    assert cfg_read(rig, 0, 1, 1, 0x08) >> 8 == 0x010180
    cfg_write(rig, 1, 1, 0x04, 0xFFFF, 2)
    assert cfg_read(rig, 0, 1, 1, 0x04, 2) == 0x0005
    cfg_write(rig, 1, 1, 0x04, 0x0001, 2)
    assert not rig.pci.bus_master_enabled() and rig.pci.io_space_enabled()
    cfg_write(rig, 1, 1, 0x3C, 14, 1)
    assert cfg_read(rig, 0, 1, 1, 0x3C, 1) == 14
    snap = rig.pci.snapshot()
    rig.pci.reset()
    assert rig.pci.bus_master_enabled()
    rig.pci.load_snapshot(snap)
    assert not rig.pci.bus_master_enabled()
