"""The ELF loader: builds a Linux process's address space in guest RAM from an executable.

Models: the part of Linux's ``execve`` (``fs/binfmt_elf.c: load_elf_binary``) that turns program
headers into memory: every ``PT_LOAD`` segment gets page frames, its file bytes and zeroed ``.bss``
(a position-independent program, ``ET_DYN``, at the load bias ``LINUX_DYN_BASE`` aligned to its
largest ``p_align``, as Linux does without randomisation); then a stack below the top of the user
address space, a heap for ``brk`` right after the highest segment, and an arena for ``mmap``. A
dynamically linked program's interpreter (``ld.so``, named by ``PT_INTERP`` and parsed by the
caller) is copied to the start of the arena, where Linux's ``load_elf_interp`` would ``mmap`` it;
the process then starts at the interpreter's entry. Where Linux fills page tables lazily on page
faults, hv-emu builds them all up front (``memory.tables.PageTableBuilder``) and hands the CPU over
in the mode the ELF class asks for: 32-bit protected mode with 32-bit (2-level) paging for ELF32,
64-bit long mode with 4-level paging for ELF64, flat segments. The GDT has room for the three i386
TLS slots (entries 6-8, filled by ``set_thread_area``), and for ELF32 its page is mapped at
``LINUX_GDT_PAGE``, where the CPU finds it when the C library loads ``%gs``.

Follows: the System V ABI (i386 and AMD64 supplements, "Process initialization": segments at
their ``p_vaddr``, stack at the top) and Intel SDM vol. 3A ch. 4 (page-table entries: P, R/W for
writable segments, U/S). Placement of stack and mmap base in ``layout.py``.

Leaves out: the program's initial stack contents (argv, envp, auxv: ``linux/startup.py`` writes
them), address-space randomisation, execute-disable (NX) bits, demand paging, a growing stack, an
interpreter that is itself ``ET_EXEC`` or names an interpreter (refused).

The user controls the ELF file (checked by ``elf_file.py``) and the RAM size; a program whose
segments do not fit in RAM or in the loader's page-table area is an ``ImageError`` naming the
sizes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from hv_emu.errors import ConfigError, ImageError
from hv_emu.layout import (
    ELF_PHYS_BASE,
    GDT_ADDR,
    LINUX_DYN_BASE,
    LINUX_GDT_ENTRIES,
    LINUX_GDT_PAGE,
    LINUX_MMAP_BASE,
    LINUX_STACK_SIZE,
    LINUX_STACK_TOP,
    MIB,
    PAGE_TABLES_ADDR,
    PAGE_TABLES_END,
)
from hv_emu.loaders.elf_file import ELF_PAGE, ElfImage, SegmentFlags, page_down, page_up
from hv_emu.loaders.flat import GDT_ENTRIES
from hv_emu.memory.boot import FCW_FNINIT, BootState
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.tables import PageTableBuilder
from hv_emu.memory.walk import PagingMode, write_virt

#: The paging mode and the large page used for the heap and mmap arena, by ELF class.
_PAGING = {64: (PagingMode.LONG, 2 * MIB), 32: (PagingMode.TWO_LEVEL, 4 * MIB)}

# What Linux turns on for user programs besides paging (Intel SDM vol. 3A 2.5, 13.1): the FPU
# reports errors natively (CR0.MP, CR0.NE), and SSE/XSAVE are enabled (CR4.OSFXSR, OSXMMEXCPT,
# OSXSAVE), or every compiled program dies of #UD at its first SSE instruction.
CR0_MP = 1 << 1
CR0_NE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_OSXSAVE = 1 << 18


@dataclass(frozen=True)
class Region:
    """A range of guest-virtual addresses ``[start, end)``."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ProcessImage:
    """The address space the loader built: the CPU start state (``boot.stack`` is the top of the
    empty stack, before ``linux/startup.py`` pushes argv and the rest), where the program headers
    are mapped (for ``AT_PHDR``) and the regions the system calls hand out. ``bias`` is what
    was added to the program's addresses (0 for ``ET_EXEC``), ``interp_base`` where the
    interpreter went (``AT_BASE``; 0 without one); ``boot.entry`` is the interpreter's entry
    when there is one."""

    elf: ElfImage
    boot: BootState
    stack: Region
    heap: Region  # brk() moves the break inside it, starting at heap.start
    mmap: Region  # mmap() takes pages from here (after the interpreter)
    phdr: int | None
    bias: int = 0
    interp_base: int = 0

    @property
    def bits(self) -> int:
        return self.elf.bits

    @property
    def entry(self) -> int:
        """The program's own entry point (``AT_ENTRY``), the load bias applied."""
        return self.elf.entry + self.bias


class _Frames:
    """Guest-physical page frames, handed out bottom up from ``ELF_PHYS_BASE``."""

    def __init__(self, ram_size: int) -> None:
        self.next = ELF_PHYS_BASE
        self.end = ram_size

    def take(self, size: int, align: int = ELF_PAGE) -> int:
        start = -(-self.next // align) * align
        if start + size > self.end:
            raise ImageError(f"the program needs {size:#x} more bytes of RAM at {start:#x}, but "
                             f"RAM ends at {self.end:#x}: raise --mem")  # fmt: skip
        self.next = start + size
        return start

    def room(self, align: int = ELF_PAGE) -> int:
        """Bytes free from the next ``align`` boundary up (what one ``take`` can get)."""
        return max(self.end - page_up(self.next, align), 0)


def load_bias(elf: ElfImage) -> int:
    """Where an ``ET_DYN`` program goes: ``LINUX_DYN_BASE`` less its first page, aligned down to
    its largest ``p_align`` (``load_elf_binary``); 0 for ``ET_EXEC``."""
    if not elf.position_independent:
        return 0
    bias = LINUX_DYN_BASE[elf.bits] - page_down(elf.loads[0].vaddr)
    return bias - bias % elf.max_align


def load_elf(mem: GuestMemory, elf: ElfImage, interp: ElfImage | None = None) -> ProcessImage:
    """Copy ``elf``'s segments into fresh frames, map them, the stack, heap and mmap arena at
    their virtual addresses, copy ``interp`` (if any) into the arena, and return the process
    image (the CPU state starts at the interpreter's entry, or else the program's)."""
    mode, large = _PAGING[elf.bits]
    frames = _Frames(mem.size)
    bias = load_bias(elf)
    low, high = bias + page_down(elf.loads[0].vaddr), bias + page_up(elf.loads[-1].end)
    if low < 0 or high > LINUX_STACK_TOP[elf.bits]:
        raise ImageError(f"the program's segments at {low:#x}-{high:#x} leave the address space")
    if interp is not None and (interp.bits != elf.bits or not interp.position_independent
                               or interp.interp is not None):  # fmt: skip
        raise ImageError(f"the interpreter {elf.interp} is not an ELF{elf.bits} shared object "
                         "without an interpreter of its own")  # fmt: skip
    try:
        tables = PageTableBuilder(mem, mode, PAGE_TABLES_ADDR, PAGE_TABLES_END)
        _map_segments(mem, elf, bias, tables, frames)
        image_end = high

        # The stack: LINUX_STACK_SIZE bytes just below the top of user space.
        top = LINUX_STACK_TOP[elf.bits]
        stack = Region(top - LINUX_STACK_SIZE, top)
        if stack.start < image_end:
            raise ImageError(f"the program's segments reach {image_end:#x}, into the stack")
        _map_fresh(mem, tables, frames, stack, ELF_PAGE)

        # The RAM left: half for the heap (after the program, on a large-page boundary), the
        # rest for the mmap arena, each clipped to the virtual room it has.
        heap_start = page_up(image_end, large)
        mmap_base = max(LINUX_MMAP_BASE[elf.bits], heap_start)
        heap_size = min(page_down(frames.room() // 2), mmap_base - heap_start)
        heap = Region(heap_start, heap_start + heap_size)
        _map_fresh(mem, tables, frames, heap, large)
        room = frames.room(large) if frames.room(large) >= large else frames.room()
        mmap_size = min(page_down(room), page_down(stack.start, large) - mmap_base)
        mmap = Region(mmap_base, mmap_base + max(mmap_size, 0))
        _map_fresh(mem, tables, frames, mmap, large)
        interp_base = 0
        if interp is not None:
            interp_base, mmap = _place_interpreter(mem, tables, interp, mmap)

        gdt_linear = _map_gdt(tables) if elf.bits == 32 else None
    except ConfigError as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"cannot map the program: {err}") from None

    # The loader's flat entries, then empty ones up to the TLS slots set_thread_area fills.
    entries = GDT_ENTRIES + (0,) * (LINUX_GDT_ENTRIES - len(GDT_ENTRIES))
    mem.write(GDT_ADDR, struct.pack(f"<{len(entries)}Q", *entries))
    paging = tables.state(cr4_extra=CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE)
    paging = replace(paging, cr0=paging.cr0 | CR0_MP | CR0_NE)
    entry = interp_base + interp.entry if interp is not None else elf.entry + bias
    boot = BootState(mode=elf.bits, entry=entry, stack=stack.end, paging=paging,
                     gdt_base=GDT_ADDR, gdt_limit=8 * len(entries) - 1,
                     gdt_linear=gdt_linear,  # the x87 as Linux starts one: docs/UNICORN.md U63
                     fpu_control=FCW_FNINIT)  # fmt: skip
    phdr = elf.phdr_address()
    return ProcessImage(elf, boot, stack, heap, mmap, None if phdr is None else phdr + bias,
                        bias, interp_base)  # fmt: skip


def _place_interpreter(mem: GuestMemory, tables: PageTableBuilder, interp: ElfImage,
                       arena: Region) -> tuple[int, Region]:  # fmt: skip
    """Copy the interpreter's segments to the start of the (zeroed, writable) arena, aligned to
    its largest ``p_align``; return its base (``AT_BASE``) and the arena left after it."""
    start = page_up(arena.start, interp.max_align)
    base = start - page_down(interp.loads[0].vaddr)
    end = start + interp.span
    if end > arena.end:
        raise ImageError(f"the interpreter needs {interp.span:#x} bytes, the mmap arena has "
                         f"{max(arena.end - start, 0):#x}: raise --mem")  # fmt: skip
    paging = tables.state()
    for seg in interp.loads:
        write_virt(mem, paging, base + seg.vaddr, seg.data)
    return base, Region(end, arena.end)


def _map_gdt(tables: PageTableBuilder) -> int:
    """Map the page holding the GDT at ``LINUX_GDT_PAGE`` (supervisor-only, writable: the CPU
    sets accessed bits) and return the GDT's linear address there: a 32-bit C library loads GS
    from the GDT (set_thread_area), and the CPU reads descriptors through the page tables
    (docs/UNICORN.md U38). 64-bit programs set FS/GS bases with arch_prctl and load no selector."""
    tables.map(LINUX_GDT_PAGE, page_down(GDT_ADDR), ELF_PAGE, writable=True, user=False)
    return LINUX_GDT_PAGE + GDT_ADDR % ELF_PAGE


def _map_segments(mem: GuestMemory, elf: ElfImage, bias: int, tables: PageTableBuilder,
                  frames: _Frames) -> None:  # fmt: skip
    """Give every page any PT_LOAD touches (at ``bias`` + its address) a frame (pages shared by
    two segments once, writable if either segment is), then copy each segment's file bytes; the
    rest stays zero (.bss)."""
    # Bound the work before any loop: the pages all segments touch must fit in free RAM.
    pages = sum((page_up(s.end) - page_down(s.vaddr)) // ELF_PAGE for s in elf.loads)
    if pages * ELF_PAGE > frames.room():
        raise ImageError(f"the program's segments need {pages * ELF_PAGE:#x} bytes of RAM, "
                         f"{frames.room():#x} are free: raise --mem")  # fmt: skip
    writable: dict[int, bool] = {}
    for seg in elf.loads:
        for page in range(bias + page_down(seg.vaddr), bias + page_up(seg.end), ELF_PAGE):
            writable[page] = writable.get(page, False) or bool(seg.flags & SegmentFlags.W)
    frame_of: dict[int, int] = {}
    for page in sorted(writable):
        # Consecutive pages get consecutive frames, so a segment is one physical run.
        frame_of[page] = frames.take(ELF_PAGE)
        mem.zero(frame_of[page], ELF_PAGE)
        tables.map(page, frame_of[page], ELF_PAGE, writable=writable[page], user=True)
    for seg in elf.loads:
        base = frame_of[bias + page_down(seg.vaddr)] + seg.vaddr % ELF_PAGE
        mem.write(base, seg.data)


def _map_fresh(mem: GuestMemory, tables: PageTableBuilder, frames: _Frames, region: Region,
               large: int) -> None:  # fmt: skip
    """Map ``region`` (writable, zeroed) to fresh frames, with ``large`` pages where both the
    virtual and the physical address allow them (frames are aligned for them when the region is
    at least one large page: half the RAM left always has room for that alignment)."""
    if region.size <= 0:
        return
    aligned = region.start % large == 0 and region.size >= large
    pa = frames.take(region.size, large if aligned else ELF_PAGE)
    mem.zero(pa, region.size)
    va = region.start
    while va < region.end:
        size = large if va % large == 0 and pa % large == 0 and region.end - va >= large \
            else ELF_PAGE
        tables.map(va, pa, size, page_size=size, writable=True, user=True)
        va += size
        pa += size
