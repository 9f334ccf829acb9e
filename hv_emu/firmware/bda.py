"""The BIOS data area (0040:0000) and the extended BIOS data area, as POST leaves them.

Models: the fields a boot sector or a DOS-era program reads from segment 0040h: the equipment
word, the base memory size, the keyboard ring buffer's pointers, the video state (mode, columns,
page size, cursor positions and shape, active page, CRTC port, rows), the timer tick count and
its midnight flag, the last disk status and the number of hard disks; and the 1 KiB EBDA below
640 KiB with its size word. The offsets are the IBM PC/AT's, so the guest and the firmware's
services share one copy of every value, as on a PC.

Follows: IBM PC/AT Technical Reference, BIOS data area; SeaBIOS ``src/std/bda.h`` (field
offsets), ``src/post.c`` ``bda_init`` and ``vgasrc/vgabios.c`` (the values QEMU's firmware
leaves: base memory 639 KiB, mode 3, 80 columns, 4096-byte page, cursor shape 0607h, CRTC 3D4h,
24 + 1 rows, 16-line characters).

Leaves out: floppy, serial, parallel and keyboard-controller fields (zero), the RTC-derived
tick count at POST (hv-emu starts counting at 0, so runs are reproducible).

Guest controls: every byte of the BDA and EBDA once it runs; the firmware reads its fields
back bounded (a cursor beyond the screen is clipped, a ring pointer is not followed).
"""

from __future__ import annotations

import struct

from hv_emu.layout import (
    BDA_BASE,
    EBDA_BASE,
    KIB,
    PORT_VGA_CRTC,
    VGA_TEXT_COLS,
    VGA_TEXT_ROWS,
)
from hv_emu.memory.guest import GuestMemory

# Field offsets from 0040:0000.
EBDA_SEGMENT = 0x0E
EQUIPMENT = 0x10
BASE_MEMORY_KIB = 0x13
KBD_FLAGS = 0x17
KBD_HEAD = 0x1A
KBD_TAIL = 0x1C
KBD_BUFFER = 0x1E
VIDEO_MODE = 0x49
VIDEO_COLS = 0x4A
VIDEO_PAGE_SIZE = 0x4C
VIDEO_PAGE_START = 0x4E
CURSOR_POS = 0x50  # 8 pages x (column, row)
CURSOR_SHAPE = 0x60
ACTIVE_PAGE = 0x62
VIDEO_CRTC = 0x63  # the CRTC's I/O base
TIMER_TICKS = 0x6C
TIMER_MIDNIGHT = 0x70
DISK_STATUS = 0x74
HARD_DISKS = 0x75
KBD_BUFFER_START = 0x80
KBD_BUFFER_END = 0x82
VIDEO_ROWS_MINUS_1 = 0x84
CHAR_HEIGHT = 0x85

#: Equipment word: bit 1 maths coprocessor, bits 5:4 = 10b initial video 80x25 colour.
EQUIPMENT_WORD = 0x0022
TEXT_MODE = 3
CURSOR_SHAPE_DEFAULT = 0x0607
#: Timer ticks per day: the 8254's 1,193,182 Hz over 65,536, times 86,400 s (IBM's 1800B0h).
TICKS_PER_DAY = 0x1800B0


def base_memory_kib() -> int:
    """Conventional memory below the EBDA, in KiB (639 with the 1 KiB EBDA)."""
    return EBDA_BASE // KIB


def install(mem: GuestMemory, *, hard_disks: int) -> None:
    """The BDA and EBDA as POST leaves them (all other BDA bytes 0)."""
    mem.fill(BDA_BASE, 0x100, 0)

    def put(offset: int, fmt: str, value: int) -> None:
        mem.write(BDA_BASE + offset, struct.pack(fmt, value))

    put(EBDA_SEGMENT, "<H", EBDA_BASE >> 4)
    put(EQUIPMENT, "<H", EQUIPMENT_WORD)
    put(BASE_MEMORY_KIB, "<H", base_memory_kib())
    put(KBD_HEAD, "<H", KBD_BUFFER)
    put(KBD_TAIL, "<H", KBD_BUFFER)
    put(KBD_BUFFER_START, "<H", KBD_BUFFER)
    put(KBD_BUFFER_END, "<H", KBD_BUFFER + 32)
    put(VIDEO_MODE, "<B", TEXT_MODE)
    put(VIDEO_COLS, "<H", VGA_TEXT_COLS)
    put(VIDEO_PAGE_SIZE, "<H", 4096)
    put(CURSOR_SHAPE, "<H", CURSOR_SHAPE_DEFAULT)
    put(VIDEO_CRTC, "<H", PORT_VGA_CRTC)
    put(VIDEO_ROWS_MINUS_1, "<B", VGA_TEXT_ROWS - 1)
    put(CHAR_HEIGHT, "<H", 16)
    put(HARD_DISKS, "<B", hard_disks)
    mem.fill(EBDA_BASE, KIB, 0)
    mem.write_u16(EBDA_BASE, 1)  # the EBDA's size in KiB


def read(mem: GuestMemory, offset: int, size: int) -> int:
    """A BDA field (``size`` 1, 2 or 4 bytes)."""
    return int.from_bytes(mem.read(BDA_BASE + offset, size), "little")


def write(mem: GuestMemory, offset: int, size: int, value: int) -> None:
    """Set a BDA field. An unchanged field is not written: every host write to guest RAM makes
    the vCPU drop its translated code (docs/ARCHITECTURE.md, the run loop), a cost a BIOS call
    that only reads (int 1Ah, int 13h's status) should not pay."""
    data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
    if mem.read(BDA_BASE + offset, size) != data:
        mem.write(BDA_BASE + offset, data)
