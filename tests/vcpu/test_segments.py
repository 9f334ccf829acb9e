"""How Unicorn loads a data-segment selector in 32-bit protected mode with paging (docs/UNICORN.md
U38): the descriptor is read at GDTR.base + index * 8 as a *linear* address through the guest's
page tables, its accessed bit is written back, the privilege and presence checks fault as on
hardware, and the loaded base is what ``gs:`` accesses use and ``gs_base`` reads."""

from __future__ import annotations

import struct

import pytest
import unicorn
from unicorn import x86_const as X

from guest_tool.assemble import assemble
from hv_emu.memory.boot import BootState
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.tables import PageTableBuilder
from hv_emu.memory.walk import PagingMode
from hv_emu.vcpu.engine import Engine

CODE, TLS, GDT, GDT_PAGE = 0x100000, 0x300000, 0x800, 0xFFC00000
SEL_TLS = 6 << 3 | 3


def descriptor(base: int, access: int, limit: int = 0xFFFFF, flags: int = 0xC) -> int:
    return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 | (limit >> 16) << 48
            | flags << 52 | (base >> 24) << 56)  # fmt: skip


LOAD_GS = "mov gs, ax\n mov eax, gs:[4]\n"


def load_gs(*, access: int = 0xF2, gdtr: int = GDT_PAGE + GDT, map_gdt: bool = True,
            writable: bool = True, sel: int = SEL_TLS,
            code: str = LOAD_GS) -> tuple[Engine, list[int], int]:  # fmt: skip
    """Run ``mov ax, sel; <code>; hlt`` in a 32-bit paged guest whose GDT entry 6 has ``access``;
    return the engine, the exception vectors seen (each followed by CR2 at the time) and the
    descriptor's access byte afterwards."""
    mem = GuestMemory(8 << 20)
    entries = [0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF, 0, 0, 0, descriptor(TLS, access), 0, 0]
    mem.write(GDT, struct.pack("<9Q", *entries))
    mem.write(TLS, struct.pack("<II", 0xDEADBEEF, 0x1234))
    tables = PageTableBuilder(mem, PagingMode.TWO_LEVEL, 0x10000, 0x20000)
    tables.map(CODE, CODE, 0x300000, writable=True, user=True)  # code, stack, TLS block
    if map_gdt:
        tables.map(GDT_PAGE, 0, 0x1000, writable=writable, user=False)
    mem.write(CODE, assemble(f"mov ax, {sel}\n{code} hlt\n", mode=32, address=CODE))
    engine = Engine(mem)
    engine.reset(BootState(mode=32, entry=CODE, stack=0x200000, paging=tables.state(),
                           gdt_base=GDT, gdt_limit=71, gdt_linear=gdtr))  # fmt: skip
    vectors: list[int] = []

    def on_interrupt(uc: unicorn.Uc, vector: int, _data: object) -> None:
        vectors.extend((vector, uc.reg_read(X.UC_X86_REG_CR2)))
        uc.emu_stop()

    engine.uc.hook_add(unicorn.UC_HOOK_INTR, on_interrupt)
    engine.uc.emu_start(CODE, 2**64 - 1)
    return engine, vectors, mem.read(GDT + 6 * 8 + 5, 1)[0]


def test_a_selector_load_reads_the_gdt_through_paging_and_sets_the_accessed_bit() -> None:
    engine, vectors, access = load_gs()
    assert vectors == [] and engine.reg("rax") == 0x1234
    assert engine.selectors()["gs"] == SEL_TLS and engine.reg("gs_base") == TLS
    assert access == 0xF3  # the CPU wrote the accessed bit into the guest's GDT


def test_a_gdt_the_page_tables_do_not_map_is_a_page_fault_at_its_linear_address() -> None:
    # The loader's physical GDT address (0x800), used as GDTR base, is not mapped: #PF.
    engine, vectors, _ = load_gs(gdtr=GDT, map_gdt=False)
    assert vectors == [14, GDT + 6 * 8] and engine.selectors()["gs"] == 0


@pytest.mark.parametrize("access, vector", [(0xF3, None), (0xF2, 14)])
def test_a_read_only_gdt_works_only_when_the_accessed_bit_is_already_set(
    access: int, vector: int | None
) -> None:
    _, vectors, _ = load_gs(access=access, writable=False)
    # The fault is the write of the descriptor's high word (the accessed bit).
    assert vectors == ([] if vector is None else [vector, GDT_PAGE + GDT + 6 * 8 + 4])


@pytest.mark.parametrize("access, sel, vector", [
    (0x92, SEL_TLS, 13),   # DPL 0, RPL 3: #GP (set_thread_area's descriptors are DPL 3)
    (0x72, SEL_TLS, 11),   # not present: #NP
    (0xF2, 9 << 3 | 3, 13),  # beyond the GDT limit: #GP
])  # fmt: skip
def test_privilege_presence_and_limit_checks_fault_as_on_hardware(access: int, sel: int,
                                                                  vector: int) -> None:  # fmt: skip
    engine, vectors, _ = load_gs(access=access, sel=sel)
    assert vectors[::2] == [vector] and engine.selectors()["gs"] == 0


def test_a_host_write_of_fs_or_gs_loads_the_descriptor_but_one_of_ds_does_not() -> None:
    # In the 64-bit engine running 32-bit protected-mode code, writing FS or GS loads the
    # descriptor from the guest's GDT (with its checks), while DS, ES, SS, CS change only the
    # visible selector (U2).
    engine, vectors, _ = load_gs(code="")
    assert vectors == []
    engine.uc.reg_write(X.UC_X86_REG_GS, SEL_TLS)
    assert engine.selectors()["gs"] == SEL_TLS and engine.reg("gs_base") == TLS
    engine.uc.reg_write(X.UC_X86_REG_DS, SEL_TLS)
    assert engine.uc.reg_read(X.UC_X86_REG_DS) == SEL_TLS
    # DS still has its flat base 0: linear TLS + 4 is read, not TLS + TLS + 4 (unmapped).
    code = assemble(f"mov eax, ds:[{TLS + 4}]\n hlt\n", mode=32, address=CODE + 0x1000)
    engine.mem.write(CODE + 0x1000, code)
    engine.uc.ctl_flush_tb()
    engine.uc.emu_start(CODE + 0x1000, 2**64 - 1)
    assert engine.reg("rax") == 0x1234
    # A descriptor the checks refuse (DPL 0 for RPL 3) fails the write itself.
    engine, _, _ = load_gs(code="", access=0x92)
    with pytest.raises(unicorn.UcError) as refused:
        engine.uc.reg_write(X.UC_X86_REG_GS, SEL_TLS)
    assert refused.value.errno == unicorn.UC_ERR_EXCEPTION


def test_a_base_write_moves_gs_for_32_bit_code() -> None:
    engine, _, _ = load_gs()
    engine.set_reg("gs_base", TLS - 4)  # set_thread_area's refresh of a loaded selector
    code = assemble("mov eax, gs:[8]\n hlt\n", mode=32, address=CODE + 0x1000)
    engine.mem.write(CODE + 0x1000, code)
    engine.uc.ctl_flush_tb()
    engine.uc.emu_start(CODE + 0x1000, 2**64 - 1)
    assert engine.reg("rax") == 0x1234
