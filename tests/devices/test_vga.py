"""The VGA text screen and the hypervisor's warning box."""

from __future__ import annotations

from hv_emu import layout
from hv_emu.devices.vga import VgaText, encode_cp437
from hv_emu.memory.guest import GuestMemory


def make() -> tuple[GuestMemory, VgaText]:
    mem = GuestMemory(1 << 20)
    return mem, VgaText(mem, layout.VGA_TEXT_BASE)


def test_read_screen_maps_cp437_and_nul() -> None:
    mem, vga = make()
    mem.write(layout.VGA_TEXT_BASE, b"H\x07i\x07\x01\x07\xc9\x07\xb0\x07")
    screen = vga.read_screen()
    assert len(screen) == 25 and all(len(line) == 80 for line in screen)
    assert screen[0].startswith("Hi☺╔░ ")
    assert screen[1] == " " * 80  # NUL cells read as spaces


def test_write_text_clips_and_encodes() -> None:
    mem, vga = make()
    vga.write_text(2, 75, "abcdefgh", attr=0x1E)
    assert vga.read_screen()[2][75:] == "abcde"
    assert mem.read_u8(layout.VGA_TEXT_BASE + (2 * 80 + 75) * 2 + 1) == 0x1E
    vga.write_text(30, 0, "off screen")  # ignored
    assert encode_cp437("é€") == b"\x82?"


def test_box_is_centred_and_restore_puts_back_the_guest_screen() -> None:
    mem, vga = make()
    for row in range(25):
        vga.write_text(row, 0, f"guest line {row:02}".ljust(80, "."), attr=0x07)
    before = mem.read(layout.VGA_TEXT_BASE, 4000)
    vga.draw_box(["MALWARE BLOCKED", "write to LBA 123 refused"])
    screen = vga.read_screen()
    box = [line for line in screen if "╔" in line or "║" in line or "╚" in line]
    assert len(box) == 4
    assert "MALWARE BLOCKED" in screen[11] or "MALWARE BLOCKED" in screen[12]
    left = box[0].index("╔")
    right = 79 - box[0].index("╗")
    assert abs(left - right) <= 1  # centred
    assert vga.box_shown
    vga.restore()
    assert mem.read(layout.VGA_TEXT_BASE, 4000) == before
    assert not vga.box_shown
    vga.restore()  # nothing to restore: no change
    assert mem.read(layout.VGA_TEXT_BASE, 4000) == before


def test_restore_keeps_what_the_guest_wrote_over_the_box() -> None:
    _, vga = make()
    vga.write_text(12, 0, "x" * 80)
    vga.draw_box(["WARNING"])
    row = next(i for i, line in enumerate(vga.read_screen()) if "WARNING" in line)
    vga.write_text(row, 38, "G", attr=0x02)  # the guest draws over the box
    vga.restore()
    screen = vga.read_screen()
    assert screen[row][38] == "G"
    assert "WARNING" not in screen[row] and "╔" not in "".join(screen)
    assert row == 12 and screen[12] == "x" * 38 + "G" + "x" * 41


def test_huge_box_is_clipped_and_a_second_box_replaces_the_first() -> None:
    mem, vga = make()
    before = mem.read(layout.VGA_TEXT_BASE, 4000)
    vga.draw_box(["y" * 200] * 40)
    assert sum("╔" in line for line in vga.read_screen()) == 1
    vga.draw_box(["second"])
    vga.restore()
    assert mem.read(layout.VGA_TEXT_BASE, 4000) == before
