"""The CHS geometry of a disk image, as QEMU and its firmware (SeaBIOS) report it to a guest.

Models: the two geometries a PC BIOS deals in for a hard disk of N 512-byte sectors:

- the *physical* one (what QEMU's IDE disk reports in IDENTIFY, and int 13h AH=48h returns):
  16 heads, 63 sectors per track, N / 1008 cylinders, at least 2 and at most 16383 (QEMU's
  ``guess_chs_for_size``, used when sector 0 holds no partition table to guess from);
- the *logical* one int 13h AH=02h/03h/08h/15h use: the physical one when it has at most 1024
  cylinders (QEMU passes translation NONE), else SeaBIOS's LBA translation: 63 sectors per
  track, heads 16, 32, 64, 128 or 255 by size, cylinders = sectors / 63 / heads, at most 1024.

Worked examples (docs/DEVICES.md, the firmware): 10 MiB = 20,480 sectors -> 20/16/63, AH=08h
max cylinder 18 (the last cylinder is kept back, as SeaBIOS does); 600 MiB -> physical
1219/16/63, logical 609/32/63.

Follows: QEMU ``hw/block/hd-geometry.c`` (``guess_chs_for_size``, ``hd_bios_chs_auto_trans``);
SeaBIOS ``src/block.c`` (``setup_translation``), ``src/disk.c`` (``disk_1308``, ``disk_1315``).

Leaves out: QEMU's guess from an MBR partition table's end heads and sectors, LARGE and RECHS
translations, and user-forced geometries.

Guest controls: nothing (the image's size is the user's).
"""

from __future__ import annotations

from dataclasses import dataclass

SECTORS_PER_TRACK = 63
PHYSICAL_HEADS = 16
MAX_PHYSICAL_CYLINDERS = 16383
MAX_LOGICAL_CYLINDERS = 1024


@dataclass(frozen=True)
class Chs:
    cylinders: int
    heads: int
    sectors: int

    @property
    def capacity(self) -> int:
        """Sectors reachable by CHS."""
        return self.cylinders * self.heads * self.sectors

    def lba(self, cylinder: int, head: int, sector: int) -> int | None:
        """The LBA of a 1-based ``sector`` at (cylinder, head), or None outside the geometry."""
        if not (0 <= cylinder < self.cylinders and 0 <= head < self.heads
                and 1 <= sector <= self.sectors):  # fmt: skip
            return None
        return (cylinder * self.heads + head) * self.sectors + sector - 1


def physical(total: int) -> Chs:
    """QEMU's geometry for a disk of ``total`` sectors with no partition table to guess from."""
    cylinders = total // (PHYSICAL_HEADS * SECTORS_PER_TRACK)
    cylinders = max(2, min(cylinders, MAX_PHYSICAL_CYLINDERS))
    return Chs(cylinders, PHYSICAL_HEADS, SECTORS_PER_TRACK)


def logical(total: int) -> Chs:
    """The geometry int 13h's CHS functions use (SeaBIOS over QEMU's translation hint)."""
    phys = physical(total)
    if phys.cylinders <= MAX_LOGICAL_CYLINDERS:
        return phys  # translation NONE
    tracks = phys.cylinders * phys.heads * phys.sectors // SECTORS_PER_TRACK
    need = tracks // MAX_LOGICAL_CYLINDERS
    heads = next((h for h in (16, 32, 64, 128) if need <= h), 255)
    cylinders = min(tracks // heads, MAX_LOGICAL_CYLINDERS)
    return Chs(cylinders, heads, SECTORS_PER_TRACK)
