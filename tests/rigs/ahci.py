"""A test rig for the AHCI HBA: the device on guest RAM, driven the way libahci drives it (dword
MMIO accesses to the ABAR, command lists, tables and PRDTs written into RAM)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage.ahci import AhciHba
from hv_emu.devices.storage.disk import MemoryDisk
from hv_emu.devices.storage.observer import StorageObserver
from hv_emu.memory.guest import GuestMemory

CLB = 0x10000
FB = 0x11000
TABLES = 0x12000  # slot n's table at TABLES + n * TABLE_STRIDE
TABLE_STRIDE = 0x1000  # room for 248 PRD entries
DATA = 0x100000
P0 = a.PORT_REGS_START


@dataclass(frozen=True)
class Prd:
    address: int
    nbytes: int
    interrupt: bool = False


def h2d(command: int, lba: int = 0, count: int = 0, features: int = 0, device: int = 0x40,
        control: int = 0, is_command: bool = True) -> bytes:  # fmt: skip
    fis = bytearray(20)
    fis[0], fis[1], fis[2], fis[3] = a.FIS_REG_H2D, 0x80 if is_command else 0, command, features
    fis[4], fis[5], fis[6], fis[7] = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF, device
    fis[8], fis[9], fis[10], fis[11] = lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF, \
        features >> 8 & 0xFF
    fis[12], fis[13], fis[15] = count & 0xFF, count >> 8 & 0xFF, control
    return bytes(fis)


def ncq(write: bool, tag: int, lba: int, count: int) -> bytes:
    return h2d(a.ATA_WRITE_FPDMA if write else a.ATA_READ_FPDMA, lba, tag << 3, features=count)


class AhciRig:
    def __init__(self, sectors: int = 4096, mem_size: int = 4 << 20,
                 observer: StorageObserver | None = None,
                 enabled: Callable[[], bool] | None = None) -> None:  # fmt: skip
        self.disk = MemoryDisk(sectors)
        self.mem = GuestMemory(mem_size)
        self.hba = AhciHba(self.disk, self.mem, observer, enabled=enabled)
        self.irq_levels: list[bool] = []
        self.hba.on_interrupt = self.irq_levels.append

    @classmethod
    def on(cls, hba: AhciHba, mem: GuestMemory) -> AhciRig:
        """The rig around a machine's own HBA (its interrupt line left as the machine wired it)."""
        rig = cls.__new__(cls)
        rig.hba, rig.mem, rig.irq_levels = hba, mem, []
        return rig

    # ------------------------------------------------------------------ registers
    def read(self, offset: int) -> int:
        return self.hba.mmio_read(offset, 4)

    def write(self, offset: int, value: int) -> None:
        self.hba.mmio_write(offset, 4, value)

    def port(self, reg: int) -> int:
        return self.read(P0 + reg)

    def set_port(self, reg: int, value: int) -> None:
        self.write(P0 + reg, value)

    def bring_up(self) -> None:
        """libahci's order: AE, stop, CLB/FB, clear SERR/IS, FRE, ST."""
        self.write(a.HOST_GHC, a.GHC_AE)
        self.set_port(a.PX_CMD, self.port(a.PX_CMD) & ~(a.CMD_ST | a.CMD_FRE))
        self.set_port(a.PX_CLB, CLB)
        self.set_port(a.PX_CLBU, 0)
        self.set_port(a.PX_FB, FB)
        self.set_port(a.PX_FBU, 0)
        self.set_port(a.PX_SERR, 0xFFFFFFFF)
        self.set_port(a.PX_IS, 0xFFFFFFFF)
        self.set_port(a.PX_CMD, self.port(a.PX_CMD) | a.CMD_FRE)
        self.set_port(a.PX_CMD, self.port(a.PX_CMD) | a.CMD_ST)

    # ------------------------------------------------------------------ commands
    def prepare(self, slot: int, fis: bytes, prds: list[Prd], write: bool = False,
                table: int | None = None) -> int:  # fmt: skip
        """Header and table for ``slot``; returns the table's address."""
        table = TABLES + slot * TABLE_STRIDE if table is None else table
        flags = 5 | (a.HDR_WRITE if write else 0)
        self.mem.write(CLB + slot * a.HEADER_SIZE,
                       struct.pack("<HHIQ", flags, len(prds), 0, table) + bytes(16))  # fmt: skip
        self.mem.write(table, fis.ljust(0x80, b"\0"))
        for i, prd in enumerate(prds):
            dbc = (prd.nbytes - 1) | (a.PRD_IRQ if prd.interrupt else 0)
            self.mem.write(table + 0x80 + 16 * i, struct.pack("<QII", prd.address, 0, dbc))
        return table

    def issue(self, slots: int, sact: int = 0) -> None:
        if sact:
            self.set_port(a.PX_SACT, sact)
        self.set_port(a.PX_CI, slots)

    def prdbc(self, slot: int) -> int:
        return int(struct.unpack_from("<I", self.mem.read(CLB + slot * a.HEADER_SIZE + 4, 4))[0])

    def rfis(self, offset: int, n: int) -> bytes:
        return self.mem.read(FB + offset, n)

    def write_dma(self, slot: int, lba: int, data: bytes, pieces: int = 1,
                  command: int = 0x35) -> None:  # fmt: skip
        """WRITE DMA EXT of ``data`` from DATA, split into ``pieces`` PRD entries."""
        self.mem.write(DATA, data)
        self.prepare(slot, h2d(command, lba, len(data) // 512), split(DATA, len(data), pieces),
                     write=True)  # fmt: skip
        self.issue(1 << slot)

    def ok(self) -> bool:
        return not self.port(a.PX_TFD) & 1 and not self.port(a.PX_IS) & a.IS_TFES


def split(address: int, nbytes: int, pieces: int) -> list[Prd]:
    """``nbytes`` from ``address`` as ``pieces`` even PRD entries (the last takes the rest)."""
    size = max(2, (nbytes // pieces) & ~1)
    out = []
    at = 0
    while at < nbytes:
        n = size if len(out) < pieces - 1 else nbytes - at
        out.append(Prd(address + at, min(n, nbytes - at)))
        at += out[-1].nbytes
    return out
