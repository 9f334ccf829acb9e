"""The firmware's disk driver: sectors read and written through the ATA channel's ports.

Models: a BIOS's ATA driver (SeaBIOS ``src/hw/ata.c``) doing PIO over the port bus exactly as a
guest driver would: select device 0 with LBA addressing, program the count and the LBA
(LBA28, or LBA48 above 2^28), issue READ SECTORS / WRITE SECTORS (EXT), then for each sector
check Status for DRQ or ERR and move 512 bytes through the data port (writes as one DRQ block
through the bus's block path). Since every byte goes through the same ``AtaChannel``, a sector an
int 13h call writes is inspected like any other write (``inspection.py``): a detection with
``zero-fill`` lands zeros, ``block`` makes the device abort and the call fail.

Follows: ATA8-ACS (READ SECTORS 20h, WRITE SECTORS 30h, their EXT forms 24h/34h), ATA8-APT
(PIO data-in and data-out protocols); SeaBIOS ``ata_pio_transfer`` (Status checked before each
block).

Leaves out: DMA, READ/WRITE MULTIPLE, device 1, timeouts (commands complete synchronously in
hv-emu: a BSY never lasts), IRQ14 (the firmware polls, as SeaBIOS does).

Guest controls: the LBA and count (checked by the caller against the disk's size) and the data
written; the device's answers are the device's.
"""

from __future__ import annotations

from hv_emu.bus import PortIoBus
from hv_emu.devices.storage import ata_registers as r
from hv_emu.errors import GuestFault
from hv_emu.layout import PORT_ATA_PRIMARY, PORT_ATA_PRIMARY_CTRL

SECTOR = r.SECTOR_SIZE
_READ, _READ_EXT, _WRITE, _WRITE_EXT = 0x20, 0x24, 0x30, 0x34
_LBA28_LIMIT = 1 << 28
#: Sectors per command: 256 (count 0) in LBA28.
MAX_PER_COMMAND = 256


class AtaError(GuestFault):
    """The device ended a command with ERR (or never asked for data): the int 13h call fails
    with a status code; the run goes on."""


class AtaPio:
    """PIO transfers on the primary channel's ports of ``bus``."""

    def __init__(self, bus: PortIoBus, base: int = PORT_ATA_PRIMARY,
                 control: int = PORT_ATA_PRIMARY_CTRL) -> None:  # fmt: skip
        self.bus, self.base, self.control = bus, base, control

    def _out(self, reg: int, value: int) -> None:
        self.bus.write(self.base + reg, 1, value)

    def _status(self) -> int:
        return self.bus.read(self.base + r.REG_STATUS, 1)

    def _command(self, lba: int, count: int, opcode: int, opcode_ext: int) -> None:
        ext = lba + count > _LBA28_LIMIT
        if ext:
            self._out(r.REG_DEVICE, r.DEV_LBA)
            for shift in (8, 0):  # HOB first: count 15:8, LBA 47:24
                self._out(r.REG_COUNT, (count >> shift) & 0xFF)
                for i, reg in enumerate((r.REG_LBA_LOW, r.REG_LBA_MID, r.REG_LBA_HIGH)):
                    self._out(reg, (lba >> (8 * i + (24 if shift else 0))) & 0xFF)
            self._out(r.REG_COMMAND, opcode_ext)
        else:
            self._out(r.REG_DEVICE, r.DEV_LBA | r.DEV_OBSOLETE | ((lba >> 24) & 0x0F))
            self._out(r.REG_COUNT, count & 0xFF)
            for i, reg in enumerate((r.REG_LBA_LOW, r.REG_LBA_MID, r.REG_LBA_HIGH)):
                self._out(reg, (lba >> (8 * i)) & 0xFF)
            self._out(r.REG_COMMAND, opcode)

    def _await_drq(self) -> None:
        status = self._status()
        if status & (r.ST_ERR | r.ST_DF) or not status & r.ST_DRQ:
            raise AtaError(f"status {status:#04x}")

    def read(self, lba: int, count: int) -> bytes:
        """``count`` (1..256) sectors from ``lba``."""
        self._command(lba, count, _READ, _READ_EXT)
        out = bytearray()
        port = self.base + r.REG_DATA
        for _ in range(count):
            self._await_drq()
            for _ in range(SECTOR // 4):
                out += self.bus.read(port, 4).to_bytes(4, "little")
        return bytes(out)

    def write(self, lba: int, data: bytes) -> None:
        """Whole sectors (1..256 of them) to ``lba``."""
        count = len(data) // SECTOR
        self._command(lba, count, _WRITE, _WRITE_EXT)
        port = self.base + r.REG_DATA
        for i in range(count):
            self._await_drq()
            block = data[i * SECTOR : (i + 1) * SECTOR]
            if self.bus.write_room(port, 2) >= SECTOR // 2:
                self.bus.write_block(port, 2, block)
            else:
                for j in range(0, SECTOR, 2):
                    self.bus.write(port, 2, int.from_bytes(block[j : j + 2], "little"))
        status = self._status()
        if status & (r.ST_ERR | r.ST_DF):
            raise AtaError(f"status {status:#04x}")
