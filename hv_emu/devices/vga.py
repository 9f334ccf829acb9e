"""The VGA text screen: 80x25 cells of character and attribute in guest RAM, and the
hypervisor's warning box painted over them.

Models: the text-mode frame buffer of an IBM VGA in mode 3 as the hypervisor uses it: it reads
what the guest shows (``read_screen``, for logs and tests) and paints a centred warning box when
the scanner blocks a write (``draw_box``), saving the cells it covers so ``restore`` can put the
guest's screen back.

Follows: IBM VGA text mode (cell = character byte in code page 437, then attribute byte:
background 7:4, foreground 3:0), row-major from the base address (``layout.VGA_TEXT_BASE``).

Leaves out: the CRT controller (cursor, start address, scrolling), other modes, fonts, blinking.
The frame buffer is plain guest RAM: no MMIO trap, so the guest cannot tell we painted.

Guest controls: every byte of the frame buffer, at any time, including while the box is shown.

Threats (threat -> mitigation):
- guest text that would break parsing -> bytes are mapped through a fixed 256-entry table;
- a box larger than the screen -> lines are clipped to 76 columns and 23 rows;
- restoring over what the guest wrote after the box appeared -> ``restore`` only puts back cells
  that still hold exactly what the box painted; a cell the guest changed since is left alone;
- RAM smaller than the frame buffer -> ``GuestMemoryError`` at construction (a configuration error
  of the machine, not guest input).
"""

from __future__ import annotations

from dataclasses import dataclass

from hv_emu.errors import GuestMemoryError
from hv_emu.memory.guest import GuestMemory

COLS = 80
ROWS = 25
CELL = 2
WARNING_ATTR = 0x4F  # bright white on red

#: CP437 glyphs of the control bytes 0x00-0x1F (0x00 shows as a space) and 0x7F.
_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
CP437 = (
    _LOW
    + bytes(range(0x20, 0x7F)).decode("ascii")
    + "⌂"
    + bytes(range(0x80, 0x100)).decode("cp437")
)
_ENCODE = {ch: i for i, ch in enumerate(CP437)}  # space -> 0x20, not 0x00

# Double-line box drawing characters (CP437).
BOX_TL, BOX_TR, BOX_BL, BOX_BR, BOX_H, BOX_V = 0xC9, 0xBB, 0xC8, 0xBC, 0xCD, 0xBA


def encode_cp437(text: str) -> bytes:
    """Text as CP437 bytes; characters without a glyph become '?'."""
    return bytes(_ENCODE.get(ch, 0x3F) for ch in text)


@dataclass(frozen=True)
class SavedBox:
    """The cells under the box: offset -> (what the guest had, what we painted)."""

    cells: tuple[tuple[int, bytes, bytes], ...]


class VgaText:
    """The text screen at ``base`` in ``mem`` (``layout.VGA_TEXT_BASE``)."""

    def __init__(self, mem: GuestMemory, base: int, cols: int = COLS, rows: int = ROWS) -> None:
        if not mem.contains(base, cols * rows * CELL):
            raise GuestMemoryError(base, cols * rows * CELL, "VGA text buffer outside guest RAM")
        self.mem, self.base, self.cols, self.rows = mem, base, cols, rows
        self._saved: SavedBox | None = None

    def reset(self) -> None:
        """Forget a shown box without touching the screen."""
        self._saved = None

    def snapshot(self) -> SavedBox | None:
        return self._saved

    def load_snapshot(self, state: SavedBox | None) -> None:
        self._saved = state

    @property
    def box_shown(self) -> bool:
        return self._saved is not None

    def read_screen(self) -> list[str]:
        """The 25 lines of 80 characters the guest shows (attributes dropped)."""
        raw = self.mem.read(self.base, self.cols * self.rows * CELL)
        text = "".join(CP437[b] for b in raw[0::CELL])
        return [text[r * self.cols : (r + 1) * self.cols] for r in range(self.rows)]

    def write_text(self, row: int, col: int, text: str, attr: int = 0x07) -> None:
        """Write ``text`` from (row, col), clipped at the end of the row."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return
        chars = encode_cp437(text)[: self.cols - col]
        cells = bytearray(len(chars) * CELL)
        cells[0::CELL], cells[1::CELL] = chars, bytes([attr & 0xFF]) * len(chars)
        self.mem.write(self._offset(row, col), cells)

    def draw_box(self, lines: list[str], attr: int = WARNING_ATTR) -> None:
        """A double-lined box with ``lines`` in it, centred; a box already shown is restored
        first. The covered cells are saved for ``restore``."""
        self.restore()
        lines = [line[: self.cols - 4] for line in lines[: self.rows - 2]]
        inner = max((len(line) for line in lines), default=0) + 2
        width, height = inner + 2, len(lines) + 2
        top, left = (self.rows - height) // 2, (self.cols - width) // 2
        rows = [bytes([BOX_TL]) + bytes([BOX_H]) * inner + bytes([BOX_TR])]
        rows += [
            bytes([BOX_V]) + encode_cp437(" " + line.ljust(inner - 1)) + bytes([BOX_V])
            for line in lines
        ]
        rows.append(bytes([BOX_BL]) + bytes([BOX_H]) * inner + bytes([BOX_BR]))
        saved = []
        for i, chars in enumerate(rows):
            offset = self._offset(top + i, left)
            painted = bytearray(width * CELL)
            painted[0::CELL], painted[1::CELL] = chars, bytes([attr & 0xFF]) * width
            saved.append((offset, self.mem.read(offset, width * CELL), bytes(painted)))
            self.mem.write(offset, painted)
        self._saved = SavedBox(tuple(saved))

    def restore(self) -> None:
        """Take the box away: every cell still showing what the box painted gets the guest's
        old contents back; cells the guest rewrote meanwhile keep the guest's new contents."""
        if self._saved is None:
            return
        for offset, old, painted in self._saved.cells:
            now = self.mem.read(offset, len(painted))
            out = bytearray(now)
            for c in range(0, len(painted), CELL):
                if now[c : c + CELL] == painted[c : c + CELL]:
                    out[c : c + CELL] = old[c : c + CELL]
            if out != now:
                self.mem.write(offset, out)
        self._saved = None

    def _offset(self, row: int, col: int) -> int:
        return self.base + (row * self.cols + col) * CELL
