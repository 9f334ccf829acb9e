"""int 10h on the VGA text screen: teletype, cursor, scrolling, mode set, characters, strings."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu import layout
from hv_emu.devices.vga import VgaText
from hv_emu.firmware import bda
from hv_emu.firmware.frame import Regs
from hv_emu.firmware.video import Video
from hv_emu.memory.guest import GuestMemory
from tests.rigs.firmware import call, machine


@pytest.fixture
def video() -> Video:
    mem = GuestMemory(2 * layout.MIB)
    bda.install(mem, hard_disks=0)
    return Video(mem, VgaText(mem, layout.VGA_TEXT_BASE))


def teletype(video: Video, text: str) -> None:
    for ch in text.encode():
        video.teletype(ch)


def cell(video: Video, row: int, col: int) -> tuple[int, int]:
    raw = video.mem.read(layout.VGA_TEXT_BASE + 2 * (80 * row + col), 2)
    return raw[0], raw[1]


def test_teletype_writes_moves_and_obeys_cr_lf_bs_bel(video: Video) -> None:
    teletype(video, "ab\x07c\x08d\r\nxy")
    screen = video.screen.read_screen()
    assert screen[0].rstrip() == "abd"
    assert screen[1].rstrip() == "xy"
    assert video.cursor() == (1, 2)


def test_teletype_wraps_at_the_last_column_and_scrolls_at_the_bottom(video: Video) -> None:
    for row in range(25):
        teletype(video, f"line {row}\r\n")
    screen = video.screen.read_screen()
    assert screen[0].rstrip() == "line 1"  # line 0 scrolled off
    assert screen[23].rstrip() == "line 24"
    assert screen[24].strip() == ""
    assert video.cursor() == (24, 0)
    teletype(video, "x" * 81)
    assert video.cursor() == (24, 1)
    assert video.screen.read_screen()[23] == "x" * 80


def test_set_mode_3_clears_the_screen_and_homes_the_cursor(video: Video) -> None:
    teletype(video, "old")
    reply = video.call(Regs({"rax": 0x0003}))
    assert reply.registers["rax"] & 0xFF == 0x30
    assert cell(video, 0, 0) == (0x20, 0x07)
    assert video.cursor() == (0, 0)
    video.call(Regs({"rax": 0x0F00}))
    got = video.call(Regs({"rax": 0x0F00})).registers
    assert got["rax"] & 0xFFFF == 0x5003 and (got["rbx"] >> 8) & 0xFF == 0


def test_cursor_set_and_get_clip_to_the_screen(video: Video) -> None:
    video.call(Regs({"rax": 0x0200, "rdx": 0x0A05}))  # row 10, column 5
    got = video.call(Regs({"rax": 0x0300})).registers
    assert got["rdx"] & 0xFFFF == 0x0A05 and got["rcx"] & 0xFFFF == 0x0607
    video.call(Regs({"rax": 0x0200, "rdx": 0xFFFF}))
    assert video.cursor() == (24, 79)


def test_scroll_a_window_up_and_down_with_the_fill_attribute(video: Video) -> None:
    for row in range(5):
        video.set_cursor(row, 0)
        teletype(video, str(row))
    # AH=06h, AL=1 line, BH=1Eh, window rows 1..3, columns 0..9
    video.call(Regs({"rax": 0x0601, "rbx": 0x1E00, "rcx": 0x0100, "rdx": 0x0309}))
    screen = video.screen.read_screen()
    assert [screen[r][0] for r in range(5)] == ["0", "2", "3", " ", "4"]
    assert cell(video, 3, 0) == (0x20, 0x1E)
    video.call(Regs({"rax": 0x0701, "rbx": 0x0700, "rcx": 0x0000, "rdx": 0x0209}))
    screen = video.screen.read_screen()
    assert [screen[r][0] for r in range(4)] == [" ", "0", "2", " "]


def test_write_character_count_times_keeps_the_cursor(video: Video) -> None:
    video.set_cursor(24, 78)
    video.call(Regs({"rax": 0x0941, "rbx": 0x004F, "rcx": 0xFFFF}))  # clipped to the screen
    assert cell(video, 24, 78) == (0x41, 0x4F) and cell(video, 24, 79) == (0x41, 0x4F)
    assert video.cursor() == (24, 78)
    video.call(Regs({"rax": 0x0A42, "rcx": 1}))  # character only: the attribute stays
    assert cell(video, 24, 78) == (0x42, 0x4F)


def test_write_string_with_and_without_attributes(video: Video) -> None:
    video.mem.write(0x5000, b"hi\r\nyo")
    video.call(Regs({"rax": 0x1301, "rbx": 0x0017, "rcx": 6, "rdx": 0x0203, "es": 0x500,
                     "rbp": 0}))  # fmt: skip
    screen = video.screen.read_screen()
    assert screen[2][3:5] == "hi" and screen[3][:2] == "yo"
    assert cell(video, 2, 3) == (ord("h"), 0x17)
    assert video.cursor() == (3, 2)  # AL bit 0: the cursor moved
    video.mem.write(0x5000, b"Z\x4e")
    video.call(Regs({"rax": 0x1302, "rcx": 1, "rdx": 0x0000, "es": 0x500, "rbp": 0}))
    assert cell(video, 0, 0) == (ord("Z"), 0x4E)
    assert video.cursor() == (3, 2)  # bit 0 clear: the cursor stayed


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))  # fmt: skip
def test_any_registers_stay_inside_the_frame_buffer(ax: int, bx: int, cx: int, dx: int,
                                                    bp: int) -> None:  # fmt: skip
    mem = GuestMemory(2 * layout.MIB)
    bda.install(mem, hard_disks=0)
    video = Video(mem, VgaText(mem, layout.VGA_TEXT_BASE))
    writes: list[tuple[int, int]] = []
    mem.add_write_listener(lambda pa, n: writes.append((pa, n)))
    video.call(Regs({"rax": ax, "rbx": bx, "rcx": cx, "rdx": dx, "rbp": bp, "es": ax}))
    screen_end = layout.VGA_TEXT_BASE + 80 * 25 * 2
    for pa, n in writes:
        in_screen = pa >= layout.VGA_TEXT_BASE and pa + n <= screen_end
        in_bda = pa >= layout.BDA_BASE and pa + n <= layout.BDA_BASE + 0x100
        assert in_screen or in_bda, (hex(pa), n)


def test_int_10h_through_the_machine_returns_with_the_callers_flags(tmp_path: Path) -> None:
    m = machine(tmp_path)
    _outcome, flags = call(m, 0x10, flags=0x0203, rax=0x0E41)
    assert flags == 0x0203  # CF the caller had is kept: int 10h reports nothing in CF
    assert m.vga.read_screen()[0][0] == "A"
