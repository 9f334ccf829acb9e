"""The ATA channel as a driver sees it: IDENTIFY, PIO reads and writes, status sequencing."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from hv_emu import layout
from hv_emu.bus import PortIoBus
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ata import AtaChannel
from hv_emu.devices.storage.disk import DiskImage, MemoryDisk
from hv_emu.devices.storage.observer import REFUSE, StorageWrite, Verdict
from hv_emu.memory.guest import GuestMemory
from tests.rigs.devices import (
    COMMAND,
    COUNT,
    CTRL,
    DATA,
    DEVICE,
    LBA_HIGH,
    LBA_LOW,
    LBA_MID,
    Recorder,
    Rig,
    pattern,
)

IDLE = r.ST_DRDY | r.ST_DSC


def words(block: bytes) -> tuple[int, ...]:
    return struct.unpack("<256H", block)


def ata_text(block: bytes, first: int, last: int) -> str:
    raw = block[2 * first : 2 * (last + 1)]
    return bytes(b for pair in zip(raw[1::2], raw[0::2], strict=True) for b in pair).decode()


# ------------------------------------------------------------------ IDENTIFY
def test_identify_block_contents() -> None:
    rig = Rig(sectors=0x1234567)
    block = rig.identify()
    w = words(block)
    assert rig.status() == IDLE  # all 256 words read: DRQ drops
    assert ata_text(block, 27, 46).rstrip() == "HV-EMU HARDDISK"
    assert ata_text(block, 10, 19).rstrip() == "HVEMU0000000001"
    assert ata_text(block, 23, 26).rstrip() == "1.0"
    assert block[54:56] == b"VH"  # "HV" byte-swapped in memory
    assert w[0] == 0x0040
    assert w[60] | w[61] << 16 == 0x1234567
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 0x1234567
    assert w[83] & 0x0400 and w[86] & 0x0400  # LBA48 supported and enabled
    assert w[83] & 0xC000 == 0x4000
    assert w[49] & 0x0300 == 0x0300  # LBA and DMA
    assert w[88] & 0x003F == 0x003F and w[88] >> 8 == 0  # UDMA 0-5, none selected yet
    assert w[47] & 0xFF == r.MAX_MULTIPLE and w[59] == 0
    assert w[255] & 0xFF == 0xA5 and sum(block) % 256 == 0  # integrity word


def test_identify_capacity_above_lba28_and_selected_modes() -> None:
    rig = Rig(sectors=(1 << 28) + 5)
    rig.lba28(0xEF, features=0x03, count=0x45)  # SET FEATURES: UDMA mode 5
    assert rig.status() == IDLE
    rig.lba28(0xC6, count=8)  # SET MULTIPLE MODE 8
    w = words(rig.identify())
    assert w[60] | w[61] << 16 == r.LBA28_MAX
    assert w[100] | w[101] << 16 == (1 << 28) + 5
    assert w[88] >> 8 == 1 << 5
    assert w[59] == 0x0108


def test_identify_packet_device_is_aborted() -> None:
    rig = Rig()
    rig.outb(COMMAND, 0xA1)
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT


# ------------------------------------------------------------------ PIO
def test_pio_write_then_read_lba28() -> None:
    rig = Rig()
    data = pattern(3 * 512)
    rig.lba28(0x30, lba=100, count=3)
    assert rig.status() == IDLE | r.ST_DRQ
    rig.outsw(data)
    assert rig.status() == IDLE
    assert rig.disk.read_sectors(100, 3) == data
    obs = rig.rec
    assert [(w.lba, len(w.data), w.transport, w.command) for w in obs.writes] == [
        (100, 512, "pio", 0x30), (101, 512, "pio", 0x30), (102, 512, "pio", 0x30)]  # fmt: skip
    rig.lba28(0x20, lba=100, count=3)
    assert rig.insw(3 * 512) == data
    assert rig.status() == IDLE
    assert [rd.lba for rd in obs.reads] == [100, 101, 102]


def test_pio_partial_block_is_never_committed() -> None:
    rig = Rig()
    rig.lba28(0x30, lba=5, count=1)
    rig.outsw(pattern(510))  # one word short
    rig.lba28(0xE7)  # a new command drops the transfer
    assert rig.disk.written() == {}
    assert rig.status() == IDLE


def test_pio_lba48_with_hob_registers() -> None:
    lba = 0x0102_0304_0506
    rig = Rig(sectors=lba + 10)
    data = pattern(2 * 512, seed=3)
    rig.lba48(0x34, lba, 2)
    rig.outsw(data)
    assert rig.disk.read_sectors(lba, 2) == data
    # HOB: Device Control bit 7 reads back the first (high-order) writes.
    rig.outb(CTRL, 0x80)
    assert [rig.inb(p) for p in (LBA_LOW, LBA_MID, LBA_HIGH)] == [0x03, 0x02, 0x01]
    rig.outb(CTRL, 0x00)
    assert [rig.inb(p) for p in (LBA_LOW, LBA_MID, LBA_HIGH)] == [0x06, 0x05, 0x04]
    rig.lba48(0x24, lba, 2)
    assert rig.insw(1024) == data


def test_hob_bit_is_cleared_by_a_register_write() -> None:
    rig = Rig()
    rig.outb(CTRL, 0x80)
    rig.outb(LBA_LOW, 0x11)
    assert rig.ata.st.control & r.DC_HOB == 0


def test_count_zero_means_256_for_lba28() -> None:
    rig = Rig(sectors=300)
    rig.lba28(0x20, lba=10, count=0)
    rig.insw(256 * 512)
    assert rig.status() == IDLE
    assert len(rig.rec.reads) == 256


def test_count_zero_means_65536_for_lba48() -> None:
    rig = Rig(sectors=70000)
    rig.lba48(0x24, 4000, 0)
    assert rig.ata.st.remaining == 65536
    rig.lba48(0x24, 4465, 0)  # 4465 + 65536 > 70000
    assert rig.status() & r.ST_ERR and rig.error() == r.ER_IDNF | r.ER_ABRT


def test_multiple_needs_set_multiple_mode_and_uses_drq_blocks() -> None:
    rig = Rig()
    rig.lba28(0xC5, lba=0, count=4)
    assert rig.status() & r.ST_ERR and rig.error() == r.ER_ABRT
    rig.lba28(0xC6, count=3)  # not a power of two
    assert rig.status() & r.ST_ERR
    rig.lba28(0xC6, count=4)
    assert rig.status() == IDLE
    data = pattern(10 * 512, seed=9)
    rig.lba28(0xC5, lba=20, count=10)  # blocks of 4, 4, 2 sectors
    rig.outsw(data)
    assert rig.status() == IDLE
    assert [len(w.data) // 512 for w in rig.rec.writes] == [4, 4, 2]
    rig.lba28(0xC4, lba=20, count=10)
    assert rig.insw(10 * 512) == data
    rig.lba48(0x29, 20, 10)
    assert rig.insw(10 * 512) == data


def test_32bit_data_port_and_8bit_data_access() -> None:
    rig = Rig()
    data = pattern(512, seed=4)
    rig.lba28(0x30, lba=1)
    for (dword,) in struct.iter_unpack("<I", data):
        rig.outl(DATA, dword)
    assert rig.disk.read_sectors(1, 1) == data
    rig.lba28(0x20, lba=1)
    assert rig.inb(DATA) == 0xFF  # 8-bit data reads do not advance
    got = b"".join(struct.pack("<I", rig.inl(DATA)) for _ in range(128))
    assert got == data


def test_chs_addressing() -> None:
    rig = Rig()
    rig.disk.write_sectors((2 * 16 + 3) * 63 + 4, pattern(512, 5))
    rig.outb(DEVICE, 0xA0 | 3)  # CHS, head 3
    rig.outb(COUNT, 1)
    rig.outb(LBA_LOW, 5)  # sector 5 (1-based)
    rig.outb(LBA_MID, 2)  # cylinder 2
    rig.outb(LBA_HIGH, 0)
    rig.outb(COMMAND, 0x20)
    assert rig.insw(512) == pattern(512, 5)
    rig.outb(LBA_LOW, 0)  # sector 0 does not exist
    rig.outb(COMMAND, 0x20)
    assert rig.error() == r.ER_IDNF | r.ER_ABRT


# ------------------------------------------------------------------ errors and status
@pytest.mark.parametrize("opcode", [0x00, 0x08, 0xA0, 0xB0, 0x60, 0xFF])
def test_unknown_commands_abort(opcode: int) -> None:
    rig = Rig()
    rig.lba28(opcode)
    assert rig.status() == IDLE | r.ST_ERR
    assert rig.error() == r.ER_ABRT


def test_out_of_range_lba_aborts_with_idnf() -> None:
    rig = Rig(sectors=100)
    for cmd, lba, count in ((0x20, 100, 1), (0x30, 99, 2), (0xC8, 0, 101), (0x40, 200, 1)):
        rig.lba28(cmd, lba=lba, count=count)
        assert rig.status() == IDLE | r.ST_ERR
        assert rig.error() == r.ER_IDNF | r.ER_ABRT
    rig.lba28(0x20, lba=99, count=1)  # the last sector is fine
    assert rig.status() == IDLE | r.ST_DRQ and rig.error() == 0


def test_bad_set_features_aborts() -> None:
    rig = Rig()
    rig.lba28(0xEF, features=0x03, count=0x46)  # UDMA 6: not supported
    assert rig.error() == r.ER_ABRT
    rig.lba28(0xEF, features=0x77)
    assert rig.error() == r.ER_ABRT
    rig.lba28(0xEF, features=0x82)  # disable write cache
    assert rig.status() == IDLE and not rig.ata.st.write_cache


def test_srst_sequence_shows_bsy_then_signature() -> None:
    rig = Rig()
    rig.lba28(0x30, lba=0)  # mid-transfer
    rig.outsw(pattern(100))
    rig.outb(CTRL, 0x04 | 0x02)  # SRST + nIEN
    assert rig.alt_status() == r.ST_BSY
    rig.outb(COMMAND, 0x20)  # ignored while busy
    rig.outb(CTRL, 0x02)
    assert rig.status() == IDLE
    assert rig.error() == r.DIAG_PASSED
    assert [rig.inb(p) for p in (COUNT, LBA_LOW, LBA_MID, LBA_HIGH)] == [1, 1, 0, 0]
    assert rig.disk.written() == {}


def test_interrupt_ack_by_status_not_alt_status_and_nien_masks() -> None:
    rig = Rig()
    rig.lba28(0xE7)  # FLUSH CACHE completes and raises INTRQ
    assert rig.disk.flushes == 1
    assert rig.ata.interrupt_pending
    rig.alt_status()
    assert rig.ata.interrupt_pending  # alternate status does not acknowledge
    rig.outb(CTRL, 0x02)  # nIEN
    assert not rig.ata.interrupt_pending
    rig.outb(CTRL, 0x00)
    assert rig.ata.interrupt_pending
    rig.status()
    assert not rig.ata.interrupt_pending


def test_slave_select_reads_no_device() -> None:
    rig = Rig()
    rig.outb(DEVICE, 0xB0)
    assert rig.status() == 0 and rig.alt_status() == 0
    rig.outb(COMMAND, 0xEC)  # ignored: there is no device 1
    rig.outb(DEVICE, 0xA0)
    assert rig.status() == IDLE


def test_data_port_outside_a_data_phase() -> None:
    rig = Rig()
    assert rig.bus.read(DATA, 2) == 0xFFFF
    rig.bus.write(DATA, 2, 0x1234)
    assert rig.disk.written() == {} and rig.status() == IDLE


def test_non_data_commands() -> None:
    rig = Rig()
    rig.lba28(0xE5)  # CHECK POWER MODE
    assert rig.status() == IDLE and rig.inb(COUNT) == 0xFF
    rig.outb(DEVICE, 0xA0 | 7)
    rig.outb(COUNT, 32)
    rig.outb(COMMAND, 0x91)  # INITIALIZE DEVICE PARAMETERS: 8 heads, 32 sectors per track
    assert (rig.ata.st.heads, rig.ata.st.sectors_per_track) == (8, 32)
    for cmd in (0xE0, 0xE1, 0xEA, 0x40, 0x42):
        rig.lba28(cmd)
        assert rig.status() == IDLE, hex(cmd)


# ------------------------------------------------------------------ observer verdicts (PIO)
def test_refused_pio_write_leaves_the_disk_alone() -> None:
    rig = Rig(observer=Recorder(REFUSE))
    rig.lba28(0x30, lba=7, count=2)
    rig.outsw(pattern(512))
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
    assert rig.inb(LBA_LOW) == 7  # the LBA registers point at the refused sector
    rig.outsw(pattern(512))  # the rest of the command is dropped
    assert rig.disk.written() == {}


def test_modified_pio_write_commits_the_verdict_data() -> None:
    class ZeroFill(Recorder):
        def on_write(self, w: StorageWrite) -> Verdict:
            super().on_write(w)
            return Verdict.commit_modified(bytes(len(w.data)))

    rig = Rig(observer=ZeroFill())
    rig.disk.write_sectors(3, b"\x55" * 512)
    rig.lba28(0x30, lba=3)
    rig.outsw(pattern(512))
    assert rig.status() == IDLE
    assert rig.disk.read_sectors(3, 1) == bytes(512)


def test_modified_data_of_the_wrong_length_is_refused() -> None:
    class Bad(Recorder):
        def on_write(self, w: StorageWrite) -> Verdict:
            return Verdict.commit_modified(b"short")

    rig = Rig(observer=Bad())
    rig.lba28(0x30, lba=3)
    rig.outsw(pattern(512))
    assert rig.status() & r.ST_ERR and rig.disk.written() == {}


def test_snapshot_and_reset() -> None:
    ch = AtaChannel(MemoryDisk(64))
    ch.command_write(r.REG_COUNT, 1, 5)
    snap = ch.snapshot()
    ch.reset()
    assert ch.st.cur[r.REG_COUNT] == 1
    ch.load_snapshot(snap)
    assert ch.st.cur[r.REG_COUNT] == 5


# ------------------------------------------------------------------ docs against the tables
DOC = Path(__file__).resolve().parents[2] / "docs" / "DEVICES.md"


def test_docs_command_table_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in text.splitlines()
        if line.startswith("| 0x")
    }
    assert rows == {f"0x{op:02X}": cmd.name for op, cmd in r.COMMANDS.items()}


def test_docs_wiring_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = DOC.read_text(encoding="utf-8")
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    DiskImage.create(tmp_path / "disk.img", 1).close()
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"bus": PortIoBus(), "mem": GuestMemory(1 << 20), "observer": None}
    exec(compile(example, str(DOC), "exec"), ns)
    bus = ns["bus"]
    assert isinstance(bus, PortIoBus)
    assert bus.read(layout.PORT_ATA_PRIMARY + 7, 1) == IDLE
    ata = ns["ata"]
    assert isinstance(ata, AtaChannel) and isinstance(ata.disk, DiskImage)
    ata.disk.close()


# ------------------------------------------------------------------ host disk failures
class FailingDisk(MemoryDisk):
    def write_sectors(self, lba: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    def read_sectors(self, lba: int, count: int) -> bytes:
        if lba >= 10:
            raise OSError(5, "Input/output error")
        return super().read_sectors(lba, count)

    def flush(self) -> None:
        raise OSError(5, "Input/output error")


def test_host_io_errors_become_err_for_the_guest() -> None:
    rig = Rig()
    rig.ata.disk = FailingDisk(64)
    rig.lba28(0x30, lba=1)
    rig.outsw(pattern(512))
    assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
    rig.lba28(0x20, lba=12)
    assert rig.status() & r.ST_ERR and rig.error() == r.ER_UNC | r.ER_ABRT
    rig.lba28(0xE7)
    assert rig.status() & r.ST_ERR
    assert isinstance(rig.ata.host_error, OSError)
    # DMA read failing on the host: the bus master reports a failed transfer.
    rig.prd_table(0x1000, [(0x8000, 512, True)])
    rig.bm_setup(0x1000, to_memory=True)
    rig.lba28(0xC8, lba=12)
    rig.bm_start(to_memory=True)
    assert rig.status() & r.ST_ERR


def test_read_only_image_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "ro.img"
    DiskImage.create(path, 1).close()
    with DiskImage.open(path, read_only=True) as disk:
        rig = Rig()
        rig.ata.disk = disk
        rig.lba28(0x30, lba=0)
        assert rig.status() == IDLE | r.ST_ERR and rig.error() == r.ER_ABRT
        rig.lba28(0x20, lba=0)
        assert rig.insw(512) == bytes(512)
