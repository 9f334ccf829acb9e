"""The guest page-table walk (hv_emu.memory.walk) and the table builder (hv_emu.memory.tables)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, GuestMemoryError, PageFault
from hv_emu.layout import GIB, MIB, PAGE_SIZE
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.tables import PAGING_CR0, PageTableBuilder, identity_map
from hv_emu.memory.walk import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    NON_CANONICAL,
    NOT_PRESENT,
    OUTSIDE_RAM,
    PTE_P,
    PTE_PS,
    PTE_RW,
    READ_ONLY,
    RESERVED_BIT,
    XD,
    PagingMode,
    PagingState,
    read_cstring,
    read_virt,
    translate,
    write_virt,
)

RAM = 8 * MIB
TABLES, TABLES_END = 0x10000, 0x40000
PAGED_MODES = (PagingMode.LONG, PagingMode.PAE, PagingMode.TWO_LEVEL)
TOP_LEVEL = {PagingMode.LONG: 4, PagingMode.PAE: 3, PagingMode.TWO_LEVEL: 2}


def make(mode: PagingMode, ram: int = RAM) -> tuple[GuestMemory, PageTableBuilder]:
    mem = GuestMemory(ram)
    return mem, PageTableBuilder(mem, mode, TABLES, TABLES_END)


def entry_value(mem: GuestMemory, builder: PageTableBuilder, va: int, level: int) -> int:
    address = builder.entry_address(va, level)
    if builder.mode is PagingMode.TWO_LEVEL:
        return mem.read_u32(address)
    return mem.read_u64(address)


def set_entry(mem: GuestMemory, builder: PageTableBuilder, va: int, level: int, value: int) -> None:
    address = builder.entry_address(va, level)
    if builder.mode is PagingMode.TWO_LEVEL:
        mem.write_u32(address, value)
    else:
        mem.write_u64(address, value)


# ---------------------------------------------------------------------------- the registers


def test_paging_state_selects_mode_like_sdm_4_1_1() -> None:
    assert PagingState(0x11, 0, 0, 0).mode is PagingMode.NONE
    assert PagingState(0x11, 0, CR4_PAE, EFER_LME | EFER_LMA).mode is PagingMode.NONE
    assert PagingState(PAGING_CR0, 0, CR4_PAE, EFER_LME | EFER_LMA).mode is PagingMode.LONG
    assert PagingState(PAGING_CR0, 0, CR4_PAE, 0).mode is PagingMode.PAE
    assert PagingState(PAGING_CR0, 0, CR4_PSE, 0).mode is PagingMode.TWO_LEVEL
    assert PagingState(PAGING_CR0, 0, 0, 0).address_mask == 0xFFFF_FFFF
    long_state = PagingState(PAGING_CR0, 0, CR4_PAE, EFER_LMA)
    assert long_state.long_mode
    assert long_state.address_mask == (1 << 64) - 1
    assert PAGING_CR0 == 0x8001_0011


@pytest.mark.parametrize("mode", PAGED_MODES)
def test_builder_state_turns_the_mode_on(mode: PagingMode) -> None:
    _, builder = make(mode)
    state = builder.state(cr4_extra=1 << 9)
    assert state.mode is mode
    assert state.cr3 == TABLES
    assert state.cr4 & (1 << 9)
    assert state.efer == (0x500 if mode is PagingMode.LONG else 0)


def test_no_paging_is_identity_with_32_bit_wrap() -> None:
    mem = GuestMemory(64 * 1024)
    assert translate(mem, PagingState(0x11, 0, 0, 0), 0x1_0000_1234) == 0x1234
    assert translate(mem, PagingState(0x11, 0, 0, EFER_LMA), 0x1234) == 0x1234


# ---------------------------------------------------------------------------- each page size

SIZES = [
    (PagingMode.LONG, PAGE_SIZE, 0xFFFF_8000_0012_3000),
    (PagingMode.LONG, 2 * MIB, 0x0000_7F00_0020_0000),
    (PagingMode.LONG, GIB, 0xFFFF_FFFF_C000_0000),
    (PagingMode.PAE, PAGE_SIZE, 0xC012_3000),
    (PagingMode.PAE, 2 * MIB, 0x8020_0000),
    (PagingMode.TWO_LEVEL, PAGE_SIZE, 0xC012_3000),
    (PagingMode.TWO_LEVEL, 4 * MIB, 0x8040_0000),
]


@pytest.mark.parametrize(("mode", "page_size", "va"), SIZES)
def test_each_mode_and_page_size_translates(mode: PagingMode, page_size: int, va: int) -> None:
    mem, builder = make(mode)
    pa = 2 * page_size if page_size < GIB else GIB  # non-identity, aligned
    builder.map(va, pa, page_size, page_size=page_size)
    state = builder.state()
    for offset in (0, 0x123, page_size // 2 + 7, page_size - 1):
        assert translate(mem, state, va + offset) == pa + offset
        assert translate(mem, state, va + offset, write=True) == pa + offset
    with pytest.raises(PageFault) as fault:
        translate(mem, state, va + page_size)
    assert fault.value.reason == NOT_PRESENT


def test_pse36_4mib_page_above_4gib() -> None:
    mem, builder = make(PagingMode.TWO_LEVEL)
    builder.map(0x40_0000, 0x12_0040_0000, 4 * MIB, page_size=4 * MIB)
    assert translate(mem, builder.state(), 0x40_1234) == 0x12_0040_1234


def test_ps_is_ignored_without_cr4_pse() -> None:
    # SDM table 4-5: with CR4.PSE = 0 a PDE's PS bit is ignored; the PDE points to a page table.
    mem, builder = make(PagingMode.TWO_LEVEL)
    builder.map(0x40_0000, 0x40_0000, 4 * MIB, page_size=4 * MIB)
    # The "page table" is then the 4 KiB frame at 0x400000: make its entry 1 map 0x345000.
    mem.write_u32(0x40_0000 + 4, 0x34_5000 | PTE_P)
    state = dataclasses.replace(builder.state(), cr4=0)
    assert translate(mem, state, 0x40_1010) == 0x34_5010
    assert translate(mem, builder.state(), 0x40_1010) == 0x40_1010


# ---------------------------------------------------------------------------- page-crossing access


@pytest.mark.parametrize("mode", PAGED_MODES)
def test_read_and_write_across_discontiguous_pages(mode: PagingMode) -> None:
    mem, builder = make(mode)
    va = 0xFFFF_8000_0040_0000 if mode is PagingMode.LONG else 0xB000_0000
    frames = (0x30_0000, 0x25_0000, 0x28_7000)  # out of order, not adjacent
    for i, frame in enumerate(frames):
        builder.map(va + i * PAGE_SIZE, frame, PAGE_SIZE)
    state = builder.state()
    mem.write(frames[0] + PAGE_SIZE - 3, b"abc")
    mem.write(frames[1], b"d" * PAGE_SIZE)
    mem.write(frames[2], b"efg")
    start = va + PAGE_SIZE - 3
    data = read_virt(mem, state, start, 3 + PAGE_SIZE + 3)
    assert data == b"abc" + b"d" * PAGE_SIZE + b"efg"
    write_virt(mem, state, start, b"XYZ" + b"w" * PAGE_SIZE + b"UVW")
    assert mem.read(frames[0] + PAGE_SIZE - 3, 3) == b"XYZ"
    assert mem.read(frames[1], PAGE_SIZE) == b"w" * PAGE_SIZE
    assert mem.read(frames[2], 3) == b"UVW"
    assert read_virt(mem, state, start, 0) == b""
    with pytest.raises(ValueError):
        read_virt(mem, state, start, -1)


def test_read_virt_through_large_pages_and_identity_runs() -> None:
    mem = GuestMemory(RAM)
    state = identity_map(mem, PagingMode.LONG, RAM)
    mem.write(2 * MIB - 5, b"0123456789")
    assert read_virt(mem, state, 2 * MIB - 5, 10) == b"0123456789"
    assert len(read_virt(mem, state, 0, RAM)) == RAM


def test_write_virt_faulting_on_last_page_writes_nothing() -> None:
    mem, builder = make(PagingMode.LONG)
    builder.map(0x40_0000, 0x30_0000, PAGE_SIZE)
    builder.map(0x40_1000, 0x31_0000, PAGE_SIZE, writable=False)
    with pytest.raises(PageFault) as fault:
        write_virt(mem, builder.state(), 0x40_0FF0, b"x" * 0x20)
    assert fault.value.write and fault.value.reason == READ_ONLY
    assert mem.read(0x30_0FF0, 0x10) == bytes(0x10)


def test_mapped_page_outside_ram_is_a_memory_error() -> None:
    mem, builder = make(PagingMode.PAE)
    builder.map(0x1000, RAM + 0x1000, PAGE_SIZE)
    state = builder.state()
    assert translate(mem, state, 0x1008) == RAM + 0x1008
    with pytest.raises(GuestMemoryError):
        read_virt(mem, state, 0x1000, 8)
    with pytest.raises(GuestMemoryError):
        write_virt(mem, state, 0x1000, b"12345678")


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("mode", PAGED_MODES)
def test_not_present_at_each_level(mode: PagingMode) -> None:
    mem, builder = make(mode)
    va = 0x7F12_3456_7000 if mode is PagingMode.LONG else 0xC123_4000
    builder.map(va, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    assert translate(mem, state, va) == 0x30_0000
    for level in range(TOP_LEVEL[mode], 0, -1):
        saved = entry_value(mem, builder, va, level)
        set_entry(mem, builder, va, level, saved & ~PTE_P)
        with pytest.raises(PageFault) as fault:
            translate(mem, state, va + 0x10)
        assert (fault.value.level, fault.value.reason) == (level, NOT_PRESENT)
        assert fault.value.va == va + 0x10
        set_entry(mem, builder, va, level, saved)


@pytest.mark.parametrize("mode", PAGED_MODES)
def test_write_protect_at_each_level(mode: PagingMode) -> None:
    mem, builder = make(mode)
    va = 0x7F12_3456_7000 if mode is PagingMode.LONG else 0xC123_4000
    builder.map(va, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    no_wp = dataclasses.replace(state, cr0=state.cr0 & ~CR0_WP)
    # A PAE PDPTE has no R/W bit: only the PD and PT levels protect.
    levels = range(2, 0, -1) if mode is not PagingMode.LONG else range(4, 0, -1)
    for level in levels:
        saved = entry_value(mem, builder, va, level)
        set_entry(mem, builder, va, level, saved & ~PTE_RW)
        assert translate(mem, state, va) == 0x30_0000
        with pytest.raises(PageFault) as fault:
            translate(mem, state, va, write=True)
        assert fault.value.write
        assert (fault.value.level, fault.value.reason) == (level, READ_ONLY)
        # SDM 4.6.1: with CR0.WP = 0 a supervisor write ignores R/W.
        assert translate(mem, no_wp, va, write=True) == 0x30_0000
        set_entry(mem, builder, va, level, saved)


def test_32_bit_linear_addresses_wrap_at_4gib() -> None:
    for mode in (PagingMode.PAE, PagingMode.TWO_LEVEL):
        mem, builder = make(mode)
        builder.map(0xFFFF_F000, 0x30_0000, PAGE_SIZE)
        builder.map(0, 0x20_0000, PAGE_SIZE)
        state = builder.state()
        assert translate(mem, state, 0x1_0000_0010) == 0x20_0010
        mem.write(0x30_0FFE, b"ab")
        mem.write(0x20_0000, b"cd")
        assert read_virt(mem, state, 0xFFFF_FFFE, 4) == b"abcd"


def test_non_canonical_addresses_fault_in_long_mode() -> None:
    mem, builder = make(PagingMode.LONG)
    builder.map(0x7FFF_FFFF_F000, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    for va in (0x8000_0000_0000, 0xFFFF_7FFF_FFFF_FFFF, 0x0001_0000_0000_0000):
        with pytest.raises(PageFault) as fault:
            translate(mem, state, va)
        assert (fault.value.reason, fault.value.level) == (NON_CANONICAL, 0)
    # A buffer running off the top of the lower half faults on its non-canonical part.
    with pytest.raises(PageFault) as fault:
        read_virt(mem, state, 0x7FFF_FFFF_FFF0, 0x20)
    assert fault.value.reason == NON_CANONICAL


@pytest.mark.parametrize("mode", PAGED_MODES)
def test_table_outside_ram_is_a_page_fault(mode: PagingMode) -> None:
    mem, builder = make(mode)
    builder.map(0x40_0000, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    saved = entry_value(mem, builder, 0x40_0000, 2)
    set_entry(mem, builder, 0x40_0000, 2, (RAM + 0x10_0000) | PTE_P | PTE_RW)
    with pytest.raises(PageFault) as fault:
        translate(mem, state, 0x40_0000)
    assert (fault.value.level, fault.value.reason) == (1, OUTSIDE_RAM)
    set_entry(mem, builder, 0x40_0000, 2, saved)
    far_cr3 = dataclasses.replace(state, cr3=0xFFFF_0000)
    with pytest.raises(PageFault) as fault:
        translate(mem, far_cr3, 0x40_0000)
    assert (fault.value.level, fault.value.reason) == (TOP_LEVEL[mode], OUTSIDE_RAM)


def test_reserved_bits() -> None:
    # PS in a PML4E (SDM table 4-15).
    mem, builder = make(PagingMode.LONG)
    builder.map(0x1000, 0x30_0000, PAGE_SIZE)
    set_entry(mem, builder, 0x1000, 4, entry_value(mem, builder, 0x1000, 4) | PTE_PS)
    with pytest.raises(PageFault) as fault:
        translate(mem, builder.state(), 0x1000)
    assert (fault.value.level, fault.value.reason) == (4, RESERVED_BIT)
    # Bit 52 of a PAE PTE (SDM table 4-11: bits 62:MAXPHYADDR reserved) and bit 63 of a PAE
    # PDPTE; R/W in a PDPTE (bits 2:1) is accepted, as Unicorn accepts it.
    mem, builder = make(PagingMode.PAE)
    builder.map(0x1000, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    pdpte = entry_value(mem, builder, 0x1000, 3)
    set_entry(mem, builder, 0x1000, 3, pdpte | PTE_RW)
    assert translate(mem, state, 0x1000) == 0x30_0000
    for level, bit in ((1, 1 << 52), (3, 1 << 63)):
        saved = entry_value(mem, builder, 0x1000, level)
        set_entry(mem, builder, 0x1000, level, saved | bit)
        with pytest.raises(PageFault) as fault:
            translate(mem, state, 0x1000)
        assert (fault.value.level, fault.value.reason) == (level, RESERVED_BIT)
        set_entry(mem, builder, 0x1000, level, saved)
    # Bit 63 (XD) of a 4-level PTE is reserved unless EFER.NXE = 1; bits 62:52 are ignored.
    mem, builder = make(PagingMode.LONG)
    builder.map(0x1000, 0x30_0000, PAGE_SIZE)
    state = builder.state()
    set_entry(mem, builder, 0x1000, 1, entry_value(mem, builder, 0x1000, 1) | XD | 0x7FF << 52)
    with pytest.raises(PageFault) as fault:
        translate(mem, state, 0x1000)
    assert (fault.value.level, fault.value.reason) == (1, RESERVED_BIT)
    nxe = dataclasses.replace(state, efer=state.efer | EFER_NXE)
    assert translate(mem, nxe, 0x1000) == 0x30_0000
    # Bit 13 of a 2 MiB PDE (SDM table 4-17: bits 20:13 reserved).
    mem, builder = make(PagingMode.LONG)
    builder.map(0x20_0000, 0x40_0000, 2 * MIB, page_size=2 * MIB)
    set_entry(mem, builder, 0x20_0000, 2, entry_value(mem, builder, 0x20_0000, 2) | 1 << 13)
    with pytest.raises(PageFault) as fault:
        translate(mem, builder.state(), 0x20_0000)
    assert (fault.value.level, fault.value.reason) == (2, RESERVED_BIT)
    # Bit 21 of a 4 MiB PSE-36 PDE (SDM table 4-4).
    mem, builder = make(PagingMode.TWO_LEVEL)
    builder.map(0x40_0000, 0x40_0000, 4 * MIB, page_size=4 * MIB)
    set_entry(mem, builder, 0x40_0000, 2, entry_value(mem, builder, 0x40_0000, 2) | 1 << 21)
    with pytest.raises(PageFault) as fault:
        translate(mem, builder.state(), 0x40_0000)
    assert (fault.value.level, fault.value.reason) == (2, RESERVED_BIT)


# ---------------------------------------------------------------------------- C strings


def string_setup() -> tuple[GuestMemory, PagingState]:
    """Two virtual pages at 0x40000 and 0x41000 on discontiguous frames, then an unmapped page."""
    mem, builder = make(PagingMode.LONG)
    builder.map(0x4_0000, 0x30_0000, PAGE_SIZE)
    builder.map(0x4_1000, 0x20_0000, PAGE_SIZE)
    mem.fill(0x30_0000, PAGE_SIZE, ord("a"))
    mem.fill(0x20_0000, PAGE_SIZE, ord("b"))
    return mem, builder.state()


def test_cstring_nul_on_last_byte_before_an_unmapped_page() -> None:
    mem, state = string_setup()
    mem.write_u8(0x20_0FFF, 0)
    text = read_cstring(mem, state, 0x4_0FF0, 0x10000)
    assert text == b"a" * 0x10 + b"b" * 0xFFF


def test_cstring_without_nul() -> None:
    mem, state = string_setup()
    assert read_cstring(mem, state, 0x4_0000, 0x1800) is None
    assert read_cstring(mem, state, 0x4_0000, 0) is None
    with pytest.raises(PageFault):  # runs into the unmapped page at 0x42000
        read_cstring(mem, state, 0x4_0000, 0x3000)
    with pytest.raises(ValueError):
        read_cstring(mem, state, 0x4_0000, -1)


def test_cstring_stops_at_the_first_nul() -> None:
    mem, state = string_setup()
    mem.write(0x30_0FFE, b"x\x00")
    assert read_cstring(mem, state, 0x4_0FFE, 100) == b"x"
    assert read_cstring(mem, state, 0x4_0FFF, 100) == b""
    mem.write(0x30_0FFE, b"aa")
    mem.write(0x20_0000, b"\x00")
    assert read_cstring(mem, state, 0x4_0FF0, 0x10) is None  # the NUL is just past max_len
    assert read_cstring(mem, state, 0x4_0FF0, 0x11) == b"a" * 0x10


# ---------------------------------------------------------------------------- identity maps


@pytest.mark.parametrize("mode", PAGED_MODES)
@pytest.mark.parametrize("ram", [8 * MIB, 6 * MIB + 12 * 1024])
def test_identity_map_covers_exactly_ram(mode: PagingMode, ram: int) -> None:
    mem = GuestMemory(ram)
    state = identity_map(mem, mode, ram)
    assert state.mode is mode
    for pa in range(0, ram, 0x3_3000):
        assert translate(mem, state, pa, write=True) == pa
    assert translate(mem, state, ram - 1) == ram - 1
    with pytest.raises(PageFault):
        translate(mem, state, ram)


def test_identity_map_uses_large_pages() -> None:
    mem = GuestMemory(8 * MIB)
    state = identity_map(mem, PagingMode.LONG, 8 * MIB)
    # PML4 at 0x10000, PDPT at 0x11000, one PD at 0x12000 whose entries have PS set.
    assert state.cr3 == 0x1_0000
    assert mem.read_u64(0x12000 + 8 * 3) == 3 * 2 * MIB | PTE_PS | PTE_RW | PTE_P
    mem32 = GuestMemory(8 * MIB)
    identity_map(mem32, PagingMode.TWO_LEVEL, 8 * MIB)
    assert mem32.read_u32(0x10000 + 4) == 4 * MIB | PTE_PS | PTE_RW | PTE_P


# ---------------------------------------------------------------------------- builder errors


def test_builder_rejects_what_the_mode_cannot_map() -> None:
    mem, pae = make(PagingMode.PAE)
    with pytest.raises(ConfigError):
        pae.map(0, 0, GIB, page_size=GIB)  # 1 GiB pages are 4-level only
    with pytest.raises(ConfigError):
        pae.map(0x1000, 0x2800, PAGE_SIZE)  # misaligned physical address
    with pytest.raises(ConfigError):
        pae.map(0xFFFF_F000, 0, 2 * PAGE_SIZE)  # past 4 GiB
    pae.map(0x1000, 0x2000, PAGE_SIZE)
    with pytest.raises(ConfigError):
        pae.map(0x1000, 0x3000, PAGE_SIZE)  # already mapped
    with pytest.raises(ConfigError):
        pae.map(0, 0, 2 * MIB, page_size=2 * MIB)  # over an existing page table
    with pytest.raises(ConfigError):
        pae.entry_address(0x1000, 4)
    _, long_builder = make(PagingMode.LONG)
    with pytest.raises(ConfigError):
        long_builder.map(0, 0, 4 * MIB, page_size=4 * MIB)  # 4 MiB pages are 32-bit only
    with pytest.raises(ConfigError):
        long_builder.map(0x7FFF_FFFF_F000, 0, 2 * PAGE_SIZE)  # crosses into non-canonical
    long_builder.map(0, 0, 2 * MIB, page_size=2 * MIB)
    with pytest.raises(ConfigError):
        long_builder.map(0x1000, 0x1000, PAGE_SIZE)  # inside a large page
    with pytest.raises(ConfigError):
        PageTableBuilder(mem, PagingMode.NONE, TABLES, TABLES_END)
    with pytest.raises(ConfigError):
        PageTableBuilder(mem, PagingMode.LONG, TABLES, RAM + PAGE_SIZE)


def test_builder_runs_out_of_table_pages() -> None:
    mem = GuestMemory(RAM)
    builder = PageTableBuilder(mem, PagingMode.LONG, TABLES, TABLES + 3 * PAGE_SIZE)
    builder.map(0, 0x20_0000, 2 * MIB, page_size=2 * MIB)  # PML4, PDPT, PD: the area is full
    with pytest.raises(ConfigError):
        builder.map(0x40_0000, 0x30_0000, PAGE_SIZE)  # needs a PT
    with pytest.raises(ConfigError):
        identity_map(mem, PagingMode.LONG, 4 * GIB, TABLES, TABLES + 4 * PAGE_SIZE)


# ---------------------------------------------------------------------------- hostile tables

FUZZ_RAM = 64 * PAGE_SIZE
FUZZ_PAGES = 16  # entries pointing below this page number lead to more "tables"

entry_values = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.builds(
        lambda page, flags, high: page << 12 | flags | high << 52,
        st.integers(0, FUZZ_PAGES + 2),
        st.integers(0, 0xFFF),
        st.integers(0, 0xFFF),
    ),
)
states = st.builds(
    PagingState,
    cr0=st.sampled_from([0x11, PAGING_CR0, PAGING_CR0 & ~CR0_WP, CR0_PG]),
    cr3=st.one_of(st.integers(0, FUZZ_PAGES).map(lambda p: p << 12), st.integers(0, (1 << 64) - 1)),
    cr4=st.sampled_from([0, CR4_PSE, CR4_PAE, CR4_PAE | CR4_PSE]),
    efer=st.sampled_from([0, EFER_LME, EFER_LME | EFER_LMA]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tables=st.lists(st.tuples(st.integers(0, FUZZ_PAGES - 1), entry_values), max_size=8),
    state=states,
    va=st.one_of(st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 32)),
    n=st.integers(0, 3 * PAGE_SIZE),
)
def test_garbage_tables_raise_only_guest_faults(
    tables: list[tuple[int, int]], state: PagingState, va: int, n: int
) -> None:
    mem = GuestMemory(FUZZ_RAM)
    for page, value in tables:
        # Every slot of the page holds the same entry, so any index reaches it.
        mem.write(page * PAGE_SIZE, value.to_bytes(8, "little") * (PAGE_SIZE // 8))
    for write in (False, True):
        try:
            pa = translate(mem, state, va, write=write)
            assert 0 <= pa < max(1 << 52, state.address_mask + 1)
        except PageFault as fault:
            assert fault.va == va & state.address_mask
            assert fault.write is write
    with contextlib.suppress(PageFault, GuestMemoryError):
        read_virt(mem, state, va, n)
    with contextlib.suppress(PageFault, GuestMemoryError):
        write_virt(mem, state, va, b"\xaa" * (n % 64))
    with contextlib.suppress(PageFault, GuestMemoryError):
        read_cstring(mem, state, va, n)
