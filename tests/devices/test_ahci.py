"""The AHCI HBA on its own (no vCPU): registers as QEMU q35 shows them, bring-up, IDENTIFY, DMA
with multi-entry PRDTs, NCQ, FLUSH, errors a driver sees, resets and the interrupt line."""

from __future__ import annotations

import struct

import pytest

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.observer import Verdict
from tests.rigs.ahci import CLB, DATA, FB, P0, AhciRig, Prd, h2d, ncq, split
from tests.rigs.devices import Recorder, pattern


def test_reset_values_are_qemus() -> None:
    rig = AhciRig()
    assert rig.read(a.HOST_CAP) == 0xC0141F05
    assert rig.read(a.HOST_PI) == 0x3F and rig.read(a.HOST_VS) == 0x00010000
    assert rig.read(a.HOST_GHC) == a.GHC_AE and rig.read(a.HOST_CAP2) == 0
    assert rig.port(a.PX_SSTS) == 0x113 and rig.port(a.PX_SIG) == 0xFFFFFFFF
    assert rig.port(a.PX_TFD) == 0x7F and rig.port(a.PX_CMD) == a.CMD_SUD | a.CMD_POD
    empty = P0 + a.PORT_STRIDE
    assert rig.read(empty + a.PX_SSTS) == 0 and rig.read(empty + a.PX_SIG) == 0xFFFFFFFF
    assert rig.read(P0 + 6 * a.PORT_STRIDE + a.PX_SSTS) == 0  # beyond the six ports: reserved


def test_fre_posts_the_signature_fis_and_st_starts_the_engine() -> None:
    rig = AhciRig()
    rig.bring_up()
    assert rig.port(a.PX_SIG) == a.SIG_DISK and rig.port(a.PX_TFD) == 0x130
    assert rig.port(a.PX_CMD) & (a.CMD_FR | a.CMD_CR) == a.CMD_FR | a.CMD_CR
    fis = rig.rfis(a.RFIS_RFIS, 20)
    assert fis[0] == a.FIS_REG_D2H and fis[12] == 1 and fis[4] == 1  # count 1, LBA 1
    rig.set_port(a.PX_CMD, 0)
    assert rig.port(a.PX_CMD) & (a.CMD_FR | a.CMD_CR) == 0


def test_identify_moves_512_bytes_with_pio_setup_and_d2h_fises() -> None:
    rig = AhciRig(sectors=12345)
    rig.bring_up()
    rig.set_port(a.PX_IS, 0xFFFFFFFF)
    rig.prepare(0, h2d(0xEC), [Prd(DATA, 512, interrupt=True)])
    rig.issue(1)
    assert rig.port(a.PX_CI) == 0 and rig.prdbc(0) == 512
    block = rig.mem.read(DATA, 512)
    words = struct.unpack("<256H", block)
    assert words[100] | words[101] << 16 == 12345
    assert words[75] == 31 and words[76] & 0x100  # NCQ, depth 32
    assert rig.port(a.PX_IS) == a.IS_DHRS | a.IS_PSS | a.IS_DPS
    assert rig.port(a.PX_TFD) == 0x50
    assert rig.rfis(a.RFIS_PSFIS, 1)[0] == a.FIS_PIO_SETUP


@pytest.mark.parametrize("pieces", [1, 3, 17])
def test_write_and_read_dma_through_multi_entry_prdts(pieces: int) -> None:
    rec = Recorder()
    rig = AhciRig(observer=rec)
    rig.bring_up()
    data = pattern(24 * 512, seed=pieces)
    rig.write_dma(1, 100, data, pieces)
    assert rig.ok() and rig.prdbc(1) == len(data)
    assert rig.disk.read_sectors(100, 24) == data
    assert [(w.lba, w.data, w.transport, w.command) for w in rec.writes] == \
        [(100, data, "dma", 0x35)]
    rig.prepare(2, h2d(0x25, 100, 24), split(DATA + 0x40000, len(data), pieces))
    rig.issue(4)
    assert rig.ok() and rig.mem.read(DATA + 0x40000, len(data)) == data
    assert [(x.lba, x.sector_count) for x in rec.reads] == [(100, 24)]


def test_ncq_writes_complete_with_sdb_fises_and_clear_sact() -> None:
    rec = Recorder()
    rig = AhciRig(observer=rec)
    rig.bring_up()
    first, second = pattern(4096, 1), pattern(2048, 2)
    rig.mem.write(DATA, first)
    rig.mem.write(DATA + 0x10000, second)
    rig.prepare(3, ncq(True, 3, 64, 8), split(DATA, 4096, 2), write=True)
    rig.prepare(1, ncq(True, 1, 40, 4), [Prd(DATA + 0x10000, 2048)], write=True)
    rig.issue(0b1010, sact=0b1010)
    assert rig.port(a.PX_SACT) == 0 and rig.port(a.PX_CI) == 0
    assert rig.port(a.PX_IS) & a.IS_SDBS and rig.ok()
    assert rig.disk.read_sectors(64, 8) == first and rig.disk.read_sectors(40, 4) == second
    assert [(w.lba, w.command) for w in rec.writes] == [(40, 0x61), (64, 0x61)]  # slot order
    sdb = rig.rfis(a.RFIS_SDBFIS, 8)
    assert sdb[0] == a.FIS_SDB and struct.unpack_from("<I", sdb, 4)[0] == 1 << 3  # the last
    # NCQ read back, tag 7
    rig.prepare(7, ncq(False, 7, 64, 8), [Prd(DATA + 0x20000, 4096)])
    rig.issue(1 << 7, sact=1 << 7)
    assert rig.mem.read(DATA + 0x20000, 4096) == first and rig.port(a.PX_SACT) == 0


def test_flush_and_non_data_commands_complete() -> None:
    rig = AhciRig()
    rig.bring_up()
    for opcode in (0xEA, 0xE7, 0xEF, 0xE0, 0x42):
        rig.prepare(0, h2d(opcode, 0, 1), [])
        rig.issue(1)
        assert rig.ok() and rig.port(a.PX_CI) == 0, hex(opcode)


@pytest.mark.parametrize(
    ("fis", "prds", "error", "irq"),
    [
        (h2d(0x25, 4090, 8), [Prd(DATA, 4096)], r.ER_IDNF | r.ER_ABRT, 0),  # beyond the disk
        (h2d(0x99), [], r.ER_ABRT, 0),  # unknown opcode
        (h2d(0x35, 0, 8), [Prd(DATA, 2048)], r.ER_ABRT, 0),  # PRDT shorter than the transfer
        (h2d(0x35, 0, 1), [Prd(0x7FFF_FF00, 512)], r.ER_ABRT, a.IS_HBDS),  # region outside RAM
        (b"\x34" + bytes(19), [], r.ER_ABRT, 0),  # not a Register H2D FIS
    ],
)
def test_errors_set_tfd_tfes_and_halt_until_st_is_cleared(
    fis: bytes, prds: list[Prd], error: int, irq: int
) -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.prepare(0, fis, prds, write=True)
    rig.prepare(1, h2d(0xEA), [])
    rig.issue(0b11)
    assert rig.port(a.PX_TFD) == (r.ST_ERR | 0x50) | error << 8
    assert rig.port(a.PX_IS) & (a.IS_TFES | irq) == a.IS_TFES | irq
    assert rig.port(a.PX_CI) == 0b11  # the failed slot and the one after it wait
    assert rig.disk.written() == {}
    rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) & ~a.CMD_ST)  # libahci's recovery
    assert rig.port(a.PX_CI) == 0
    rig.set_port(a.PX_IS, 0xFFFFFFFF)
    rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) | a.CMD_ST)
    rig.issue(0b10)
    assert rig.ok() and rig.port(a.PX_CI) == 0


def test_structures_outside_ram_are_host_bus_fatal_errors() -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.set_port(a.PX_CLB, 0xFFFF_FC00)  # the command list itself
    rig.issue(1)
    assert rig.port(a.PX_IS) & (a.IS_HBFS | a.IS_TFES) and rig.port(a.PX_SERR) & a.SERR_E
    rig = AhciRig()
    rig.bring_up()
    rig.mem.write(CLB + 8, struct.pack("<Q", 0xFFFF_FF80))  # the command table
    rig.issue(1)
    assert rig.port(a.PX_IS) & a.IS_HBFS


def test_a_refused_write_is_an_abort_and_reaches_no_disk() -> None:
    rig = AhciRig(observer=Recorder(Verdict.refuse("test")))
    rig.bring_up()
    rig.write_dma(0, 10, pattern(1024), 2)
    assert rig.port(a.PX_TFD) == 0x51 | r.ER_ABRT << 8 and rig.disk.written() == {}
    assert rig.hba.ports[0].last_error == "write refused: test"
    rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) & ~a.CMD_ST)
    rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) | a.CMD_ST)
    rig.prepare(5, ncq(True, 5, 10, 2), [Prd(DATA, 1024)], write=True)
    rig.issue(1 << 5, sact=1 << 5)
    assert rig.port(a.PX_SACT) == 1 << 5  # a failed NCQ tag stays outstanding
    assert rig.port(a.PX_IS) & a.IS_TFES and rig.port(a.PX_CI) == 0


def test_ci_is_ignored_while_st_is_clear_and_on_empty_ports() -> None:
    rig = AhciRig()
    rig.write(P0 + a.PX_CI, 1)
    assert rig.port(a.PX_CI) == 0
    other = P0 + a.PORT_STRIDE
    rig.write(other + a.PX_CMD, a.CMD_FRE | a.CMD_ST)
    rig.write(other + a.PX_CI, 1)
    assert rig.read(other + a.PX_CI) == 0 and rig.read(other + a.PX_SIG) == 0xFFFFFFFF


def test_narrow_and_unaligned_stores_act_as_their_bytes() -> None:
    """docs/UNICORN.md U51: stores arrive byte by byte when the guest's are unaligned."""
    rig = AhciRig()
    for i, byte in enumerate(struct.pack("<I", 0x12345400)):
        rig.hba.mmio_write(P0 + a.PX_CLB + i, 1, byte)
    assert rig.port(a.PX_CLB) == 0x12345400
    rig.hba.mmio_write(P0 + a.PX_CLB + 2, 2, 0xABCD)
    assert rig.port(a.PX_CLB) == 0xABCD5400
    rig.bring_up()
    rig.hba.mmio_write(P0 + a.PX_IS + 1, 1, 0xFF)  # W1C of byte 1 only: DHRS (byte 0) stays
    assert rig.port(a.PX_IS) & a.IS_DHRS
    rig.hba.mmio_write(P0 + a.PX_IS, 1, 0xFF)
    assert rig.port(a.PX_IS) == 0
    assert rig.hba.mmio_read(a.HOST_CAP + 1, 2) == 0x141F  # any width, any alignment
    rig.hba.mmio_write(P0 + a.PX_SERR - 1, 2, 0)  # spans two registers: no harm
    assert rig.hba.mmio_read(P0 + a.PX_SIG, 4) == a.SIG_DISK


def test_hba_reset_clears_ports_and_keeps_list_addresses() -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.set_port(a.PX_IE, 0xFFFFFFFF)
    rig.write(a.HOST_GHC, a.GHC_HR)
    assert rig.read(a.HOST_GHC) == a.GHC_AE
    assert rig.port(a.PX_CMD) == a.CMD_SUD | a.CMD_POD and rig.port(a.PX_IE) == 0
    assert rig.port(a.PX_SIG) == 0xFFFFFFFF and rig.port(a.PX_TFD) == 0x7F
    assert rig.port(a.PX_CLB) == CLB and rig.port(a.PX_FB) == FB
    rig.write(a.HOST_CAP, 0)  # libahci writes CAP and PI back: ignored
    assert rig.read(a.HOST_CAP) == a.CAP_VALUE


def test_comreset_and_srst_resend_the_signature() -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.set_port(a.PX_CMD, a.CMD_FRE)  # engine stopped, FIS receive on
    rig.set_port(a.PX_SCTL, 1)
    rig.set_port(a.PX_SCTL, 0)
    assert rig.port(a.PX_SIG) == a.SIG_DISK and rig.port(a.PX_TFD) == 0x130
    rig.set_port(a.PX_CMD, a.CMD_FRE | a.CMD_ST)
    rig.prepare(0, h2d(0, control=a.CONTROL_SRST, is_command=False), [])
    rig.issue(1)
    rig.prepare(0, h2d(0, is_command=False), [])
    rig.issue(1)
    assert rig.port(a.PX_CI) == 0 and rig.port(a.PX_TFD) == 0x130


def test_the_interrupt_line_follows_is_ie_and_ghc_ie() -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.set_port(a.PX_IS, 0xFFFFFFFF)
    rig.set_port(a.PX_IE, a.IS_DHRS | a.IS_TFES)
    rig.write(a.HOST_GHC, a.GHC_AE | a.GHC_IE)
    assert rig.irq_levels == [] and not rig.hba.interrupt_line
    rig.prepare(0, h2d(0xEA), [])
    rig.issue(1)
    assert rig.hba.interrupt_line and rig.read(a.HOST_IS) == 1 and rig.irq_levels == [True]
    rig.set_port(a.PX_IS, a.IS_DHRS)  # libahci: PxIS first, then IS
    rig.write(a.HOST_IS, 1)
    assert not rig.hba.interrupt_line and rig.irq_levels == [True, False]


def test_snapshot_and_load_snapshot_restore_every_register() -> None:
    rig = AhciRig()
    rig.bring_up()
    rig.set_port(a.PX_IE, a.IS_DHRS)
    saved = rig.hba.snapshot()
    before = [rig.read(off) for off in range(0, 0x200, 4)]
    rig.write(a.HOST_GHC, a.GHC_HR)
    assert rig.port(a.PX_SIG) == a.SIG_NONE
    rig.hba.load_snapshot(saved)
    assert [rig.read(off) for off in range(0, 0x200, 4)] == before
    rig.prepare(0, h2d(0xEA), [])
    rig.issue(1)  # the restored port runs commands
    assert rig.ok() and rig.port(a.PX_CI) == 0
