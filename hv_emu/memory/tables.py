"""Building paging structures in guest RAM, as an OS kernel (or a boot loader) does.

Models: the page tables a guest would build for itself before it turns paging on. The loader
uses ``identity_map`` to hand 64-bit guests (and 32-bit guests that ask for paging) a ready
identity map of RAM; tests use ``PageTableBuilder`` to build arbitrary mappings, at any virtual
address, with 4 KiB, 2 MiB, 4 MiB and 1 GiB pages.

Follows: Intel SDM vol. 3A ch. 4: 4.3 (32-bit paging, PSE and PSE-36 4 MiB pages), 4.4 (PAE
paging: a 32-byte PDPT of 4 entries whose only valid flag is P), 4.5 (4-level paging), 4.1.1 and
4.1.2 (the CR0/CR4/EFER bits that turn each mode on).

Leaves out: unmapping and remapping (a mapping over a present entry is refused), freeing table
pages, global/PAT/cache-control bits, XD, 5-level paging.

Guest controls: nothing while the tables are built (before the guest's first instruction); once
it runs, the guest owns these pages and may rewrite them (the walk in ``walk.py`` assumes
nothing about what it finds).
"""

from __future__ import annotations

from hv_emu.errors import ConfigError
from hv_emu.layout import GIB, MIB, PAGE_SIZE, PAGE_TABLES_ADDR, PAGE_TABLES_END
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import (
    ADDRESS_MASK_32,
    ADDRESS_MASK_64,
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PSE,
    EFER_LMA,
    EFER_LME,
    PTE_P,
    PTE_PS,
    PTE_RW,
    PTE_US,
    PagingMode,
    PagingState,
)

#: CR0 of every paging mode built here: protected mode, paging, supervisor write protection,
#: and ET (hardwired to 1, as Unicorn's reset value 0x11 shows: docs/UNICORN.md U2) = 0x80010011.
PAGING_CR0 = CR0_PE | CR0_ET | CR0_WP | CR0_PG

#: The page sizes each mode offers (SDM 4.3, 4.4, 4.5), largest first. Unicorn honours 1 GiB pages
#: without advertising PDPE1GB (docs/UNICORN.md U6).
PAGE_SIZES: dict[PagingMode, tuple[int, ...]] = {
    PagingMode.LONG: (GIB, 2 * MIB, PAGE_SIZE),
    PagingMode.PAE: (2 * MIB, PAGE_SIZE),
    PagingMode.TWO_LEVEL: (4 * MIB, PAGE_SIZE),
}

#: The level (4 = PML4 ... 1 = PT) whose entry maps a page of each size.
_LEAF_LEVEL = {PAGE_SIZE: 1, 2 * MIB: 2, 4 * MIB: 2, GIB: 3}
#: Index shift of each level, per mode (the same numbers the walker uses).
_SHIFTS: dict[PagingMode, dict[int, int]] = {
    PagingMode.LONG: {4: 39, 3: 30, 2: 21, 1: 12},
    PagingMode.PAE: {3: 30, 2: 21, 1: 12},
    PagingMode.TWO_LEVEL: {2: 22, 1: 12},
}
_TOP_LEVEL = {PagingMode.LONG: 4, PagingMode.PAE: 3, PagingMode.TWO_LEVEL: 2}

#: Largest physical address an entry can hold: MAXPHYADDR's architectural maximum (52 bits) with
#: 64-bit entries; 32 bits in a 32-bit PTE; 40 bits in a PSE-36 4 MiB PDE.
_PHYS_LIMIT = {8: 1 << 52, 4: 1 << 32}
_PSE36_LIMIT = 1 << 40


class PageTableBuilder:
    """Writes one paging hierarchy of ``mode`` into guest RAM, taking zeroed 4 KiB table pages
    from ``[base, limit)``."""

    def __init__(self, mem: GuestMemory, mode: PagingMode, base: int, limit: int) -> None:
        if mode is PagingMode.NONE:
            raise ConfigError("there are no page tables without paging (mode NONE)")
        if base % PAGE_SIZE or limit % PAGE_SIZE or not 0 <= base < limit <= mem.size:
            raise ConfigError(
                f"page-table area [{base:#x}, {limit:#x}) is not page-aligned inside "
                f"{mem.size:#x} bytes of RAM"
            )
        self._mem = mem
        self.mode = mode
        self._next_free = base
        self._limit = limit
        self._entry_size = 4 if mode is PagingMode.TWO_LEVEL else 8
        # The root: PML4, PAE PDPT (32 bytes used; a whole page keeps CR3 page-aligned), or PD.
        self._root = self._allocate_table()

    # ------------------------------------------------------------------ registers
    @property
    def cr3(self) -> int:
        """CR3 for this hierarchy: the root table's address (PCD/PWT left 0)."""
        return self._root

    def state(self, cr4_extra: int = 0) -> PagingState:
        """The CR0/CR3/CR4/EFER values that turn this paging mode on (SDM 4.1.1, 4.1.2).

        CR0 is ``PAGING_CR0`` (PE|ET|WP|PG). LONG: CR4.PAE and EFER = LME|LMA (0x500), as the CPU
        shows them once paging is on. PAE: CR4.PAE. TWO_LEVEL: CR4.PSE (harmless without 4 MiB
        pages, needed with them). ``cr4_extra`` is ORed into CR4.
        """
        if self.mode is PagingMode.LONG:
            cr4, efer = CR4_PAE, EFER_LME | EFER_LMA
        elif self.mode is PagingMode.PAE:
            cr4, efer = CR4_PAE, 0
        else:
            cr4, efer = CR4_PSE, 0
        return PagingState(cr0=PAGING_CR0, cr3=self.cr3, cr4=cr4 | cr4_extra, efer=efer)

    # ------------------------------------------------------------------ building
    def map(
        self,
        va: int,
        pa: int,
        size: int,
        *,
        page_size: int = PAGE_SIZE,
        writable: bool = True,
        user: bool = False,
    ) -> None:
        """Map ``[va, va+size)`` to ``[pa, pa+size)`` with pages of ``page_size`` bytes.

        The leaf entries get P, R/W if ``writable``, U/S if ``user`` (and PS for large pages);
        the tables above them get P|R/W|U/S (only P in a PAE PDPTE), so the leaves decide.
        """
        self._check_mapping(va, pa, size, page_size)
        leaf_level = _LEAF_LEVEL[page_size]
        flags = PTE_P | (PTE_RW if writable else 0) | (PTE_US if user else 0)
        if leaf_level > 1:
            flags |= PTE_PS
        for offset in range(0, size, page_size):
            entry_pa = self._entry_for(va + offset, leaf_level, create=True)
            if self._read_entry(entry_pa) & PTE_P:
                raise ConfigError(f"guest-virtual {va + offset:#x} is already mapped")
            self._write_entry(entry_pa, self._leaf_entry(pa + offset, page_size) | flags)

    def entry_address(self, va: int, level: int) -> int:
        """Guest-physical address of the entry at ``level`` (4 = PML4 ... 1 = PT) that the walk
        of ``va`` reads; lets tests tamper with one entry."""
        if level not in _SHIFTS[self.mode]:
            raise ConfigError(f"mode {self.mode.value} has no paging level {level}")
        return self._entry_for(va, level, create=False)

    # ------------------------------------------------------------------ internals
    def _check_mapping(self, va: int, pa: int, size: int, page_size: int) -> None:
        if page_size not in PAGE_SIZES[self.mode]:
            raise ConfigError(f"mode {self.mode.value} has no {page_size:#x}-byte pages")
        for name, value in (("virtual", va), ("physical", pa), ("size", size)):
            if value < 0 or value % page_size:
                raise ConfigError(f"{name} {value:#x} is not a multiple of {page_size:#x}")
        if size == 0:
            raise ConfigError("empty mapping")
        if self.mode is PagingMode.LONG:
            # SDM 3.3.7.1: the whole range must sit in one canonical half.
            last = va + size - 1
            lower_half = last < 1 << 47
            upper_half = va >= 0xFFFF_8000_0000_0000 and last <= 0xFFFF_FFFF_FFFF_FFFF
            if not (lower_half or upper_half):
                raise ConfigError(f"[{va:#x}, {va + size:#x}) is not canonical")
        elif va + size > 1 << 32:
            raise ConfigError(f"[{va:#x}, {va + size:#x}) exceeds the 4 GiB linear space")
        phys_limit = _PSE36_LIMIT if page_size == 4 * MIB else _PHYS_LIMIT[self._entry_size]
        if pa + size > phys_limit:
            raise ConfigError(f"physical end {pa + size:#x} exceeds {phys_limit:#x}")

    def _leaf_entry(self, pa: int, page_size: int) -> int:
        if page_size == 4 * MIB:
            # PSE-36 (SDM 4.3, table 4-4): PA bits 39:32 go to entry bits 20:13.
            return (pa & 0xFFC0_0000) | ((pa >> 32) << 13)
        return pa

    def _entry_for(self, va: int, level: int, *, create: bool) -> int:
        """Walk from the root down to ``level``, creating missing tables if ``create``."""
        shifts = _SHIFTS[self.mode]
        index_mask = 0x3FF if self.mode is PagingMode.TWO_LEVEL else 0x1FF
        table = self._root
        current = _TOP_LEVEL[self.mode]
        while True:
            mask = 0x3 if self.mode is PagingMode.PAE and current == 3 else index_mask
            entry_pa = table + ((va >> shifts[current]) & mask) * self._entry_size
            if current == level:
                return entry_pa
            entry = self._read_entry(entry_pa)
            if not entry & PTE_P:
                if not create:
                    raise ConfigError(f"guest-virtual {va:#x} has no level-{current - 1} table")
                table = self._allocate_table()
                # A PAE PDPTE has no R/W or U/S bit: those positions are reserved.
                pae_pdpte = self.mode is PagingMode.PAE and current == 3
                self._write_entry(entry_pa, table | PTE_P | (0 if pae_pdpte else PTE_RW | PTE_US))
            elif entry & PTE_PS and current > 1:
                raise ConfigError(f"guest-virtual {va:#x} lies in a large page at level {current}")
            else:
                table = entry & (ADDRESS_MASK_32 if self._entry_size == 4 else ADDRESS_MASK_64)
            current -= 1

    def _allocate_table(self) -> int:
        if self._next_free >= self._limit:
            raise ConfigError(f"page-table area ends at {self._limit:#x}: out of table pages")
        table = self._next_free
        self._next_free += PAGE_SIZE
        self._mem.fill(table, PAGE_SIZE)
        return table

    def _read_entry(self, entry_pa: int) -> int:
        if self._entry_size == 4:
            return self._mem.read_u32(entry_pa)
        return self._mem.read_u64(entry_pa)

    def _write_entry(self, entry_pa: int, value: int) -> None:
        if self._entry_size == 4:
            self._mem.write_u32(entry_pa, value)
        else:
            self._mem.write_u64(entry_pa, value)


def identity_map(
    mem: GuestMemory,
    mode: PagingMode,
    ram_size: int,
    base: int = PAGE_TABLES_ADDR,
    limit: int = PAGE_TABLES_END,
) -> PagingState:
    """Identity-map ``[0, ram_size)`` (virtual = physical) and return the registers that turn
    paging on. Uses the largest page the loader relies on (2 MiB for LONG and PAE, 4 MiB for
    TWO_LEVEL) and 4 KiB pages for a tail that is not a whole large page, so exactly RAM is
    mapped."""
    if mode is PagingMode.NONE:
        raise ConfigError("identity_map needs a paging mode")
    if ram_size <= 0 or ram_size % PAGE_SIZE:
        raise ConfigError(f"RAM size {ram_size:#x} is not a positive multiple of 4 KiB")
    builder = PageTableBuilder(mem, mode, base, limit)
    large = 4 * MIB if mode is PagingMode.TWO_LEVEL else 2 * MIB
    bulk = ram_size - ram_size % large
    if bulk:
        builder.map(0, 0, bulk, page_size=large)
    if ram_size > bulk:
        builder.map(bulk, bulk, ram_size - bulk)
    return builder.state()
