"""int 13h: the disk BIOS for drive 80h, the disk on the primary ATA channel.

Models: the hard-disk services a boot sector and its loader use, every sector moved through the
emulated ATA controller's ports (``ata_pio.py``), so a write through int 13h is inspected like
any other: AH=00h reset, 01h last status, 02h/03h read/write by CHS (logical geometry,
``geometry.py``), 08h parameters, 15h type, 41h extensions check, 42h/43h read/write by LBA with
a disk address packet, 48h drive parameters (the 26-byte EDD 1.x table). Success: CF=0, AH=0;
failure: CF=1 and AH = 01h (bad parameter: no such drive, a count of 0 or over the limit, an
address outside the disk or the geometry, a buffer outside RAM, an unknown function) or 0Ch
(the controller refused: a read-only image, a write the inspection policy blocked). The status
is also kept in the BDA (0474h) for AH=01h.

The disk address packet (DS:SI, 16 bytes): +0 size (not checked, as SeaBIOS does not), +1 0,
+2 count (word; 0: nothing to do, success), +4 buffer offset, +6 buffer segment, +8 LBA (qword).
After 42h/43h the count field holds the sectors moved (0 on failure).

Follows: Ralf Brown's Interrupt List, INT 13; Phoenix "BIOS Enhanced Disk Drive Specification"
1.1 (the packet, AH=41h-48h, at most 127 sectors per call); SeaBIOS ``src/disk.c``
(``disk_1302``..``disk_1348``: AH=08h keeps the last cylinder back, AH=15h counts the sectors of
all but the last cylinder, AH=41h answers BX=AA55h, AH=30h, CX=0007h).

Leaves out: floppies and CD-ROMs (DL < 80h or > 80h: AH=01h), AH=04h verify, 05h format,
0Ch seek, 10h ready, 44h/47h verify/seek, the flat 64-bit buffer address of EDD 3.0, the
30/66-byte AH=48h tables (26 bytes are filled whatever the buffer's size), DMA.

Guest controls: every register and every byte of the packet; counts, addresses and buffers are
checked before any sector moves (a documented CF=1/AH error, never an exception).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hv_emu import layout
from hv_emu.firmware import bda, geometry
from hv_emu.firmware.ata_pio import SECTOR, AtaError, AtaPio
from hv_emu.firmware.frame import Regs, Reply, fail, ok
from hv_emu.layout import BOOT_DRIVE
from hv_emu.memory.guest import GuestMemory

OK, BAD_PARAMETER, CONTROLLER_REFUSED = 0x00, 0x01, 0x0C
MAX_CHS_COUNT = 128
MAX_EXT_COUNT = 127
DAP_SIZE = 16
EDD_TABLE_SIZE = 26
EDD_VERSION = 0x30
EDD_SUPPORT = 0x0007  # extended access, removable-media functions, EDD
EDD_CHS_VALID = 0x0002
HARD_DISK_TYPE = 0x03


@dataclass(frozen=True)
class Dap:
    """A disk address packet."""

    count: int
    offset: int
    segment: int
    lba: int

    @property
    def buffer(self) -> int:
        return (self.segment << 4) + self.offset


def parse_dap(raw: bytes) -> Dap:
    """The 16 bytes at DS:SI as a packet (any bytes parse; the caller checks the values)."""
    _size, _zero, count, offset, segment, lba = struct.unpack("<BBHHHQ", raw[:DAP_SIZE])
    return Dap(count, offset, segment, lba)


def chs_address(ch: int, cl: int, dh: int) -> tuple[int, int, int]:
    """(cylinder, head, sector) from CH, CL and DH: cylinder bits 9:8 are CL's bits 7:6."""
    return ch | ((cl & 0xC0) << 2), dh, cl & 0x3F


class DiskServices:
    """int 13h for drive 80h over ``pio`` (``None``: no disk; every call fails)."""

    def __init__(self, mem: GuestMemory, pio: AtaPio | None, sectors: int) -> None:
        self.mem, self.pio, self.sectors = mem, pio, sectors
        self.physical = geometry.physical(sectors)
        self.logical = geometry.logical(sectors)

    def call(self, regs: Regs) -> Reply:
        ah = regs["ah"]
        if self.pio is None or regs["dl"] != BOOT_DRIVE:
            return self._done(fail(regs, BAD_PARAMETER))
        if ah == 0x01:
            status = bda.read(self.mem, bda.DISK_STATUS, 1)
            regs["ah"] = status
            return Reply(regs.changed, cf=status != OK)
        handler = {
            0x00: self._reset, 0x02: self._chs, 0x03: self._chs, 0x08: self._parameters,
            0x15: self._type, 0x41: self._check_extensions, 0x42: self._extended,
            0x43: self._extended, 0x48: self._edd_parameters,
        }.get(ah)  # fmt: skip
        if handler is None:
            return self._done(fail(regs, BAD_PARAMETER))
        return self._done(handler(regs))

    def _done(self, reply: Reply) -> Reply:
        status = (reply.registers.get("rax", 0) >> 8) & 0xFF if reply.cf else OK
        bda.write(self.mem, bda.DISK_STATUS, 1, status)
        return reply

    # ------------------------------------------------------------------ functions
    def _reset(self, regs: Regs) -> Reply:
        regs["ah"] = OK
        return ok(regs)

    def _chs(self, regs: Regs) -> Reply:
        count = regs["al"]
        cylinder, head, sector = chs_address(regs["ch"], regs["cl"], regs["dh"])
        lba = self.logical.lba(cylinder, head, sector)
        if not 1 <= count <= MAX_CHS_COUNT or lba is None:
            return fail(regs, BAD_PARAMETER)
        status = self._transfer(regs["ah"] == 0x03, lba, count, regs.linear("es", "bx"))
        if status != OK:
            regs["al"] = 0
            return fail(regs, status)
        regs["ah"], regs["al"] = OK, count
        return ok(regs)

    def _extended(self, regs: Regs) -> Reply:
        at = regs.linear("ds", "si")
        if not self.mem.contains(at, DAP_SIZE):
            return fail(regs, BAD_PARAMETER)
        dap = parse_dap(self.mem.read(at, DAP_SIZE))
        status = OK
        if dap.count > MAX_EXT_COUNT:
            status = BAD_PARAMETER
        elif dap.count:
            status = self._transfer(regs["ah"] == 0x43, dap.lba, dap.count, dap.buffer)
        self.mem.write_u16(at + 2, dap.count if status == OK else 0)
        if status != OK:
            return fail(regs, status)
        regs["ah"] = OK
        return ok(regs)

    def _transfer(self, write: bool, lba: int, count: int, buffer: int) -> int:
        """Move ``count`` sectors between the disk at ``lba`` and RAM at ``buffer``."""
        assert self.pio is not None
        nbytes = count * SECTOR
        if lba + count > self.sectors or not self.mem.contains(buffer, nbytes):
            return BAD_PARAMETER
        rom_end = layout.ROM_BASE + layout.ROM_SIZE
        if not write and buffer < rom_end and buffer + nbytes > layout.ROM_BASE:
            return BAD_PARAMETER  # the firmware's own ROM is read-only to the guest (U46)
        try:
            if write:
                self.pio.write(lba, self.mem.read(buffer, nbytes))
            else:
                self.mem.write(buffer, self.pio.read(lba, count))
        except AtaError:
            return CONTROLLER_REFUSED
        return OK

    def _parameters(self, regs: Regs) -> Reply:
        geo = self.logical
        last = geo.cylinders - 2  # 0-based, and the last cylinder kept back (SeaBIOS)
        regs["ch"] = last & 0xFF
        regs["cl"] = ((last >> 2) & 0xC0) | geo.sectors
        regs["dh"] = geo.heads - 1
        regs["dl"] = bda.read(self.mem, bda.HARD_DISKS, 1)
        regs["ax"] = 0
        return ok(regs)

    def _type(self, regs: Regs) -> Reply:
        geo = self.logical
        sectors = (geo.cylinders - 1) * geo.heads * geo.sectors
        regs["cx"], regs["dx"] = sectors >> 16, sectors & 0xFFFF
        regs["ah"] = HARD_DISK_TYPE
        return Reply(regs.changed, cf=False)

    def _check_extensions(self, regs: Regs) -> Reply:
        regs["bx"], regs["ah"], regs["cx"] = 0xAA55, EDD_VERSION, EDD_SUPPORT
        return ok(regs)

    def _edd_parameters(self, regs: Regs) -> Reply:
        at = regs.linear("ds", "si")
        if not self.mem.contains(at, EDD_TABLE_SIZE) or self.mem.read_u16(at) < EDD_TABLE_SIZE:
            return fail(regs, BAD_PARAMETER)
        geo = self.physical
        chs_ok = self.sectors <= geometry.MAX_PHYSICAL_CYLINDERS * geo.heads * geo.sectors
        table = struct.pack(
            "<HHIIIQH", EDD_TABLE_SIZE, EDD_CHS_VALID if chs_ok else 0,
            geo.cylinders if chs_ok else geometry.MAX_PHYSICAL_CYLINDERS, geo.heads, geo.sectors,
            self.sectors, SECTOR,
        )  # fmt: skip
        self.mem.write(at, table)
        regs["ah"] = OK
        return ok(regs)
