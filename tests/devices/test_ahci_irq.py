"""The AHCI controller's interrupt reaches the guest's 8259A: PCI says IRQ 11 (as firmware routes
it), and a command completion with GHC.IE and PxIE set raises it, through the slave PIC and the
cascade, as a driver that sleeps on its interrupt expects."""

from __future__ import annotations

from pathlib import Path

from hv_emu import layout
from hv_emu.devices.storage import ahci_registers as a
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.ahci import AhciRig

AHCI_BDF = 0x8000_0000 | (0x1F << 11) | (2 << 8)  # 00:1f.2, configuration mechanism #1
MASTER, SLAVE = layout.PORT_PIC_MASTER, layout.PORT_PIC_SLAVE
OCW3_READ_IRR = 0x0A


def _machine(tmp_path: Path) -> Machine:
    return Machine(MachineConfig(disk=tmp_path / "d.img", disk_size_mib=1, mem_mib=8,
                                 disk_controller="ahci"))  # fmt: skip


def _init_pics(m: Machine) -> None:
    """ICW1-4 as a PC's firmware programs the pair (bases 08h and 70h, cascade on IRQ2), every
    input unmasked."""
    for port, value in ((MASTER, 0x11), (MASTER + 1, 0x08), (MASTER + 1, 0x04),
                        (MASTER + 1, 0x01), (SLAVE, 0x11), (SLAVE + 1, 0x70), (SLAVE + 1, 0x02),
                        (SLAVE + 1, 0x01), (MASTER + 1, 0x00), (SLAVE + 1, 0x00)):  # fmt: skip
        m.bus.write(port, 1, value)


def _irr(m: Machine, port: int) -> int:
    m.bus.write(port, 1, OCW3_READ_IRR)
    return m.bus.read(port, 1)


def test_the_interrupt_line_register_says_irq_11(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    m.bus.write(layout.PORT_PCI_CONFIG_ADDRESS, 4, AHCI_BDF | 0x3C)
    line_and_pin = m.bus.read(layout.PORT_PCI_CONFIG_DATA, 2)
    assert line_and_pin == layout.IRQ_AHCI | 1 << 8  # line 11, pin INTA
    m.close()


def test_a_completion_raises_irq_11_only_when_enabled(tmp_path: Path) -> None:
    m = _machine(tmp_path)
    assert m.ahci is not None
    _init_pics(m)
    rig = AhciRig.on(m.ahci, m.mem)
    rig.bring_up()
    rig.write_dma(0, 8, bytes(range(256)) * 2)  # GHC.IE clear: polled, no interrupt
    assert rig.ok() and not _irr(m, SLAVE) & 1 << (layout.IRQ_AHCI - 8)
    rig.set_port(a.PX_IS, 0xFFFFFFFF)
    rig.write(a.HOST_IS, 0xFFFFFFFF)
    rig.write(a.HOST_GHC, a.GHC_AE | a.GHC_IE)
    rig.set_port(a.PX_IE, a.IS_DHRS)
    rig.write_dma(0, 9, bytes(512))
    assert rig.ok()
    assert _irr(m, SLAVE) & 1 << (layout.IRQ_AHCI - 8)  # IRQ 11 is the slave's input 3
    assert _irr(m, MASTER) & 1 << 2  # and the slave asks the master on the cascade, IRQ2
    assert m.disk is not None and m.disk.read_sectors(8, 1) == bytes(range(256)) * 2
    m.close()
