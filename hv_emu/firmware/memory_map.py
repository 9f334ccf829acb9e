"""The memory map the firmware reports: int 15h E820h, E801h, AH=88h, and int 12h.

Models: what a PC BIOS tells a loader about RAM, for hv-emu's one block of RAM at 0 of
``mem_size`` bytes: E820 entries in order, each base (qword), length (qword) and type (dword,
1 = usable RAM, 2 = reserved):

=====================  ===========  =======================================
0 - 9FBFFh              usable       conventional memory below the EBDA
9FC00h - 9FFFFh         reserved     the 1 KiB EBDA
F0000h - FFFFFh         reserved     the firmware ROM
100000h - end of RAM    usable       (absent when RAM is 1 MiB or less)
=====================  ===========  =======================================

The VGA window and option-ROM area (A0000h-EFFFFh) are in no entry, as on QEMU. SeaBIOS also
reserves a few hundred KiB at the top of RAM for its own tables and the 256 KiB below 4 GiB
(BIOS flash): hv-emu has neither, so its last usable entry runs to the end of RAM
(docs/DEVICES.md, the firmware, compares the two).

Follows: ACPI 6.5 section 15 (E820: EDX='SMAP', EBX continuation, 20-byte entries, EBX=0 after
the last); Ralf Brown's Interrupt List INT 15/AX=E801h, INT 15/AH=88h, INT 12; SeaBIOS
``src/system.c`` (``handle_15e820``, ``handle_15e801``: AX=CX=KiB from 1 to 16 MiB, at most
15360, BX=DX=64 KiB blocks above 16 MiB; ``handle_1588``: at most 63 MiB), ``src/misc.c``
(int 12h from the BDA).

Leaves out: the 24-byte ACPI 3.0 entries (ECX is always 20 back), memory above 4 GiB (hv-emu's
RAM ends below it), ACPI and NVS entries (no ACPI tables).

Guest controls: EBX (any value: past the last entry is CF=1, AH=86h), ECX, EDX and ES:DI (an
entry that does not fit in RAM is not written: CF=1, AH=86h).
"""

from __future__ import annotations

import struct

from hv_emu.firmware import bda
from hv_emu.firmware.frame import Regs, Reply, fail, ok
from hv_emu.layout import EBDA_BASE, KIB, MIB, REAL_MODE_IMAGE_END, ROM_BASE, ROM_SIZE
from hv_emu.memory.guest import GuestMemory

SMAP = 0x534D4150
E820_ENTRY_SIZE = 20
USABLE, RESERVED = 1, 2
UNSUPPORTED = 0x86
_16MIB = 16 * MIB
MAX_E801_LOW_KIB = 15 * 1024
MAX_88_KIB = 63 * 1024


def e820_map(mem_size: int) -> list[tuple[int, int, int]]:
    """(base, length, type) entries, in address order."""
    entries = [(0, EBDA_BASE, USABLE), (EBDA_BASE, REAL_MODE_IMAGE_END - EBDA_BASE, RESERVED),
               (ROM_BASE, ROM_SIZE, RESERVED)]  # fmt: skip
    if mem_size > MIB:
        entries.append((MIB, mem_size - MIB, USABLE))
    return entries


class MemoryServices:
    """int 15h's memory functions and int 12h for ``mem`` (RAM from 0 to ``mem.size``)."""

    def __init__(self, mem: GuestMemory) -> None:
        self.mem = mem
        self.map = e820_map(mem.size)

    def int12(self, regs: Regs) -> Reply:
        regs["ax"] = bda.read(self.mem, bda.BASE_MEMORY_KIB, 2)
        return Reply(regs.changed)

    def e820(self, regs: Regs) -> Reply:
        index, at = regs["ebx"], regs.linear("es", "di")
        if (regs["edx"] != SMAP or regs["ecx"] < E820_ENTRY_SIZE or index >= len(self.map)
                or not self.mem.contains(at, E820_ENTRY_SIZE)):  # fmt: skip
            return fail(regs, UNSUPPORTED)
        self.mem.write(at, struct.pack("<QQI", *self.map[index]))
        regs["eax"], regs["ecx"] = SMAP, E820_ENTRY_SIZE
        regs["ebx"] = index + 1 if index + 1 < len(self.map) else 0
        return ok(regs)

    def e801(self, regs: Regs) -> Reply:
        top = self.mem.size
        low = min(max(0, top - MIB) // KIB, MAX_E801_LOW_KIB)
        high = max(0, top - _16MIB) // (64 * KIB)
        regs["ax"] = regs["cx"] = low
        regs["bx"] = regs["dx"] = high
        return ok(regs)

    def extended_kib(self, regs: Regs) -> Reply:
        regs["ax"] = min(max(0, self.mem.size - MIB) // KIB, MAX_88_KIB)
        return ok(regs)
