"""The guest's page-table walk: guest-virtual (linear) address to guest-physical address.

Models: what the MMU of an x86 CPU does on a TLB miss, done by the hypervisor in software so that it
can follow the pointers a guest passes in hypercall registers (those are virtual addresses). The
walk reads the guest's own paging structures in guest RAM and has no side effects: it sets no
Accessed/Dirty bit, fills no TLB and touches no CR2.

Follows: Intel SDM vol. 3A ch. 4 ("Paging"): 4.1.1 (how CR0.PG, CR4.PAE and EFER.LMA select the
mode), 4.3 (32-bit paging, with 4 MiB PSE pages and PSE-36), 4.4 (PAE paging), 4.5 (4-level
paging, 2 MiB and 1 GiB pages), 4.6 (access rights, CR0.WP). Canonical addresses: 3.3.7.1.
docs/UNICORN.md: Unicorn's host side sees guest-physical addresses only, hence this walk (U7).

Checks, at every level: the present bit (P); the bits the SDM reserves and that do not depend on
the CPU's MAXPHYADDR (PS in a PML4E; bits 62:52 under PAE; bit 63 while EFER.NXE = 0; the low
address bits of a large-page entry; bit 21 of a 4 MiB PSE-36 entry); for writes with CR0.WP = 1,
R/W at every level that has one. A paging-structure entry that lies outside RAM ends the walk
with a ``PageFault``. Checked against Unicorn's own MMU (tests/memory/test_paging_unicorn.py).

Leaves out: 5-level paging (CR4.LA57: such a guest is walked as if it had 4 levels, wrongly), the
U/S bit (the hypervisor reads as supervisor), XD as a permission (data is never fetched as code),
protection keys, SMAP/SMEP, the reserved physical-address bits between MAXPHYADDR and 51 (the walk
does not know the guest CPU's MAXPHYADDR, 40 bits under Unicorn; such an address lies outside RAM
anyway), the reserved bits 2:1 and 8:5 of PAE PDPTEs (see ``_PAE_LEVELS``), PAT and caching
attributes, and the TLB (the walk is repeated every time, so a stale TLB entry of the real CPU is
not modelled).

Guest controls: everything read here (CR3 and the paging structures, which may be garbage or
loop back on themselves) and the virtual address. The walk is bounded by construction (at most
four entry reads per translation) and raises only ``PageFault`` (or ``GuestMemoryError`` when a
translated page lies outside RAM), never an unrelated Python exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from hv_emu.errors import GuestMemoryError, PageFault
from hv_emu.layout import PAGE_SIZE
from hv_emu.memory.guest import GuestMemory

# ------------------------------------------------------------------ control-register bits (SDM 2.5)
CR0_PE = 1 << 0  # protection enable
CR0_ET = 1 << 4  # extension type (hardwired to 1 on every CPU since the i486)
CR0_WP = 1 << 16  # write protect: supervisor writes honour R/W
CR0_PG = 1 << 31  # paging
CR4_PSE = 1 << 4  # page size extensions: 4 MiB pages under 32-bit paging
CR4_PAE = 1 << 5  # physical address extension: 64-bit entries
MSR_EFER = 0xC0000080  # extended feature enable register (SDM vol. 4, table 2-2)
EFER_LME = 1 << 8  # long mode enable (written by software)
EFER_LMA = 1 << 10  # long mode active (set by the CPU when CR0.PG turns on with LME)
EFER_NXE = 1 << 11  # no-execute enable: makes bit 63 of 64-bit entries the XD flag

# ------------------------------------------------------------------ paging-entry bits (SDM 4.3-4.5)
PTE_P = 1 << 0  # present
PTE_RW = 1 << 1  # writable
PTE_US = 1 << 2  # user-accessible
PTE_PS = 1 << 7  # page size: this entry maps a large page instead of pointing to a table
XD = 1 << 63  # execute-disable; reserved while EFER.NXE = 0 (SDM 4.4.2, 4.5.4)

#: Address field of a 64-bit entry (bits 51:12; MAXPHYADDR at its architectural maximum of 52).
ADDRESS_MASK_64 = 0x000F_FFFF_FFFF_F000
#: Address field of a 32-bit entry (bits 31:12).
ADDRESS_MASK_32 = 0xFFFF_F000

# ------------------------------------------------------------------ the reasons a walk stops
NOT_PRESENT = "not present"
READ_ONLY = "write to a read-only page"
RESERVED_BIT = "reserved bit set"
OUTSIDE_RAM = "paging structure outside RAM"
NON_CANONICAL = "non-canonical"

_U64_MASK = (1 << 64) - 1
_U32_MASK = (1 << 32) - 1


class PagingMode(Enum):
    """The four ways an x86 CPU turns a linear address into a physical one (SDM 4.1.1)."""

    NONE = "none"  # CR0.PG = 0: linear = physical
    TWO_LEVEL = "2level"  # 32-bit paging: PD, PT; 4 KiB pages, 4 MiB with CR4.PSE
    PAE = "pae"  # PAE paging: 4-entry PDPT, PD, PT; 4 KiB and 2 MiB pages
    LONG = "long"  # 4-level paging: PML4, PDPT, PD, PT; 4 KiB, 2 MiB and 1 GiB pages


@dataclass(frozen=True)
class PagingState:
    """The registers that decide how the CPU translates: a snapshot taken at a VM exit."""

    cr0: int
    cr3: int
    cr4: int
    efer: int

    @property
    def mode(self) -> PagingMode:
        # SDM 4.1.1: no paging without CR0.PG; then EFER.LMA picks 4-level paging (the CPU sets
        # LMA only with CR4.PAE), else CR4.PAE picks PAE paging, else 32-bit paging.
        if not self.cr0 & CR0_PG:
            return PagingMode.NONE
        if self.efer & EFER_LMA:
            return PagingMode.LONG
        if self.cr4 & CR4_PAE:
            return PagingMode.PAE
        return PagingMode.TWO_LEVEL

    @property
    def long_mode(self) -> bool:
        """EFER.LMA. Unicorn's 64-bit engine starts with it set and paging off (U2)."""
        return bool(self.efer & EFER_LMA)

    @property
    def address_mask(self) -> int:
        """Linear addresses are 64-bit in long mode and wrap at 4 GiB in 16/32-bit modes."""
        return _U64_MASK if self.long_mode else _U32_MASK

    @property
    def write_protect(self) -> bool:
        """CR0.WP: whether supervisor-mode writes (the hypervisor's) honour read-only pages."""
        return bool(self.cr0 & CR0_WP)


@dataclass(frozen=True)
class _Level:
    """One level of a paging hierarchy, as the SDM's tables 4-4..4-20 describe its entries."""

    number: int  # 4 = PML4, 3 = PDPT, 2 = PD, 1 = PT (the numbering PageFault.level uses)
    shift: int  # lowest linear-address bit of this level's index
    index_mask: int  # entries per table - 1
    entry_size: int  # 4 (32-bit paging) or 8 bytes
    address_mask: int  # where the next table (or the 4 KiB page) is in the entry
    reserved: int  # bits that must be 0 in a present entry of this level
    large_page: int  # bytes mapped by an entry with PS = 1 here; 0 if PS is no page size here
    has_rw: bool  # whether R/W of this level restricts writes (PAE PDPTEs have no R/W)


# 4-level paging (SDM 4.5, tables 4-14..4-20). PS is reserved in a PML4E; a PDPTE with PS maps
# a 1 GiB page (the PDPE1GB feature), which Unicorn honours without advertising it (U6). Bits
# 62:52 are ignored (free for software).
_LONG_LEVELS = (
    _Level(4, 39, 0x1FF, 8, ADDRESS_MASK_64, PTE_PS, 0, True),
    _Level(3, 30, 0x1FF, 8, ADDRESS_MASK_64, 0, 1 << 30, True),
    _Level(2, 21, 0x1FF, 8, ADDRESS_MASK_64, 0, 1 << 21, True),
    _Level(1, 12, 0x1FF, 8, ADDRESS_MASK_64, 0, 0, True),
)
# PAE paging (SDM 4.4, tables 4-8..4-11). Bits 62:52 are reserved at every level (unlike 4-level
# paging), bit 63 too in the PDPTEs. The four PDPTEs have no R/W, U/S or PS bit; the SDM also
# reserves their bits 2:1 and 8:5, but a real CPU checks those only when MOV CR3 loads the PDPTEs
# (#GP), and Unicorn not at all (U6): the walk accepts them, so the hypervisor reads what the
# guest's CPU reads. A PDE with PS maps a 2 MiB page.
_PAE_HIGH_RESERVED = 0x7FF0_0000_0000_0000
_PAE_LEVELS = (
    _Level(3, 30, 0x3, 8, ADDRESS_MASK_64, _PAE_HIGH_RESERVED | XD, 0, False),
    _Level(2, 21, 0x1FF, 8, ADDRESS_MASK_64, _PAE_HIGH_RESERVED, 1 << 21, True),
    _Level(1, 12, 0x1FF, 8, ADDRESS_MASK_64, _PAE_HIGH_RESERVED, 0, True),
)
# 32-bit paging (SDM 4.3, tables 4-4..4-6). A PDE's PS bit means a 4 MiB page only with CR4.PSE;
# without it PS is ignored and the PDE points to a page table like any other.
_TWO_LEVEL_PSE_LEVELS = (
    _Level(2, 22, 0x3FF, 4, ADDRESS_MASK_32, 0, 1 << 22, True),
    _Level(1, 12, 0x3FF, 4, ADDRESS_MASK_32, 0, 0, True),
)
_TWO_LEVEL_LEVELS = (
    _Level(2, 22, 0x3FF, 4, ADDRESS_MASK_32, 0, 0, True),
    _Level(1, 12, 0x3FF, 4, ADDRESS_MASK_32, 0, 0, True),
)

#: Bit 21 of a 4 MiB PDE is reserved; bits 20:13 carry physical-address bits 39:32 (PSE-36).
_PSE36_RESERVED = 1 << 21
_PSE36_HIGH_BITS = 0xFF << 13


def _levels_and_root(state: PagingState) -> tuple[tuple[_Level, ...], int]:
    """The hierarchy the CPU walks in this state, and where CR3 says its root table is."""
    mode = state.mode
    if mode is PagingMode.LONG:
        return _LONG_LEVELS, state.cr3 & ADDRESS_MASK_64
    if mode is PagingMode.PAE:
        # SDM 4.4.1: the PDPT is 32-byte aligned; CR3 bits 31:5 give its address.
        return _PAE_LEVELS, state.cr3 & 0xFFFF_FFE0
    if state.cr4 & CR4_PSE:
        return _TWO_LEVEL_PSE_LEVELS, state.cr3 & ADDRESS_MASK_32
    return _TWO_LEVEL_LEVELS, state.cr3 & ADDRESS_MASK_32


def _large_page_base(level: _Level, entry: int) -> tuple[int, int]:
    """Physical base of the large page an entry with PS = 1 maps, and the bits reserved in it."""
    if level.entry_size == 4:
        # SDM 4.3, table 4-4: a 4 MiB page; bits 31:22 and PSE-36 bits 20:13 -> PA bits 39:32.
        base = (entry & 0xFFC0_0000) | ((entry & _PSE36_HIGH_BITS) << (32 - 13))
        return base, _PSE36_RESERVED
    # Tables 4-9, 4-16, 4-18: bit 12 of a large-page entry is PAT, and the address bits from 13
    # up to the page's alignment (20:13 for 2 MiB, 29:13 for 1 GiB) are reserved.
    offset_mask = level.large_page - 1
    return entry & ADDRESS_MASK_64 & ~offset_mask, offset_mask & ~0x1FFF


def _walk(mem: GuestMemory, state: PagingState, va: int, write: bool) -> tuple[int, int]:
    """Translate ``va``: the guest-physical address and the size of the page that maps it."""
    va &= state.address_mask
    if state.long_mode and not _is_canonical(va):
        # SDM 3.3.7.1: bits 63:47 must all equal bit 47; no paging structure is consulted
        # (level 0).
        raise PageFault(va, 0, NON_CANONICAL, write)
    if state.mode is PagingMode.NONE:
        return va, PAGE_SIZE
    levels, table = _levels_and_root(state)
    # Without EFER.NXE, bit 63 of a 64-bit entry is reserved rather than the XD flag.
    xd_reserved = 0 if state.efer & EFER_NXE else XD
    read_only_level = 0
    # SDM 4.3/4.4/4.5: at each level the CPU takes the next index bits of the linear address,
    # reads that entry of the current table, stops if it is not present, and either follows it
    # to the next table or, with PS set at a level that allows it, stops at a large page.
    for level in levels:
        entry_pa = table + ((va >> level.shift) & level.index_mask) * level.entry_size
        if not mem.contains(entry_pa, level.entry_size):
            raise PageFault(va, level.number, OUTSIDE_RAM, write)
        entry = mem.read_u64(entry_pa) if level.entry_size == 8 else mem.read_u32(entry_pa)
        if not entry & PTE_P:
            raise PageFault(va, level.number, NOT_PRESENT, write)
        if entry & level.reserved or (level.entry_size == 8 and entry & xd_reserved):
            raise PageFault(va, level.number, RESERVED_BIT, write)
        if level.has_rw and not entry & PTE_RW and not read_only_level:
            read_only_level = level.number
        if level.large_page and entry & PTE_PS:
            base, reserved = _large_page_base(level, entry)
            if entry & reserved:
                raise PageFault(va, level.number, RESERVED_BIT, write)
            page_size = level.large_page
            break
        table = entry & level.address_mask
    else:
        # The last level's entry (a PTE) points to the 4 KiB page itself.
        base, page_size = table, PAGE_SIZE
    # SDM 4.6.1: a supervisor write needs R/W = 1 at every level only when CR0.WP = 1.
    if write and read_only_level and state.write_protect:
        raise PageFault(va, read_only_level, READ_ONLY, write)
    return base | (va & (page_size - 1)), page_size


def _is_canonical(va: int) -> bool:
    top = va >> 47  # bits 63:47 (17 bits): all zeros or all ones
    return top == 0 or top == 0x1FFFF


def translate(mem: GuestMemory, state: PagingState, va: int, *, write: bool = False) -> int:
    """The guest-physical address the guest's page tables give ``va`` (read or write access).

    Raises ``PageFault`` (with the level whose entry stopped the walk and why) when the guest's
    tables do not map ``va`` for this access. The returned address itself may lie outside RAM;
    the caller's access to it then fails with ``GuestMemoryError``.
    """
    return _walk(mem, state, va, write)[0]


def _physical_runs(
    mem: GuestMemory, state: PagingState, va: int, n: int, write: bool
) -> list[tuple[int, int]]:
    """The (guest-physical address, length) pieces that hold ``[va, va+n)``, all translated
    (and checked to be in RAM) before any byte moves. Physically adjacent pieces are merged,
    so an identity-mapped buffer is one run."""
    if n < 0:
        raise ValueError(f"negative length {n}")
    runs: list[tuple[int, int]] = []
    done = 0
    while done < n:
        pa, page_size = _walk(mem, state, va + done, write)
        # The walk steps by the page that mapped the address: one walk per 2 MiB page, not 512.
        length = min(page_size - (pa & (page_size - 1)), n - done)
        if runs and runs[-1][0] + runs[-1][1] == pa:
            runs[-1] = (runs[-1][0], runs[-1][1] + length)
        else:
            runs.append((pa, length))
        done += length
    for pa, length in runs:
        if not mem.contains(pa, length):
            raise GuestMemoryError(pa, length, f"translated from guest-virtual {va:#x}")
    return runs


def read_virt(mem: GuestMemory, state: PagingState, va: int, n: int) -> bytes:
    """Copy ``n`` bytes at guest-virtual ``va`` out of guest RAM, each guest byte read once.

    The buffer may cross pages whose physical frames are anywhere; every page is translated
    before the first byte is copied. ``n`` must be bounded by the caller.
    """
    runs = _physical_runs(mem, state, va, n, write=False)
    if len(runs) == 1:
        return mem.read(*runs[0])
    return b"".join(mem.read(pa, length) for pa, length in runs)


def plan_write(mem: GuestMemory, state: PagingState, va: int, n: int) -> list[tuple[int, int]]:
    """The (guest-physical address, length) runs a write of ``n`` bytes at ``va`` would store to,
    every page translated for writing and checked to be in RAM: a caller that must not fail
    half-way (or must do something first) plans, then writes the runs with ``mem.write``."""
    return _physical_runs(mem, state, va, n, write=True)


def write_virt(mem: GuestMemory, state: PagingState, va: int, data: bytes | bytearray) -> None:
    """Copy ``data`` to guest-virtual ``va``. Every page is translated for writing first, so a
    fault on the last page writes nothing at all."""
    offset = 0
    for pa, length in _physical_runs(mem, state, va, len(data), write=True):
        mem.write(pa, data[offset : offset + length])
        offset += length


def read_cstring(mem: GuestMemory, state: PagingState, va: int, max_len: int) -> bytes | None:
    """The bytes at guest-virtual ``va`` up to (not including) the first NUL within ``max_len``
    bytes; ``None`` if there is no NUL within ``max_len``.

    Reads page by page and stops at the page that holds the NUL: a string that ends just before
    an unmapped page reads fine, one that runs into it raises ``PageFault``.
    """
    if max_len < 0:
        raise ValueError(f"negative maximum length {max_len}")
    pieces: list[bytes] = []
    done = 0
    while done < max_len:
        here = (va + done) & state.address_mask
        length = min(PAGE_SIZE - (here & (PAGE_SIZE - 1)), max_len - done)
        chunk = mem.read(translate(mem, state, here), length)
        nul = chunk.find(0)
        if nul >= 0:
            pieces.append(chunk[:nul])
            return b"".join(pieces)
        pieces.append(chunk)
        done += length
    return None
