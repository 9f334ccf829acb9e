"""int 10h: the video BIOS on the VGA text screen (mode 3, 80x25).

Models: the text services a boot sector uses, on the frame buffer ``devices/vga.py`` shows, with
the cursor kept where the BIOS keeps it (the BDA): AH=00h set mode (modes 2 and 3 clear the
screen to grey-on-black spaces; AL returns 30h), 02h/03h set and get the cursor (03h also the
cursor shape), 06h/07h scroll a window up or down (AL=0 or more lines than the window: clear it),
09h/0Ah write a character (with or without attribute) CX times at the cursor, 0Eh teletype
(BEL ignored, BS, CR, LF; wraps at the last column; scrolls at the bottom), 0Fh get mode, 13h
write a string (AL bit 0: move the cursor, bit 1: character/attribute pairs).

Follows: Ralf Brown's Interrupt List, INT 10; SeaBIOS ``vgasrc/vgabios.c`` (``handle_1000``...
``handle_1013``, ``write_teletype``): teletype writes only the character (the cell keeps its
attribute), a scroll fills with the attribute in BH (teletype: 07h).

Leaves out: graphics modes, pages other than 0 for drawing (the page in BH is ignored: every
page is page 0), fonts, palettes, the CRTC's hardware cursor (no CRTC is modelled: the cursor
lives in the BDA only), unknown functions (they return with nothing changed, as SeaBIOS's).

Guest controls: every register; positions and counts are clipped to the screen (a count of
65535 writes at most the rest of the screen), never a write outside the frame buffer.
"""

from __future__ import annotations

from hv_emu.devices.vga import VgaText
from hv_emu.firmware import bda
from hv_emu.firmware.frame import Regs, Reply
from hv_emu.memory.guest import GuestMemory

_BLANK_ATTR = 0x07
_SET_MODE_AL = 0x30


class Video:
    """int 10h over ``screen``, with its state in the BDA in ``mem``."""

    def __init__(self, mem: GuestMemory, screen: VgaText) -> None:
        self.mem, self.screen = mem, screen
        self.cols, self.rows = screen.cols, screen.rows

    # ------------------------------------------------------------------ cells and cursor
    def _cell(self, row: int, col: int) -> int:
        return self.screen.base + 2 * (row * self.cols + col)

    def cursor(self) -> tuple[int, int]:
        """(row, column), clipped to the screen."""
        col = bda.read(self.mem, bda.CURSOR_POS, 1)
        row = bda.read(self.mem, bda.CURSOR_POS + 1, 1)
        return min(row, self.rows - 1), min(col, self.cols - 1)

    def set_cursor(self, row: int, col: int) -> None:
        bda.write(self.mem, bda.CURSOR_POS, 1, col)
        bda.write(self.mem, bda.CURSOR_POS + 1, 1, row)

    def scroll(self, lines: int, attr: int, top: int, left: int, bottom: int, right: int,
               up: bool = True) -> None:  # fmt: skip
        """Scroll the window up (or down) by ``lines``; 0 or more than its height clears it."""
        bottom, right = min(bottom, self.rows - 1), min(right, self.cols - 1)
        if top > bottom or left > right:
            return
        height, width = bottom - top + 1, right - left + 1
        if lines == 0 or lines >= height:
            lines = height
        rows = [self.mem.read(self._cell(r, left), 2 * width) for r in range(top, bottom + 1)]
        blank = bytes((0x20, attr & 0xFF)) * width
        moved = rows[lines:] + [blank] * lines if up else [blank] * lines + rows[:-lines]
        for i, cells in enumerate(moved):
            self.mem.write(self._cell(top + i, left), cells)

    def put(self, ch: int, attr: int | None, count: int = 1) -> None:
        """Write ``ch`` (and ``attr``) ``count`` times from the cursor; the cursor stays."""
        row, col = self.cursor()
        count = min(count, (self.rows - row) * self.cols - col)
        at = self._cell(row, col)
        if attr is None:
            old = bytearray(self.mem.read(at, 2 * count))
            old[0::2] = bytes((ch,)) * count
            self.mem.write(at, old)
        else:
            self.mem.write(at, bytes((ch, attr & 0xFF)) * count)

    def teletype(self, ch: int, attr: int | None = None) -> None:
        """One character as a terminal shows it, scrolling at the bottom."""
        row, col = self.cursor()
        if ch == 0x07:
            return
        if ch == 0x08:
            col = max(0, col - 1)
        elif ch == 0x0D:
            col = 0
        elif ch == 0x0A:
            row += 1
        else:
            self.put(ch, attr)
            col += 1
            if col >= self.cols:
                col, row = 0, row + 1
        if row >= self.rows:
            self.scroll(1, _BLANK_ATTR, 0, 0, self.rows - 1, self.cols - 1)
            row = self.rows - 1
        self.set_cursor(row, col)

    def set_mode(self, mode: int) -> None:
        """Modes 2 and 3 (80x25 text): clear the screen, cursor home; others change nothing."""
        if mode & 0x7F not in (2, 3):
            return
        bda.write(self.mem, bda.VIDEO_MODE, 1, 3)
        bda.write(self.mem, bda.VIDEO_COLS, 2, self.cols)
        if not mode & 0x80:  # bit 7: keep the screen's contents
            self.mem.write(self._cell(0, 0), bytes((0x20, _BLANK_ATTR)) * (self.cols * self.rows))
        self.set_cursor(0, 0)

    # ------------------------------------------------------------------ the service
    def call(self, regs: Regs) -> Reply:
        ah = regs["ah"]
        if ah == 0x00:
            self.set_mode(regs["al"])
            regs["al"] = _SET_MODE_AL
        elif ah == 0x01:
            bda.write(self.mem, bda.CURSOR_SHAPE, 2, regs["cx"])
        elif ah == 0x02:
            self.set_cursor(min(regs["dh"], self.rows - 1), min(regs["dl"], self.cols - 1))
        elif ah == 0x03:
            row, col = self.cursor()
            regs["dh"], regs["dl"] = row, col
            regs["cx"] = bda.read(self.mem, bda.CURSOR_SHAPE, 2)
        elif ah in (0x06, 0x07):
            self.scroll(regs["al"], regs["bh"], regs["ch"], regs["cl"], regs["dh"], regs["dl"],
                        up=ah == 0x06)  # fmt: skip
        elif ah == 0x08:
            row, col = self.cursor()
            regs["ax"] = int.from_bytes(self.mem.read(self._cell(row, col), 2), "little")
        elif ah in (0x09, 0x0A):
            self.put(regs["al"], regs["bl"] if ah == 0x09 else None, regs["cx"])
        elif ah == 0x0E:
            self.teletype(regs["al"])
        elif ah == 0x0F:
            regs["ah"] = bda.read(self.mem, bda.VIDEO_COLS, 1)
            regs["al"] = bda.read(self.mem, bda.VIDEO_MODE, 1)
            regs["bh"] = 0
        elif ah == 0x13:
            self.write_string(regs)
        return Reply(regs.changed)

    def write_string(self, regs: Regs) -> None:
        """AH=13h: CX characters from ES:BP at (DH, DL), teletype rules; AL bit 1: the string
        holds character/attribute pairs, bit 0: the cursor stays after the string."""
        al, count = regs["al"], regs["cx"]
        pairs = bool(al & 2)
        data = self.mem.read(regs.linear("es", "bp"), count * (2 if pairs else 1))
        saved = self.cursor()
        self.set_cursor(min(regs["dh"], self.rows - 1), min(regs["dl"], self.cols - 1))
        for i in range(count):
            ch = data[2 * i] if pairs else data[i]
            attr = data[2 * i + 1] if pairs else regs["bl"]
            if ch in (0x07, 0x08, 0x0A, 0x0D):
                self.teletype(ch)
            else:
                self.teletype(ch, attr)
        if not al & 1:
            self.set_cursor(*saved)
