"""The loader: puts a flat guest image in RAM and prepares the CPU state it starts in.

Models: the boot loader's job before the guest's first instruction: copy the image, and for 32- and
64-bit guests build what the mode needs (a flat GDT; identity page tables in long mode, or when
asked in 32-bit mode), so the guest starts like a kernel handed over by Multiboot or the Linux
64-bit boot protocol: flat segments, a stack, paging as requested.

Follows: Intel SDM vol. 3A 3.4.5 (segment descriptors), 4.3-4.5 (paging modes), 9.8-9.9 (mode
switches); the IBM PC convention of loading a real-mode boot image at 0x7C00 with CS = 0.

Leaves out: ELF images (``elf_process.py`` builds a Linux process from one), the BIOS of a
16-bit run (``firmware/``, installed by the machine before the image), and an IDT.

Guest controls: nothing at load time; the image bytes are the user's. A user's bad choice (an image
overlapping the loader's structures or beyond RAM, an entry outside the image's segment) is an
``ImageError`` with one clear line.
"""

from __future__ import annotations

import struct

from hv_emu.errors import ImageError
from hv_emu.layout import (
    DEFAULT_LOAD,
    DEFAULT_LOAD_REAL,
    GDT_ADDR,
    PAGE_TABLES_ADDR,
    PAGE_TABLES_END,
    REAL_MODE_IMAGE_END,
    STACK_TOP,
    STACK_TOP_REAL,
)
from hv_emu.memory.boot import BootState
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.tables import identity_map
from hv_emu.memory.walk import PagingMode

#: The loader's flat GDT: null, 32-bit code, data, 64-bit code (selectors in layout.py).
#: Base 0, limit 4 GiB (G=1), present, ring 0. Access 0x9A = code r/x, 0x92 = data r/w;
#: flags 0xC = G|D (32-bit), 0xA = G|L (64-bit code).
GDT_ENTRIES = (
    0x0000000000000000,
    0x00CF9A000000FFFF,  # SEL_CODE32
    0x00CF92000000FFFF,  # SEL_DATA
    0x00AF9A000000FFFF,  # SEL_CODE64
)
GDT_LIMIT = 8 * len(GDT_ENTRIES) - 1

#: ``--paging`` choices for 32-bit guests (64-bit guests always get 4-level paging).
PAGING_CHOICES = {"none": None, "2level": PagingMode.TWO_LEVEL, "pae": PagingMode.PAE}


def default_load(mode: int) -> int:
    return DEFAULT_LOAD_REAL if mode == 16 else DEFAULT_LOAD


def load_flat(
    mem: GuestMemory,
    image: bytes,
    *,
    mode: int,
    load: int | None = None,
    entry: int | None = None,
    paging: str = "none",
) -> BootState:
    """Copy ``image`` to ``load`` and return the CPU state to start it at ``entry``."""
    if not image:
        raise ImageError("the image is empty")
    load = default_load(mode) if load is None else load
    entry = load if entry is None else entry
    end = load + len(image)
    if load < 0 or end > mem.size:
        raise ImageError(
            f"image of {len(image)} bytes at {load:#x} does not fit in {mem.size >> 20} MiB of RAM"
        )
    if mode == 16:
        if end > REAL_MODE_IMAGE_END:
            raise ImageError(
                f"a real-mode image must end below {REAL_MODE_IMAGE_END:#x}; "
                f"{len(image)} bytes at {load:#x} end at {end:#x}"
            )
        if entry > 0xFFFF:
            raise ImageError(f"real-mode entry {entry:#x} is beyond CS=0's 64 KiB segment")
    else:
        for name, lo, hi in (
            ("GDT", GDT_ADDR, GDT_ADDR + GDT_LIMIT + 1),
            ("page tables", PAGE_TABLES_ADDR, PAGE_TABLES_END),
        ):
            if load < hi and lo < end:
                raise ImageError(
                    f"image at {load:#x}-{end - 1:#x} overlaps the loader's {name} "
                    f"at {lo:#x}-{hi - 1:#x}"
                )
    if not load <= entry < end:
        raise ImageError(f"entry {entry:#x} is outside the image ({load:#x}-{end - 1:#x})")
    if mode != 32 and paging != "none":
        raise ImageError("--paging applies to --mode 32 only (64-bit guests always have paging)")
    if paging not in PAGING_CHOICES:
        raise ImageError(f"--paging must be one of {', '.join(PAGING_CHOICES)}")

    mem.write(load, image)
    if mode == 16:
        return BootState(mode=16, entry=entry, stack=STACK_TOP_REAL, paging=None)

    mem.write(GDT_ADDR, struct.pack(f"<{len(GDT_ENTRIES)}Q", *GDT_ENTRIES))
    paging_mode = PagingMode.LONG if mode == 64 else PAGING_CHOICES[paging]
    state = identity_map(mem, paging_mode, mem.size) if paging_mode is not None else None
    return BootState(
        mode=mode, entry=entry, stack=STACK_TOP, paging=state,
        gdt_base=GDT_ADDR, gdt_limit=GDT_LIMIT,
    )  # fmt: skip
