"""Differential test: hv_emu.memory.walk's walk against Unicorn's own MMU on randomized page tables.

The oracle is ``uc_vmem_translate`` from the Unicorn 2.1.4 C library (not wrapped by the Python
binding; called through ctypes on the binding's library handle). It walks the guest tables with
QEMU's code, the same code that translates every guest load and store. It sets Accessed bits
(which our walk ignores) and overwrites CR2 on failure (saved and restored here).

Unicorn setup: a UC_MODE_64 engine over the very same GuestMemory (``mem_map_ptr``). For the
32-bit paging modes, long mode must be left first: the engine starts with EFER = LME|LMA, and
``msr_write`` leaves LMA alone (the SDM makes it read-only, vol. 3A 2.2.1; writing 0 reads back
0x400). Only turning CR0.PG off while it is on clears LMA, so the engine is put in long mode and
taken out again before EFER is written.

If ``uc_vmem_translate`` were missing, the fallback would be a guest load at the address; one
such load (page-crossing) is checked here too.
"""

from __future__ import annotations

import ctypes
import random

import pytest
from unicorn.unicorn_const import (
    UC_ARCH_X86,
    UC_ERR_OK,
    UC_MODE_64,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
)
from unicorn.unicorn_py3.arch.intel import UcIntel
from unicorn.unicorn_py3.unicorn import Uc, uclib
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
)

from hv_emu.errors import PageFault
from hv_emu.layout import GIB, MIB, PAGE_SIZE
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.tables import PAGE_SIZES, PAGING_CR0, PageTableBuilder, identity_map
from hv_emu.memory.walk import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    MSR_EFER,
    PTE_P,
    PagingMode,
    PagingState,
    read_virt,
    translate,
)

# uc_err uc_vmem_translate(uc_engine *uc, uint64_t address, uc_prot prot, uint64_t *paddress);
_vmem_translate = uclib.uc_vmem_translate
_vmem_translate.restype = ctypes.c_int
_vmem_translate.argtypes = [
    ctypes.c_void_p,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_uint64),
]

RAM = 4 * MIB
TABLES, TABLES_END = 0x10000, 0x100000
#: Physical frames the random mappings point to (beyond RAM is fine: only translation is compared).
PHYS_SPAN = 1 << 36


def engine(mem: GuestMemory, state: PagingState) -> UcIntel:
    """A 64-bit Unicorn engine over ``mem`` with paging set up as ``state`` says."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    assert isinstance(uc, UcIntel)  # the binding's x86 class, which has msr_read/msr_write
    uc.mem_map_ptr(0, mem.size, UC_PROT_ALL, mem.host_address)
    if not state.long_mode:
        # Leave long mode: PG on (with LME and PAE the CPU sets LMA), PG off (the CPU clears
        # LMA), then clear LME.
        uc.reg_write(UC_X86_REG_CR4, CR4_PAE)
        uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_PG)
        uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET)
    uc.msr_write(MSR_EFER, state.efer)
    assert uc.msr_read(MSR_EFER) == state.efer
    # Host-side enable order (docs/UNICORN.md U6): CR4, CR3, then CR0.PG.
    uc.reg_write(UC_X86_REG_CR4, state.cr4)
    uc.reg_write(UC_X86_REG_CR3, state.cr3)
    uc.reg_write(UC_X86_REG_CR0, state.cr0)
    return uc


def unicorn_translate(uc: Uc, va: int, write: bool) -> int | None:
    """Unicorn's guest-physical address for ``va``, or None if its MMU refuses the access."""
    cr2 = uc.reg_read(UC_X86_REG_CR2)
    out = ctypes.c_uint64()
    prot = UC_PROT_WRITE if write else UC_PROT_READ
    err = _vmem_translate(uc._uch, va, prot, ctypes.byref(out))
    uc.reg_write(UC_X86_REG_CR2, cr2)
    return out.value if err == UC_ERR_OK else None


def ours(mem: GuestMemory, state: PagingState, va: int, write: bool) -> int | None:
    try:
        return translate(mem, state, va, write=write)
    except PageFault:
        return None


def random_va(rng: random.Random, mode: PagingMode, page_size: int) -> int:
    if mode is PagingMode.LONG:
        half = rng.choice((0, 0xFFFF_8000_0000_0000))  # low or high canonical half
        return half + rng.randrange(0, 1 << 47, page_size)
    return rng.randrange(0, 1 << 32, page_size)


def build_random(
    rng: random.Random, mode: PagingMode
) -> tuple[GuestMemory, PagingState, list[tuple[int, int, int]]]:
    """Random mappings (va, pa, size) of random page sizes, some read-only, with holes between.

    VAs cluster in a few random regions so that mappings share tables and neighbour holes."""
    mem = GuestMemory(RAM)
    builder = PageTableBuilder(mem, mode, TABLES, TABLES_END)
    regions = [random_va(rng, mode, GIB if mode is not PagingMode.TWO_LEVEL else 4 * MIB)]
    regions += [random_va(rng, mode, GIB) for _ in range(2)]
    mappings: list[tuple[int, int, int]] = []
    for _ in range(80):
        if len(mappings) == 24:
            break
        page_size = rng.choice(PAGE_SIZES[mode])
        count = rng.randint(1, 3) if page_size == PAGE_SIZE else 1
        base = rng.choice(regions)
        span = min(64 * page_size, GIB)
        va = base + rng.randrange(0, span, page_size) if page_size < GIB else base
        size = count * page_size
        if any(va < v + s and v < va + size for v, _, s in mappings):
            continue
        limit = 1 << 32 if mode is PagingMode.TWO_LEVEL and page_size == PAGE_SIZE else PHYS_SPAN
        if mode is not PagingMode.LONG and va + size > 1 << 32:
            continue
        pa = rng.randrange(0, limit - size, page_size)
        builder.map(va, pa, size, page_size=page_size, writable=rng.random() < 0.7)
        mappings.append((va, pa, size))
    return mem, builder.state(), mappings


def probes(rng: random.Random, mode: PagingMode, mappings: list[tuple[int, int, int]]) -> set[int]:
    """Addresses inside each mapping (first, last, random byte), just around it, and anywhere."""
    mask = (1 << 64) - 1 if mode is PagingMode.LONG else 0xFFFF_FFFF
    found: set[int] = set()
    for va, _, size in mappings:
        found |= {va, va + size - 1, va + rng.randrange(size), va - 1, va + size}
    found |= {rng.getrandbits(64 if mode is PagingMode.LONG else 32) for _ in range(40)}
    found |= {random_va(rng, mode, 1) for _ in range(40)}
    return {va & mask for va in found}


@pytest.mark.parametrize("mode", [PagingMode.LONG, PagingMode.PAE, PagingMode.TWO_LEVEL])
@pytest.mark.parametrize("seed", range(16))
def test_walk_matches_unicorn_on_random_tables(mode: PagingMode, seed: int) -> None:
    rng = random.Random(f"{mode.value}-{seed}")
    mem, state, mappings = build_random(rng, mode)
    assert len(mappings) >= 8
    uc = engine(mem, state)
    mapped = 0
    for va in sorted(probes(rng, mode, mappings)):
        for write in (False, True):
            expected = unicorn_translate(uc, va, write)
            assert ours(mem, state, va, write) == expected, (hex(va), write)
            mapped += expected is not None
    assert mapped >= 3 * len(mappings)  # the comparison saw real translations, not only faults


@pytest.mark.parametrize("mode", [PagingMode.LONG, PagingMode.PAE, PagingMode.TWO_LEVEL])
@pytest.mark.parametrize("seed", range(4))
def test_walk_matches_unicorn_on_garbage_tables(mode: PagingMode, seed: int) -> None:
    """Random entries (random flags, reserved and ignored high bits, tables pointing at each
    other) in 16 pages, random CR3, WP and NXE: both walks agree on every probe.

    Physical-address bits 39 and up are kept clear: their reserved status depends on MAXPHYADDR
    (40 under Unicorn), which the walk leaves out."""
    rng = random.Random(f"garbage-{mode.value}-{seed}")
    mapped = 0
    for _ in range(40):
        mem = GuestMemory(64 * PAGE_SIZE)
        for page in range(16):
            entry = rng.randrange(16) << 12 | rng.getrandbits(12)
            if rng.random() < 0.85:
                entry |= PTE_P  # so that most walks go deep
            if rng.random() < 0.2:
                entry |= rng.getrandbits(27) << 12  # far tables and frames, below 2**39
            if mode is PagingMode.TWO_LEVEL:
                entry &= 0xFFFF_FFFF
                mem.write(page * PAGE_SIZE, entry.to_bytes(4, "little") * (PAGE_SIZE // 4))
            else:
                if rng.random() < 0.2:
                    entry |= rng.getrandbits(12) << 52  # ignored, reserved or XD
                mem.write(page * PAGE_SIZE, entry.to_bytes(8, "little") * (PAGE_SIZE // 8))
        cr0 = PAGING_CR0 if rng.random() < 0.7 else PAGING_CR0 & ~CR0_WP
        cr4, efer = {
            PagingMode.LONG: (CR4_PAE, EFER_LME | EFER_LMA),
            PagingMode.PAE: (CR4_PAE, 0),
            PagingMode.TWO_LEVEL: (CR4_PSE if rng.random() < 0.7 else 0, 0),
        }[mode]
        if mode is not PagingMode.TWO_LEVEL and rng.random() < 0.5:
            efer |= EFER_NXE
        state = PagingState(cr0, rng.randrange(16) << 12, cr4, efer)
        uc = engine(mem, state)
        for _ in range(6):
            va = random_va(rng, mode, 1)
            for write in (False, True):
                expected = unicorn_translate(uc, va, write)
                assert ours(mem, state, va, write) == expected, hex(va)
                mapped += expected is not None
    assert mapped > 0  # not only faults


@pytest.mark.parametrize("mode", [PagingMode.LONG, PagingMode.PAE, PagingMode.TWO_LEVEL])
def test_identity_map_matches_unicorn(mode: PagingMode) -> None:
    mem = GuestMemory(RAM)
    state = identity_map(mem, mode, RAM - 3 * PAGE_SIZE)
    uc = engine(mem, state)
    for va in (0, 0x1234, 2 * MIB - 1, 2 * MIB, RAM - 3 * PAGE_SIZE - 1, RAM - 3 * PAGE_SIZE, RAM):
        assert ours(mem, state, va, True) == unicorn_translate(uc, va, True), hex(va)


def test_guest_load_across_pages_matches_read_virt() -> None:
    """A real guest ``mov rax, [rbx]`` straddling two discontiguous pages reads what
    ``read_virt`` reads."""
    mem = GuestMemory(RAM)
    builder = PageTableBuilder(mem, PagingMode.LONG, TABLES, TABLES_END)
    builder.map(0, 0, 2 * MIB, page_size=2 * MIB)  # identity: code at 0x1000
    va = 0xFFFF_8000_1234_5000
    builder.map(va, 0x30_0000, PAGE_SIZE)
    builder.map(va + PAGE_SIZE, 0x28_0000, PAGE_SIZE)
    mem.write(0x30_0FFC, b"\x11\x22\x33\x44")
    mem.write(0x28_0000, b"\x55\x66\x77\x88")
    mem.write(0x1000, bytes.fromhex("488b03f4"))  # mov rax, [rbx]; hlt
    state = builder.state()
    uc = engine(mem, state)
    uc.reg_write(UC_X86_REG_RBX, va + PAGE_SIZE - 4)
    uc.emu_start(0x1000, 0x1003)
    loaded = uc.reg_read(UC_X86_REG_RAX).to_bytes(8, "little")
    assert loaded == bytes.fromhex("1122334455667788")
    assert loaded == read_virt(mem, state, va + PAGE_SIZE - 4, 8)
