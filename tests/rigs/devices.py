"""A test rig for the storage devices: disk, ATA channel, bus master and PCI on a real port bus at
the layout's ports, so tests speak the guest's language (IN/OUT to ports)."""

from __future__ import annotations

import struct

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.bus import PortIoBus
from hv_emu.devices.pci import PciConfigSpace
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ata import AtaChannel
from hv_emu.devices.storage.busmaster import BusMaster
from hv_emu.devices.storage.disk import MemoryDisk
from hv_emu.devices.storage.observer import (
    COMMIT,
    StorageObserver,
    StorageRead,
    StorageWrite,
    Verdict,
)
from hv_emu.loaders.flat import default_load
from hv_emu.memory.guest import GuestMemory

ATA = layout.PORT_ATA_PRIMARY
CTRL = layout.PORT_ATA_PRIMARY_CTRL
BM = layout.PORT_BUSMASTER
DATA, ERROR, FEATURES, COUNT = ATA + 0, ATA + 1, ATA + 1, ATA + 2
LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS = (ATA + i for i in range(3, 8))
COMMAND = STATUS


class Recorder:
    """An observer that records events and answers with a fixed or scripted verdict."""

    def __init__(self, verdict: Verdict = COMMIT) -> None:
        self.verdict = verdict
        self.writes: list[StorageWrite] = []
        self.reads: list[StorageRead] = []

    def on_write(self, w: StorageWrite) -> Verdict:
        self.writes.append(w)
        return self.verdict

    def on_read(self, rd: StorageRead) -> None:
        self.reads.append(rd)


class Rig:
    def __init__(
        self, sectors: int = 4096, mem_size: int = 1 << 20, observer: StorageObserver | None = None
    ) -> None:
        self.disk = MemoryDisk(sectors)
        self.mem = GuestMemory(mem_size)
        self.obs = observer if observer is not None else Recorder()
        self.ata = AtaChannel(self.disk, self.obs, self.mem)
        self.pci = PciConfigSpace(BM)
        self.bm = BusMaster(self.ata, self.mem, enabled=self.pci.bus_master_enabled)
        self.bus = PortIoBus()
        self.bus.register(ATA, layout.PORT_ATA_PRIMARY_LEN, self.ata.command_block, "ata0")
        self.bus.register(CTRL, 1, self.ata.control_block, "ata0-ctrl")
        self.bus.register(BM, layout.PORT_BUSMASTER_LEN, self.bm, "busmaster")
        self.bus.register(layout.PORT_PCI_CONFIG_ADDRESS, 4, self.pci.address_port, "pci-addr")
        self.bus.register(layout.PORT_PCI_CONFIG_DATA, 4, self.pci.data_port, "pci-data")

    # ------------------------------------------------------------------ raw port I/O
    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def outl(self, port: int, value: int) -> None:
        self.bus.write(port, 4, value)

    def inl(self, port: int) -> int:
        return self.bus.read(port, 4)

    @property
    def rec(self) -> Recorder:
        """The observer, when it is a ``Recorder`` (the default)."""
        assert isinstance(self.obs, Recorder)
        return self.obs

    def status(self) -> int:
        return self.inb(STATUS)

    def alt_status(self) -> int:
        return self.inb(CTRL)

    def error(self) -> int:
        return self.inb(ERROR)

    # ------------------------------------------------------------------ what a driver does
    def lba28(self, cmd: int, lba: int = 0, count: int = 1, features: int = 0) -> None:
        self.outb(DEVICE, 0xE0 | ((lba >> 24) & 0x0F))
        self.outb(FEATURES, features)
        self.outb(COUNT, count & 0xFF)
        self.outb(LBA_LOW, lba & 0xFF)
        self.outb(LBA_MID, (lba >> 8) & 0xFF)
        self.outb(LBA_HIGH, (lba >> 16) & 0xFF)
        self.outb(COMMAND, cmd)

    def lba48(self, cmd: int, lba: int, count: int) -> None:
        self.outb(DEVICE, 0x40)
        self.outb(COUNT, (count >> 8) & 0xFF)  # HOB halves first
        self.outb(LBA_LOW, (lba >> 24) & 0xFF)
        self.outb(LBA_MID, (lba >> 32) & 0xFF)
        self.outb(LBA_HIGH, (lba >> 40) & 0xFF)
        self.outb(COUNT, count & 0xFF)
        self.outb(LBA_LOW, lba & 0xFF)
        self.outb(LBA_MID, (lba >> 8) & 0xFF)
        self.outb(LBA_HIGH, (lba >> 16) & 0xFF)
        self.outb(COMMAND, cmd)

    def insw(self, nbytes: int) -> bytes:
        """``rep insw``: one 16-bit IN per word."""
        return b"".join(struct.pack("<H", self.bus.read(DATA, 2)) for _ in range(nbytes // 2))

    def outsw(self, data: bytes) -> None:
        for (word,) in struct.iter_unpack("<H", data):
            self.bus.write(DATA, 2, word)

    def identify(self) -> bytes:
        self.outb(DEVICE, 0xA0)
        self.outb(COMMAND, 0xEC)
        assert self.status() & r.ST_DRQ
        return self.insw(512)

    # ------------------------------------------------------------------ bus master
    def prd_table(self, table: int, entries: list[tuple[int, int, bool]]) -> None:
        """Write PRD entries (address, byte count with 0x10000 as 0, end of table)."""
        for i, (addr, count, eot) in enumerate(entries):
            raw = struct.pack("<IHH", addr, count & 0xFFFF, 0x8000 if eot else 0)
            self.mem.write(table + 8 * i, raw)

    def bm_setup(self, table: int, to_memory: bool) -> None:
        self.outb(BM + 0, 0)  # stop
        self.outb(BM + 2, self.inb(BM + 2) | 0x06)  # clear error and interrupt, keep the rest
        self.outl(BM + 4, table)
        self.outb(BM + 0, 0x08 if to_memory else 0x00)

    def bm_start(self, to_memory: bool) -> None:
        self.outb(BM + 0, (0x08 if to_memory else 0x00) | 0x01)

    def bm_status(self) -> int:
        return self.inb(BM + 2)


def pattern(nbytes: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed * 13 + (i >> 9)) & 0xFF for i in range(nbytes))


def test_rig_wires_every_device_at_the_layout_ports() -> None:
    rig = Rig()
    names = [rng.name for rng in rig.bus.ranges]
    assert names == ["ata0", "ata0-ctrl", "pci-addr", "pci-data", "busmaster"]
    assert rig.status() == r.ST_DRDY | r.ST_DSC


def string_io_guest(*, sectors: int, command: int, multiple: bool, setup: str, insn: str,
                    direction: str) -> str:  # fmt: skip
    """A guest of the string-I/O tests (tests/vcpu/test_string_io.py, test_string_ins.py): SET
    MULTIPLE 8 first if ``multiple``, then ``command`` for ``sectors`` sectors at LBA 3, DX on
    the data port, ``setup`` (segments, pointer, count), the ``direction`` flag, ``insn``, then
    CLD and HLT."""
    set_multiple = f"""
    mov dx, {ATA} + 2
    mov al, 8
    out dx, al
    mov dx, {ATA} + 7
    mov al, 0xc6
    out dx, al
""" if multiple else ""
    return f"""
    mov dx, {ATA} + 6
    mov al, 0xe0
    out dx, al
{set_multiple}
    mov dx, {ATA} + 2
    mov al, {sectors}
    out dx, al
    mov dx, {ATA} + 3
    mov al, 3
    out dx, al
    xor eax, eax
    mov dx, {ATA} + 4
    out dx, al
    mov dx, {ATA} + 5
    out dx, al
    mov dx, {ATA} + 7
    mov al, {command}
    out dx, al
    mov dx, {ATA}
{setup}
    {direction}
    {insn}
    cld
    hlt
"""


#: The string-I/O guests' buffer: identity-mapped RAM, and where real mode sees it (segment 0x2000).
STRING_BUF, STRING_BUF16 = 0x200000, 0x20000


def string_io_image(*, mode: int, pointer: str, offset: int, backwards: bool, count: int,
                    sectors: int, command: int, multiple: bool, insn: str) -> bytes:  # fmt: skip
    """``string_io_guest`` assembled for ``mode``: ``pointer`` ("di" for ``rep ins*``, ES:DI; "si"
    for ``rep outs*``, DS:SI) at ``offset`` into the buffer (0x4000 further when ``backwards``,
    with STD), the count register at ``count``."""
    address = STRING_BUF + offset + (0x4000 if backwards else 0)
    segment = ""
    if mode == 16:  # the segment at STRING_BUF16, the same offset
        register = "es" if pointer == "di" else "ds"
        segment = f"    mov ax, {STRING_BUF16 >> 4}\n    mov {register}, ax"
        address -= STRING_BUF
    width = {64: "r", 32: "e", 16: ""}[mode]
    source = string_io_guest(
        sectors=sectors, command=command, multiple=multiple, insn=insn,
        setup=f"{segment}\n    mov {width}{pointer}, {address}\n    mov {width}cx, {count}",
        direction="std" if backwards else "cld",
    )  # fmt: skip
    return assemble(source, mode=mode, address=default_load(mode))
