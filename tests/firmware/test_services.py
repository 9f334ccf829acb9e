"""int 15h (E820 with its continuation, E801, AH=88h, the rest CF=1/AH=86h), int 12h, int 11h,
int 16h with no keyboard, int 1Ah and the timer tick, int 18h/19h."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.exits import FirmwareCall, Handled, Stopped
from hv_emu.firmware import bda
from hv_emu.firmware.memory_map import SMAP
from hv_emu.machine import Machine
from tests.rigs.firmware import ah, boot_sector, call, cf, machine, zf

MIB = 1 << 20


def e820_entries(tmp_path: Path, mem_mib: int) -> list[tuple[int, int, int]]:
    m = machine(tmp_path, mem_mib=mem_mib)
    entries, ebx = [], 0
    for _ in range(10):
        outcome, flags = call(m, 0x15, rax=0xE820, rbx=ebx, rcx=24, rdx=SMAP, es=0, rdi=0x600)
        assert not cf(flags)
        r = outcome.registers
        assert r["rax"] == SMAP and r["rcx"] == 20
        entries.append(struct.unpack("<QQI", m.mem.read(0x600, 20)))
        ebx = r["rbx"]
        if ebx == 0:
            return entries
    raise AssertionError("the continuation never came back to 0")


def test_e820_walks_the_map_with_its_continuation_value(tmp_path: Path) -> None:
    assert e820_entries(tmp_path, 32) == [
        (0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (MIB, 31 * MIB, 1),
    ]


def test_e820_refuses_bad_signatures_indexes_and_small_buffers(tmp_path: Path) -> None:
    m = machine(tmp_path)
    for rbx, rcx, rdx in ((0, 20, 0x12345678), (4, 20, SMAP), (0xFFFFFFFF, 20, SMAP),
                          (0, 19, SMAP)):  # fmt: skip
        outcome, flags = call(m, 0x15, rax=0xE820, rbx=rbx, rcx=rcx, rdx=rdx, rdi=0x600)
        assert cf(flags) and ah(outcome) == 0x86


def test_e801_88_and_int_12_11(tmp_path: Path) -> None:
    m = machine(tmp_path, mem_mib=64)
    outcome, flags = call(m, 0x15, rax=0xE801)
    r = outcome.registers
    assert not cf(flags)
    assert r["rax"] & 0xFFFF == r["rcx"] & 0xFFFF == 15360
    assert r["rbx"] & 0xFFFF == r["rdx"] & 0xFFFF == (64 - 16) * 16
    outcome, flags = call(m, 0x15, rax=0x8800)
    assert not cf(flags) and outcome.registers["rax"] & 0xFFFF == 63 * 1024  # 63 MiB: the cap
    small = machine(tmp_path, mem_mib=4)
    outcome, _ = call(small, 0x15, rax=0x8800)
    assert outcome.registers["rax"] & 0xFFFF == 3 * 1024
    outcome, _ = call(m, 0x12)
    assert outcome.registers["rax"] & 0xFFFF == 639
    outcome, _ = call(m, 0x11)
    assert outcome.registers["rax"] & 0xFFFF == bda.EQUIPMENT_WORD


def test_other_int_15h_functions_are_unsupported(tmp_path: Path) -> None:
    m = machine(tmp_path)
    for rax in (0x2401, 0x8600, 0xC000, 0x5300):
        outcome, flags = call(m, 0x15, rax=rax)
        assert cf(flags) and ah(outcome) == 0x86


def test_int_16h_has_no_key_and_waiting_for_one_ends_the_run(tmp_path: Path) -> None:
    m = machine(tmp_path)
    _, flags = call(m, 0x16, rax=0x0100)
    assert zf(flags)
    assert m.firmware is not None
    outcome = m.firmware.handle(FirmwareCall(0x16, 0, {"rax": 0x0000}))
    assert isinstance(outcome, Stopped) and "no keyboard" in outcome.reason


def test_int_1ah_reads_and_sets_the_ticks_the_timer_counts(tmp_path: Path) -> None:
    m = machine(tmp_path)
    assert m.firmware is not None
    for _ in range(3):
        assert m.firmware.handle(FirmwareCall(0x08, 0, {})) == Handled()
    outcome, _ = call(m, 0x1A, rax=0x0000)
    assert outcome.registers["rdx"] & 0xFFFF == 3 and outcome.registers["rcx"] & 0xFFFF == 0
    call(m, 0x1A, rax=0x0100, rcx=0x0018, rdx=0x00AF)  # one tick before midnight
    m.firmware.handle(FirmwareCall(0x08, 0, {}))
    outcome, _ = call(m, 0x1A, rax=0x0000)
    assert outcome.registers["rax"] & 0xFF == 1  # the midnight flag, then cleared
    assert outcome.registers["rcx"] & 0xFFFF == 0 and outcome.registers["rdx"] & 0xFFFF == 0
    outcome, _ = call(m, 0x1A, rax=0x0000)
    assert outcome.registers["rax"] & 0xFF == 0
    call(m, 0x1A, rax=0x0100, rcx=0x0001, rdx=0x0000)  # 65536 ticks = 3599 s: 00:59:59
    outcome, flags = call(m, 0x1A, rax=0x0200)
    assert not cf(flags)
    r = outcome.registers
    assert r["rcx"] & 0xFFFF == 0x0059 and (r["rdx"] >> 8) & 0xFF == 0x59


def test_int_18h_and_an_unbootable_int_19h_end_the_run(tmp_path: Path) -> None:
    m = machine(tmp_path, bytes(4096))
    assert m.firmware is not None
    outcome = m.firmware.handle(FirmwareCall(0x18, 0, {}))
    assert isinstance(outcome, Stopped) and "no bootable device" in outcome.reason
    outcome = m.firmware.handle(FirmwareCall(0x19, 0, {}))
    assert isinstance(outcome, Stopped) and "55 AA" in outcome.reason


def test_int_19h_reloads_the_boot_sector_and_enters_it(tmp_path: Path) -> None:
    """A boot sector that prints and re-boots itself through int 19h's stub twice."""
    sector = boot_sector("""
        mov al, 'B'
        out 0xe9, al
        mov ax, 0x50
        mov es, ax
        inc byte ptr es:[0]
        cmp byte ptr es:[0], 3
        je done
        lcall [0x19*4]          # a far call to the int 19h stub
    done:
        cli                     # IF=1 at boot and the timer runs: HLT alone would wait
        hlt
    """)
    m = machine(tmp_path, sector + bytes(4096))
    m.mem.write(0x500, b"\0")
    m.boot_disk()
    result = m.run()
    assert result.halted, result.exit
    assert m.debugcon.text() == "BBB"


@pytest.fixture(scope="module")
def shared_machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    """One machine for a property test's many examples."""
    m = machine(tmp_path_factory.mktemp("m"))
    yield m
    m.close()


@settings(max_examples=200, deadline=None)
@given(eax=st.integers(0, 0xFFFFFFFF), ebx=st.integers(0, 0xFFFFFFFF),
       ecx=st.integers(0, 0xFFFFFFFF), edx=st.integers(0, 0xFFFFFFFF),
       es=st.integers(0, 0xFFFF), di=st.integers(0, 0xFFFF))  # fmt: skip
def test_any_int_15h_call_answers_or_says_unsupported(shared_machine: Machine, eax: int,
                                                      ebx: int,
                                                      ecx: int, edx: int, es: int,
                                                      di: int) -> None:  # fmt: skip
    m = shared_machine
    for rax in (eax, 0xE820, 0xE801):
        outcome, flags = call(m, 0x15, rax=rax, rbx=ebx, rcx=ecx, rdx=edx, es=es, rdi=di)
        assert not cf(flags) or ah(outcome) == 0x86
