"""The AHCI function in PCI configuration space: 00:1f.2 as QEMU q35 shows it after SeaBIOS, only
when the machine has an AHCI controller; BAR5 sizing; the Bus Master Enable the HBA obeys."""

from __future__ import annotations

from hv_emu import layout
from hv_emu.devices.pci import PciConfigSpace
from hv_emu.devices.storage import ahci_registers as a
from tests.rigs.ahci import AhciRig, h2d

AHCI = 0x8000FA00  # bus 0, device 0x1f, function 2
LPC = 0x8000F800


def cfg_read(pci: PciConfigSpace, address: int, size: int = 4, offset: int = 0) -> int:
    pci.address_port.io_write(0, 4, address)
    return pci.data_port.io_read(offset, size)


def cfg_write(pci: PciConfigSpace, address: int, value: int) -> None:
    pci.address_port.io_write(0, 4, address)
    pci.data_port.io_write(0, 4, value)


def test_the_function_is_there_only_with_ahci() -> None:
    assert cfg_read(PciConfigSpace(layout.PORT_BUSMASTER), AHCI) == 0xFFFFFFFF
    pci = PciConfigSpace(layout.PORT_BUSMASTER, ahci_abar=layout.AHCI_ABAR)
    assert cfg_read(pci, AHCI) == 0x29228086
    assert cfg_read(pci, AHCI + 0x08) == 0x01060102  # class 01/06/01, revision 2
    assert cfg_read(pci, AHCI + 0x24) == layout.AHCI_ABAR  # BAR5, preassigned
    assert cfg_read(pci, AHCI + 0x10) == cfg_read(pci, AHCI + 0x20) == 0  # BAR0-4 empty
    assert cfg_read(pci, AHCI + 0x04, 2) == 0x0006  # memory space, bus master
    assert cfg_read(pci, AHCI + 0x3C, 1, 1) == 1  # INTA
    assert cfg_read(pci, LPC) == 0x29188086 and cfg_read(pci, LPC + 0x0C, 1, 2) == 0x80


def test_bar5_sizes_as_4_kib_and_cannot_move() -> None:
    pci = PciConfigSpace(layout.PORT_BUSMASTER, ahci_abar=layout.AHCI_ABAR)
    cfg_write(pci, AHCI + 0x24, 0xFFFFFFFF)
    assert cfg_read(pci, AHCI + 0x24) == 0xFFFFF000
    cfg_write(pci, AHCI + 0x24, 0x12340000)
    assert cfg_read(pci, AHCI + 0x24) == layout.AHCI_ABAR
    cfg_write(pci, AHCI, 0)  # IDs are read-only
    assert cfg_read(pci, AHCI) == 0x29228086
    snapshot = pci.snapshot()
    cfg_write(pci, AHCI + 0x04, 0)
    assert not pci.ahci_bus_master_enabled()
    pci.load_snapshot(snapshot)
    assert pci.ahci_bus_master_enabled()


def test_commands_fail_while_bus_mastering_is_off() -> None:
    pci = PciConfigSpace(layout.PORT_BUSMASTER, ahci_abar=layout.AHCI_ABAR)
    rig = AhciRig(enabled=pci.ahci_bus_master_enabled)
    rig.bring_up()
    cfg_write(pci, AHCI + 0x04, 0x0002)  # memory space only
    rig.prepare(0, h2d(0xEA), [])
    rig.issue(1)
    assert rig.port(a.PX_IS) & (a.IS_HBFS | a.IS_TFES) and rig.port(a.PX_CI) == 1
