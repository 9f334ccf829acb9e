"""PCI configuration space (mechanism #1) with the functions of a PIIX3-style chipset.

Models: the two I/O registers of configuration mechanism #1, CONFIG_ADDRESS (a 32-bit register:
enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2) and CONFIG_DATA (1, 2 or 4
bytes at offsets 0-3 of the selected dword), in front of three functions on bus 0:
- 00:00.0 host bridge, Intel 440FX (8086:1237), class 06/00/00;
- 00:01.0 ISA bridge, Intel PIIX3 (8086:7000), class 06/01/00, multi-function header (so
  enumerators that only probe function 0 go on to function 1);
- 00:01.1 IDE controller, Intel PIIX3 IDE (8086:7010), class 01/01/80: both channels in
  compatibility mode (fixed ports, prog-if bits 0-3 read-only 0), bus-master capable (bit 7).
  BAR0-3 and BAR5 are hard-wired 0; BAR4 is the bus-master block (16 I/O ports, base from the
  constructor: ``layout.PORT_BUSMASTER``), read as ``base | 1``. IDETIM (0x40-0x41) starts with
  the primary channel's decode enable (bit 15) set, as firmware leaves it (Linux ata_piix checks
  it).
With an AHCI controller (``hv-emu run --disk-controller ahci``; constructor ``ahci_abar``), as
QEMU q35 places it:
- 00:1f.0 LPC bridge, Intel ICH9 (8086:2918), class 06/01/00, multi-function header;
- 00:1f.2 SATA controller, Intel ICH9 AHCI (8086:2922, revision 2), class 01/06/01, interrupt
  pin INTA, interrupt line ``ahci_irq`` (the PIC input the machine wires it to); BAR5 (ABAR) a
  4 KiB non-prefetchable memory BAR preassigned to ``ahci_abar`` as firmware (SeaBIOS) leaves
  it, with Memory Space and Bus Master Enable set; BAR0-4 read 0.
Every other bus/device/function is absent: vendor/device read 0xFFFF (all ones).

Follows: PCI Local Bus Specification 3.0 (3.2.2.3.2 mechanism #1, 6.1 header type 0, 6.2.5.1
BAR sizing), PCI IDE Controller Specification 1.0 (prog-if), Intel 82371SB (PIIX3) datasheet.

Leaves out:
- Moving BAR5 (sizing reads 0xFFFFF000; other writes are ignored: the MMIO window is mapped
  once), the AHCI function's Memory Space Enable (stored, not honoured), MSI and the SATA
  capability.
- Moving BAR4. BAR sizing works (write all ones, read back 0x0000FFF1: 16 ports, I/O space,
  upper half hard-wired 0 as on PIIX3); any other write is offered to the ``bar4_moved``
  callback, and ignored (BAR4 keeps its base) when there is none or it declines: the port bus
  cannot move a range yet.
- The command register's I/O Space Enable is stored but not honoured (compatibility-mode ports
  always decode, as on PIIX3); Bus Master Enable *is* honoured: ``bus_master_enabled`` feeds
  ``BusMaster``, which refuses DMA (Error bit, ATA ERR/ABRT) while it is clear. It is set at
  reset, as firmware would leave it.
- Interrupt routing (no interrupt controller), capabilities, expansion ROM, the PIIX3 ISA bridge's
  own registers, mechanism #2, PCI Express extended space, the reset register at 0xCF9 (byte
  accesses to CONFIG_ADDRESS are ignored and read all ones, as the spec requires only dword
  accesses to be claimed).

Guest controls: CONFIG_ADDRESS, and writes to the writable bits of the IDE function's header
(command register bits 0 and 2, latency timer, interrupt line, BAR4, timing registers 0x40-0x4B).

Threats (threat -> mitigation):
- out-of-range or odd register numbers -> the register field is masked to 7:2 and the byte offset
  comes from the CONFIG_DATA port offset, so every access stays inside the 256-byte space;
- writes to read-only bits (IDs, class, prog-if, status, header type) -> per-byte write masks;
- BAR4 rewritten to overlap other devices -> ignored unless the machine's callback accepts it;
- probing absent functions -> all ones, no state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from hv_emu.devices.port import PortView

CONFIG_SPACE = 256
ADDR_ENABLE = 0x80000000

# ------------------------------------------------------------------ type 0 header offsets
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION = 0x08
PCI_PROG_IF = 0x09
PCI_SUBCLASS = 0x0A
PCI_CLASS = 0x0B
PCI_LATENCY = 0x0D
PCI_HEADER_TYPE = 0x0E
PCI_BAR0 = 0x10
PCI_BAR4 = 0x20
PCI_BAR5 = 0x24
PCI_INTERRUPT_PIN = 0x3D
PCI_INTERRUPT_LINE = 0x3C
PIIX_IDETIM = 0x40  # primary channel timing; bit 15 = IDE decode enable
PIIX_TIMING_END = 0x4C

CMD_IO_SPACE = 0x0001
CMD_MEMORY_SPACE = 0x0002
CMD_BUS_MASTER = 0x0004
HEADER_MULTIFUNCTION = 0x80
BAR_IO = 0x1
BUSMASTER_SIZE = 16
BAR4_MASK = 0xFFFF & ~(BUSMASTER_SIZE - 1)  # writable bits 15:4

INTEL = 0x8086
IDE_BDF = (0, 1, 1)
LPC_BDF = (0, 0x1F, 0)
AHCI_BDF = (0, 0x1F, 2)
ABAR_SIZE = 0x1000  # QEMU's BAR5 size
ABAR_MASK = 0xFFFFFFFF & ~(ABAR_SIZE - 1)


def _header(vendor: int, device: int, cls: int, sub: int, prog_if: int, header: int) -> bytearray:
    cfg = bytearray(CONFIG_SPACE)
    struct.pack_into("<HH", cfg, PCI_VENDOR_ID, vendor, device)
    struct.pack_into("<H", cfg, PCI_STATUS, 0x0280)  # medium DEVSEL, fast back-to-back
    cfg[PCI_PROG_IF], cfg[PCI_SUBCLASS], cfg[PCI_CLASS] = prog_if, sub, cls
    cfg[PCI_HEADER_TYPE] = header
    return cfg


@dataclass
class PciState:
    address: int  # CONFIG_ADDRESS as last written
    ide: bytearray  # the IDE function's configuration space
    bar4_sizing: bool  # all ones were written to BAR4; reads give the size mask
    ahci: bytearray = field(default_factory=bytearray)  # the AHCI function's space (or empty)
    bar5_sizing: bool = False


class PciConfigSpace:
    """Configuration mechanism #1. Register ``address_port`` at CONFIG_ADDRESS and ``data_port``
    at CONFIG_DATA, 4 ports each."""

    def __init__(
        self, busmaster_base: int, bar4_moved: Callable[[int], bool] | None = None,
        ahci_abar: int | None = None, ahci_irq: int = 0xFF,
    ) -> None:
        if busmaster_base & ~BAR4_MASK:
            raise ValueError(f"bus-master base {busmaster_base:#x} is not a 16-port I/O base")
        if ahci_abar is not None and ahci_abar & ~ABAR_MASK:
            raise ValueError(f"ABAR {ahci_abar:#x} is not a 4 KiB memory base")
        self._ahci_abar = ahci_abar
        self._ahci_irq = ahci_irq
        self._initial_base = busmaster_base
        self._bar4_moved = bar4_moved
        self.address_port = PortView(self._address_read, self._address_write)
        self.data_port = PortView(self._data_read, self._data_write)
        self._fixed = {
            (0, 0, 0): _header(INTEL, 0x1237, 0x06, 0x00, 0x00, 0x00),
            (0, 1, 0): _header(INTEL, 0x7000, 0x06, 0x01, 0x00, HEADER_MULTIFUNCTION),
        }
        if ahci_abar is not None:
            self._fixed[LPC_BDF] = _header(INTEL, 0x2918, 0x06, 0x01, 0x00, HEADER_MULTIFUNCTION)
        self._ahci_wmask = bytearray(CONFIG_SPACE)
        self._ahci_wmask[PCI_COMMAND] = CMD_IO_SPACE | CMD_MEMORY_SPACE | CMD_BUS_MASTER
        self._ahci_wmask[PCI_LATENCY] = self._ahci_wmask[PCI_INTERRUPT_LINE] = 0xFF
        self._wmask = bytearray(CONFIG_SPACE)
        self._wmask[PCI_COMMAND] = CMD_IO_SPACE | CMD_BUS_MASTER
        self._wmask[PCI_LATENCY] = 0xFF
        self._wmask[PCI_INTERRUPT_LINE] = 0xFF
        self._wmask[PIIX_IDETIM:PIIX_TIMING_END] = b"\xff" * (PIIX_TIMING_END - PIIX_IDETIM)
        self.st = self._initial_state()

    def _initial_state(self) -> PciState:
        ide = _header(INTEL, 0x7010, 0x01, 0x01, 0x80, HEADER_MULTIFUNCTION)
        struct.pack_into("<H", ide, PCI_COMMAND, CMD_IO_SPACE | CMD_BUS_MASTER)
        struct.pack_into("<I", ide, PCI_BAR4, self._initial_base | BAR_IO)
        struct.pack_into("<H", ide, PIIX_IDETIM, 0x8000)  # primary channel decode enabled
        ahci = bytearray()
        if self._ahci_abar is not None:
            ahci = _header(INTEL, 0x2922, 0x01, 0x06, 0x01, 0x00)
            ahci[PCI_REVISION] = 0x02
            struct.pack_into("<H", ahci, PCI_COMMAND, CMD_MEMORY_SPACE | CMD_BUS_MASTER)
            struct.pack_into("<I", ahci, PCI_BAR5, self._ahci_abar)  # memory, 32-bit
            ahci[PCI_INTERRUPT_PIN] = 1
            ahci[PCI_INTERRUPT_LINE] = self._ahci_irq  # as firmware leaves it routed
        return PciState(0, ide, False, ahci)

    def reset(self) -> None:
        self.st = self._initial_state()

    def snapshot(self) -> PciState:
        st = self.st
        return PciState(st.address, bytearray(st.ide), st.bar4_sizing, bytearray(st.ahci),
                        st.bar5_sizing)  # fmt: skip

    def load_snapshot(self, state: PciState) -> None:
        self.st = PciState(state.address, bytearray(state.ide), state.bar4_sizing,
                           bytearray(state.ahci), state.bar5_sizing)  # fmt: skip

    # ------------------------------------------------------------------ what the machine asks
    def bus_master_enabled(self) -> bool:
        return bool(self.st.ide[PCI_COMMAND] & CMD_BUS_MASTER)

    def ahci_bus_master_enabled(self) -> bool:
        return bool(self.st.ahci) and bool(self.st.ahci[PCI_COMMAND] & CMD_BUS_MASTER)

    def io_space_enabled(self) -> bool:
        return bool(self.st.ide[PCI_COMMAND] & CMD_IO_SPACE)

    @property
    def busmaster_base(self) -> int:
        return int(struct.unpack_from("<I", self.st.ide, PCI_BAR4)[0]) & BAR4_MASK

    # ------------------------------------------------------------------ CONFIG_ADDRESS
    def _address_read(self, offset: int, size: int) -> int:
        return self.st.address if offset == 0 and size == 4 else 0xFFFFFFFF

    def _address_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:  # only dword accesses select a register
            self.st.address = value & 0x80FFFFFC

    def _selected(self) -> tuple[tuple[int, int, int], int] | None:
        a = self.st.address
        if not a & ADDR_ENABLE:
            return None
        return ((a >> 16) & 0xFF, (a >> 11) & 0x1F, (a >> 8) & 0x7), a & 0xFC

    # ------------------------------------------------------------------ CONFIG_DATA
    def _data_read(self, offset: int, size: int) -> int:
        sel = self._selected()
        ones = (1 << (8 * size)) - 1
        if sel is None or offset + size > 4:
            return ones
        bdf, reg = sel
        start = reg + offset
        if bdf == IDE_BDF:
            cfg = bytearray(self.st.ide)
            if self.st.bar4_sizing:
                struct.pack_into("<I", cfg, PCI_BAR4, BAR4_MASK | BAR_IO)
        elif bdf == AHCI_BDF and self.st.ahci:
            cfg = bytearray(self.st.ahci)
            if self.st.bar5_sizing:
                struct.pack_into("<I", cfg, PCI_BAR5, ABAR_MASK)
        elif bdf in self._fixed:
            cfg = self._fixed[bdf]
        else:
            return ones  # no such function: vendor 0xFFFF
        return int.from_bytes(cfg[start : start + size], "little")

    def _data_write(self, offset: int, size: int, value: int) -> None:
        sel = self._selected()
        if sel is not None and offset + size <= 4 and sel[0] == AHCI_BDF and self.st.ahci:
            self._ahci_write(sel[1] + offset, size, value)
            return
        if sel is None or offset + size > 4 or sel[0] != IDE_BDF:
            return  # absent functions and the bridges ignore writes
        start = sel[1] + offset
        ide = self.st.ide
        for i in range(size):
            pos, byte = start + i, (value >> (8 * i)) & 0xFF
            if PCI_BAR4 <= pos < PCI_BAR4 + 4:
                continue  # handled as a whole register below
            ide[pos] = (ide[pos] & ~self._wmask[pos]) | (byte & self._wmask[pos])
        if start < PCI_BAR4 + 4 and start + size > PCI_BAR4:
            self._write_bar4(start, size, value)

    def _write_bar4(self, start: int, size: int, value: int) -> None:
        # The driver either sizes BAR4 (all ones, read back, restore) or moves it.
        current = int(struct.unpack_from("<I", self.st.ide, PCI_BAR4)[0])
        seen = current if not self.st.bar4_sizing else (BAR4_MASK | BAR_IO)
        raw = bytearray(struct.pack("<I", seen))
        for i in range(size):
            pos = start + i
            if PCI_BAR4 <= pos < PCI_BAR4 + 4:
                raw[pos - PCI_BAR4] = (value >> (8 * i)) & 0xFF
        written = int.from_bytes(raw, "little") & BAR4_MASK
        if written == BAR4_MASK:
            self.st.bar4_sizing = True
            return
        self.st.bar4_sizing = False
        old_base = current & BAR4_MASK
        if written != old_base and self._bar4_moved is not None and self._bar4_moved(written):
            struct.pack_into("<I", self.st.ide, PCI_BAR4, written | BAR_IO)

    def _ahci_write(self, start: int, size: int, value: int) -> None:
        """The AHCI function: command, latency, interrupt line; BAR5 sizing only."""
        cfg = self.st.ahci
        for i in range(size):
            pos, byte = start + i, (value >> (8 * i)) & 0xFF
            cfg[pos] = (cfg[pos] & ~self._ahci_wmask[pos]) | (byte & self._ahci_wmask[pos])
        if start == PCI_BAR5 and size == 4:
            self.st.bar5_sizing = value & ABAR_MASK == ABAR_MASK
