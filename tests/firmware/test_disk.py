"""int 13h on the ATA disk, through the controller's ports: CHS and packet transfers, parameters,
errors as CF=1 with a documented AH, and every sector written inspected like any write."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.firmware import bda
from hv_emu.firmware.disk import parse_dap
from hv_emu.machine import Machine
from tests.rigs.firmware import SIG, ah, call, cf, machine

SECTOR = 512
DISK_SECTORS = 2048 * 10  # 10 MiB: 20/16/63


def pattern(sectors: int) -> bytes:
    return b"".join(struct.pack("<I", n) * 128 for n in range(sectors))


def disk_machine(tmp_path: Path, **kw: object) -> Machine:
    return machine(tmp_path, pattern(DISK_SECTORS), **kw)  # type: ignore[arg-type]


def dap(count: int, offset: int, segment: int, lba: int) -> bytes:
    return struct.pack("<BBHHHQ", 16, 0, count, offset, segment, lba)


def test_chs_read_goes_through_the_controller_to_es_bx(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    # Cylinder 1, head 2, sector 3: LBA (1*16 + 2)*63 + 2 = 1136; 2 sectors to 1000:0010.
    outcome, flags = call(m, 0x13, rax=0x0202, rcx=0x0103, rdx=0x0280, es=0x1000, rbx=0x10)
    assert not cf(flags) and outcome.registers["rax"] & 0xFFFF == 0x0002
    assert m.mem.read(0x10010, 2 * SECTOR) == pattern(1138)[1136 * SECTOR :]
    assert m.ata.st.cur[3] == 1136 & 0xFF  # the LBA the firmware programmed into the channel


def test_chs_write_lands_on_the_disk(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    m.mem.write(0x20000, b"\xab" * SECTOR)
    _, flags = call(m, 0x13, rax=0x0301, rcx=0x0001, rdx=0x0080, es=0x2000, rbx=0)
    assert not cf(flags)
    assert m.disk is not None and m.disk.read_sectors(0, 1) == b"\xab" * SECTOR


def test_bad_chs_arguments_are_cf_with_ah_01(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    for rax, rcx, rdx in ((0x0200, 0x0001, 0x0080),   # count 0
                          (0x0281, 0x0001, 0x0080),   # count 129
                          (0x0201, 0x0000, 0x0080),   # sector 0
                          (0x0201, 0x0040, 0x0080),   # sector 64
                          (0x0201, 0x1401, 0x0080),   # cylinder 20 of 20
                          (0x0201, 0x0001, 0x1080),   # head 16
                          (0x0201, 0x0001, 0x0081),   # no second disk
                          (0x0201, 0x0001, 0x0000)):  # no floppy
        outcome, flags = call(m, 0x13, rax=rax, rcx=rcx, rdx=rdx, es=0x1000, rbx=0)
        assert cf(flags) and ah(outcome) == 0x01, (hex(rax), hex(rcx), hex(rdx))
    assert bda.read(m.mem, bda.DISK_STATUS, 1) == 0x01
    outcome, flags = call(m, 0x13, rax=0x0100, rdx=0x80)  # AH=01h: the last status
    assert cf(flags) and ah(outcome) == 0x01


def test_parameters_type_and_extensions_check(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    outcome, flags = call(m, 0x13, rax=0x0800, rdx=0x80)
    r = outcome.registers
    assert not cf(flags)
    assert r["rcx"] & 0xFFFF == (18 << 8) | 63  # max cylinder 18 (20 - 2), 63 sectors
    assert r["rdx"] & 0xFFFF == (15 << 8) | 1  # max head 15, one hard disk
    outcome, flags = call(m, 0x13, rax=0x1500, rdx=0x80)
    assert not cf(flags) and ah(outcome) == 0x03
    r = outcome.registers
    assert ((r["rcx"] & 0xFFFF) << 16 | (r["rdx"] & 0xFFFF)) == 19 * 16 * 63
    outcome, flags = call(m, 0x13, rax=0x4100, rbx=0x55AA, rdx=0x80)
    r = outcome.registers
    assert not cf(flags) and ah(outcome) == 0x30
    assert r["rbx"] & 0xFFFF == 0xAA55 and r["rcx"] & 0xFFFF == 0x0007


def test_extended_read_and_write_with_a_packet(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    m.mem.write(0x600, dap(3, 0x0000, 0x3000, 5000))
    _, flags = call(m, 0x13, rax=0x4200, rdx=0x80, rsi=0x600)
    assert not cf(flags)
    assert m.mem.read(0x30000, 3 * SECTOR) == pattern(5003)[5000 * SECTOR :]
    m.mem.write(0x40000, b"\x5a" * 2 * SECTOR)
    m.mem.write(0x600, dap(2, 0, 0x4000, DISK_SECTORS - 2))
    _, flags = call(m, 0x13, rax=0x4300, rdx=0x80, rsi=0x600)
    assert not cf(flags) and m.mem.read_u16(0x602) == 2
    assert m.disk is not None
    assert m.disk.read_sectors(DISK_SECTORS - 2, 2) == b"\x5a" * 2 * SECTOR
    # Past the end: AH=01h, nothing moved, the packet's count says 0.
    m.mem.write(0x600, dap(3, 0, 0x4000, DISK_SECTORS - 2))
    outcome, flags = call(m, 0x13, rax=0x4200, rdx=0x80, rsi=0x600)
    assert cf(flags) and ah(outcome) == 0x01 and m.mem.read_u16(0x602) == 0


def test_drive_parameters_table(tmp_path: Path) -> None:
    m = disk_machine(tmp_path)
    m.mem.write_u16(0x700, 26)
    _, flags = call(m, 0x13, rax=0x4800, rdx=0x80, rsi=0x700)
    assert not cf(flags)
    size, info, cyl, heads, spt, total, bps = struct.unpack("<HHIIIQH", m.mem.read(0x700, 26))
    assert (size, info, cyl, heads, spt, total, bps) == (26, 2, 20, 16, 63, DISK_SECTORS, 512)
    m.mem.write_u16(0x700, 25)
    outcome, flags = call(m, 0x13, rax=0x4800, rdx=0x80, rsi=0x700)
    assert cf(flags) and ah(outcome) == 0x01


def test_a_signature_written_through_int_13h_is_detected_and_zero_filled(tmp_path: Path) -> None:
    m = disk_machine(tmp_path, db=True)
    data = bytearray(b"\x11" * 2 * SECTOR)
    data[SECTOR - 5 : SECTOR - 5 + len(SIG)] = SIG  # across the sector boundary
    m.mem.write(0x50000, bytes(data))
    m.mem.write(0x600, dap(2, 0, 0x5000, 100))
    _, flags = call(m, 0x13, rax=0x4300, rdx=0x80, rsi=0x600)
    assert not cf(flags)  # zero-fill: the write completes, with zeros where the signature was
    assert m.detections == 1
    assert m.disk is not None
    written = m.disk.read_sectors(100, 2)
    assert SIG not in written
    assert written[SECTOR - 5 : SECTOR - 5 + len(SIG)] == bytes(len(SIG))
    assert m.events.of("detection")


def test_a_blocked_write_fails_with_ah_0c_and_nothing_lands(tmp_path: Path) -> None:
    m = disk_machine(tmp_path, db=True, actions=("warn", "block"))
    m.mem.write(0x50000, SIG.ljust(SECTOR, b"\0"))
    m.mem.write(0x600, dap(1, 0, 0x5000, 7))
    outcome, flags = call(m, 0x13, rax=0x4300, rdx=0x80, rsi=0x600)
    assert cf(flags) and ah(outcome) == 0x0C
    assert m.disk is not None and m.disk.read_sectors(7, 1) == pattern(8)[7 * SECTOR :]


def test_without_a_disk_every_call_is_cf_with_ah_01(tmp_path: Path) -> None:
    m = machine(tmp_path)
    for rax in (0x0000, 0x0201, 0x0800, 0x4100, 0x4200):
        outcome, flags = call(m, 0x13, rax=rax, rcx=1, rdx=0x80)
        assert cf(flags) and ah(outcome) == 0x01
    assert bda.read(m.mem, bda.HARD_DISKS, 1) == 0


@given(st.binary(min_size=16, max_size=16))
def test_any_packet_parses(raw: bytes) -> None:
    dap_ = parse_dap(raw)
    assert dap_.count == int.from_bytes(raw[2:4], "little")
    assert dap_.buffer == int.from_bytes(raw[6:8], "little") * 16 + int.from_bytes(raw[4:6],
                                                                                   "little")


@pytest.fixture(scope="module")
def shared_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """One machine for a property test's many examples."""
    m = disk_machine(tmp_path_factory.mktemp("disk"))
    yield m
    m.close()


@settings(max_examples=150, deadline=None)
@given(packet=st.binary(min_size=16, max_size=16), function=st.sampled_from([0x42, 0x43]),
       si=st.integers(0, 0xFFFF), ds=st.integers(0, 0xFFFF))  # fmt: skip
def test_any_packet_is_served_or_a_documented_error(shared_disk: Machine, packet: bytes,
                                                    function: int,
                                                    si: int, ds: int) -> None:  # fmt: skip
    m = shared_disk
    at = (ds << 4) + si
    m.mem.write(at, packet)
    outcome, flags = call(m, 0x13, rax=function << 8, rdx=0x80, rsi=si, ds=ds)
    if cf(flags):
        assert ah(outcome) in (0x01, 0x0C)
    else:
        assert ah(outcome) == 0


@settings(max_examples=300, deadline=None)
@given(ax=st.integers(0, 0xFFFF), cx=st.integers(0, 0xFFFF), dh=st.integers(0, 0xFF),
       es=st.integers(0, 0xFFFF), bx=st.integers(0, 0xFFFF))  # fmt: skip
def test_any_chs_arguments_are_served_or_a_documented_error(shared_disk: Machine, ax: int,
                                                             cx: int,
                                                             dh: int, es: int,
                                                             bx: int) -> None:  # fmt: skip
    m = shared_disk
    ax = (0x02 << 8) | (ax & 0xFF)  # reads only: a property test writing the disk proves nothing
    outcome, flags = call(m, 0x13, rax=ax, rcx=cx, rdx=(dh << 8) | 0x80, es=es, rbx=bx)
    if cf(flags):
        assert ah(outcome) == 0x01
    else:
        assert outcome.registers["rax"] & 0xFFFF == ax & 0xFF
