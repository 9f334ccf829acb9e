"""Bus-master DMA through PRD tables in guest memory, and what the storage hook sees."""

from __future__ import annotations

import pytest

from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.busmaster import (
    STAT_ACTIVE,
    STAT_DRIVE0_DMA,
    STAT_ERROR,
    STAT_INTERRUPT,
    walk_prd,
)
from hv_emu.devices.storage.observer import REFUSE, StorageWrite, Verdict
from hv_emu.memory.guest import GuestMemory
from tests.rigs.devices import BM, Recorder, Rig, pattern

IDLE = r.ST_DRDY | r.ST_DSC
TABLE = 0x1000


def test_dma_write_and_read_through_a_multi_entry_prd_table() -> None:
    rig = Rig()
    data = pattern(8 * 512, seed=2)
    # Scatter-gather: 1 KiB at 0x20000, 2 KiB at 0x30000, 1 KiB at 0x40000.
    rig.mem.write(0x20000, data[:1024])
    rig.mem.write(0x30000, data[1024:3072])
    rig.mem.write(0x40000, data[3072:])
    rig.prd_table(TABLE, [(0x20000, 1024, False), (0x30000, 2048, False), (0x40000, 1024, True)])
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=50, count=8)  # WRITE DMA
    assert rig.status() == IDLE | r.ST_DRQ  # waiting for the bus master
    rig.bm_start(to_memory=False)
    assert rig.bm_status() == STAT_DRIVE0_DMA | STAT_INTERRUPT  # exact table: Active clear
    assert rig.status() == IDLE
    assert rig.disk.read_sectors(50, 8) == data
    writes = rig.rec.writes
    assert [(w.lba, len(w.data), w.transport) for w in writes] == [(50, 4096, "dma")]

    rig.prd_table(TABLE, [(0x50000, 3072, False), (0x60000, 1024, True)])
    rig.bm_setup(TABLE, to_memory=True)
    rig.lba48(0x25, 50, 8)  # READ DMA EXT
    rig.bm_start(to_memory=True)
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT | STAT_ERROR) == STAT_INTERRUPT
    assert rig.mem.read(0x50000, 3072) + rig.mem.read(0x60000, 1024) == data
    assert [(rd.lba, rd.transport) for rd in rig.rec.reads] == [(50, "dma")]


def test_start_before_the_command_also_works() -> None:
    rig = Rig()
    rig.disk.write_sectors(9, pattern(512, 6))
    rig.prd_table(TABLE, [(0x8000, 512, True)])
    rig.bm_setup(TABLE, to_memory=True)
    rig.bm_start(to_memory=True)  # Start with nothing pending: Active, nothing moves
    assert rig.bm_status() & STAT_ACTIVE
    assert rig.mem.read(0x8000, 512) == bytes(512)
    rig.lba28(0xC8, lba=9)
    assert rig.mem.read(0x8000, 512) == pattern(512, 6)
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT) == STAT_INTERRUPT


def test_start_with_nothing_pending_then_stop_is_harmless() -> None:
    rig = Rig()
    rig.bm_setup(TABLE, to_memory=False)
    rig.bm_start(to_memory=False)
    rig.outb(BM, 0)
    assert rig.bm_status() & STAT_ACTIVE == 0
    assert rig.status() == IDLE and rig.disk.written() == {}


def test_prd_table_longer_than_the_transfer_leaves_active_set() -> None:
    rig = Rig()
    rig.prd_table(TABLE, [(0x8000, 4096, True)])
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=0, count=2)
    rig.bm_start(to_memory=False)
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT) == STAT_ACTIVE | STAT_INTERRUPT
    assert rig.status() == IDLE
    rig.outb(BM, 0)  # the driver clears Start
    assert rig.bm_status() & STAT_ACTIVE == 0


def test_prd_table_shorter_than_the_transfer() -> None:
    rig = Rig()
    rig.disk.write_sectors(0, pattern(1024, 8))
    rig.prd_table(TABLE, [(0x8000, 512, True)])
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=0, count=2)
    rig.mem.write(0x8000, b"\xee" * 512)
    rig.bm_start(to_memory=False)
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT | STAT_ERROR) == 0
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
    assert rig.disk.read_sectors(0, 2) == pattern(1024, 8)  # no partial commit
    # A read scatters what fits and fails the same way.
    rig.bm_setup(TABLE, to_memory=True)
    rig.lba28(0xC8, lba=0, count=2)
    rig.bm_start(to_memory=True)
    assert rig.mem.read(0x8000, 512) == pattern(1024, 8)[:512]
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT | STAT_ERROR) == 0
    assert rig.status() & r.ST_ERR


@pytest.mark.parametrize(
    "entries",
    [
        [(0xFFFF0, 512, True)],  # region crosses the end of RAM (1 MiB)
        [(0x8000, 0, True)],  # 64 KiB at 0x8000 is fine ... but see below
        [(0x8001, 512, True)],  # odd address
        [(0x8000, 511, True)],  # odd count
    ],
)
def test_bad_prd_sets_error_and_commits_nothing(entries: list[tuple[int, int, bool]]) -> None:
    rig = Rig()
    if entries[0][1] == 0:
        entries = [(0xF8000, 0, True)]  # 64 KiB from 0xF8000 runs past 1 MiB
    rig.prd_table(TABLE, entries)
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=0, count=128)
    rig.bm_start(to_memory=False)
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT | STAT_ERROR) == STAT_ERROR
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
    assert rig.disk.written() == {} and rig.rec.writes == []
    assert rig.bm.last_error
    rig.outb(BM + 2, STAT_ERROR)  # write 1 to clear
    assert rig.bm_status() & STAT_ERROR == 0


def test_prd_table_outside_ram_and_endless_table() -> None:
    rig = Rig()
    rig.bm_setup(0xFFFFFFF0, to_memory=True)
    rig.lba28(0xC8, lba=0, count=1)
    rig.bm_start(to_memory=True)
    assert rig.bm_status() & STAT_ERROR and rig.status() & r.ST_ERR
    # 8192 entries of 2 bytes without end of table cannot cover 32 KiB: walk is bounded.
    mem = GuestMemory(1 << 20)
    for i in range(8192 + 8):
        mem.write(0x10000 + 8 * i, bytes([0, 0x80, 0, 0, 2, 0, 0, 0]))
    walk = walk_prd(mem, 0x10000, 0x8000 * 2)
    assert walk.error.startswith("no end of table")
    walk = walk_prd(mem, 0x10000, 64)  # covered after 32 entries: stops there
    assert walk.covered == 64 and walk.longer and len(walk.regions) == 32


def test_direction_mismatch_and_bus_master_disabled() -> None:
    rig = Rig()
    rig.prd_table(TABLE, [(0x8000, 512, True)])
    rig.bm_setup(TABLE, to_memory=True)  # says "read" ...
    rig.lba28(0xCA, lba=0)  # ... but the command writes
    rig.bm_start(to_memory=True)
    assert rig.bm_status() & STAT_ERROR and rig.status() & r.ST_ERR
    assert rig.disk.written() == {}
    rig.pci.st.ide[0x04] &= ~0x04  # guest clears Bus Master Enable
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=0)
    rig.bm_start(to_memory=False)
    assert rig.bm_status() & STAT_ERROR and rig.disk.written() == {}


def test_refused_dma_write() -> None:
    rig = Rig(observer=Recorder(REFUSE))
    rig.mem.write(0x8000, pattern(1024))
    rig.prd_table(TABLE, [(0x8000, 1024, True)])
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=4, count=2)
    rig.bm_start(to_memory=False)
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
    assert rig.bm_status() & (STAT_ACTIVE | STAT_INTERRUPT) == STAT_INTERRUPT
    assert rig.disk.written() == {}


def test_dma_write_is_inspected_once_from_a_private_copy() -> None:
    class Meddler(Recorder):
        """Changes guest memory while inspecting: the commit must not see it (no TOCTOU)."""

        def __init__(self, rig_mem: GuestMemory) -> None:
            super().__init__()
            self.rig_mem = rig_mem

        def on_write(self, w: StorageWrite) -> Verdict:
            self.rig_mem.write(0x8000, b"\x66" * 1024)
            return Verdict.commit_modified(bytes(512) + w.data[512:])

    rig = Rig()
    rig.ata.observer = Meddler(rig.mem)
    rig.mem.write(0x8000, pattern(1024))
    rig.prd_table(TABLE, [(0x8000, 1024, True)])
    rig.bm_setup(TABLE, to_memory=False)
    rig.lba28(0xCA, lba=4, count=2)
    rig.bm_start(to_memory=False)
    assert rig.status() == IDLE
    assert rig.disk.read_sectors(4, 2) == bytes(512) + pattern(1024)[512:]


def test_dma_read_tells_the_memory_listeners() -> None:
    rig = Rig()
    seen: list[tuple[int, int]] = []
    rig.mem.add_write_listener(lambda pa, n: seen.append((pa, n)))
    rig.prd_table(TABLE, [(0x8000, 512, False), (0x9000, 512, True)])
    seen.clear()
    rig.bm_setup(TABLE, to_memory=True)
    rig.lba28(0xC8, lba=0, count=2)
    rig.bm_start(to_memory=True)
    assert (0x8000, 512) in seen and (0x9000, 512) in seen


def test_prd_register_is_dword_aligned_and_secondary_reads_zero() -> None:
    rig = Rig()
    rig.outl(BM + 4, 0x12345677)
    assert rig.inl(BM + 4) == 0x12345674
    rig.outb(BM + 8, 0xFF)
    assert rig.inb(BM + 8) == 0 and rig.inl(BM + 12) == 0
    snap = rig.bm.snapshot()
    rig.bm.reset()
    assert rig.inl(BM + 4) == 0
    rig.bm.load_snapshot(snap)
    assert rig.inl(BM + 4) == 0x12345674
