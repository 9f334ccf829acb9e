"""Error codes computed again by the hypervisor: the #PF code from the page walk and the
instruction, the selector of a faulting ``mov Sreg`` - and never an exception for hostile bytes
or tables (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState
from hv_emu.vcpu.error_codes import (
    PF_FETCH,
    PF_PRESENT,
    PF_USER,
    PF_WRITE,
    page_fault_code,
    selector_fault_code,
    writes_memory,
)

PAGING_32 = PagingState(cr0=0x80000011, cr3=0x1000, cr4=0, efer=0)


def tables(mem: GuestMemory) -> None:
    """32-bit paging: page 0x400000 present read-only (PDE at 0x1000 -> PT at 0x2000)."""
    mem.write_u32(0x1000 + 4, 0x2000 | 0x7)  # PDE 1 (0x400000-0x7FFFFF): present, RW, user
    mem.write_u32(0x2000, 0x5000 | 0x1)  # PTE 0: present, read-only, supervisor


def test_page_fault_codes_from_the_walk_and_the_instruction() -> None:
    mem = GuestMemory(1 << 21)
    tables(mem)
    load = bytes.fromhex("a100004000")  # mov eax, [0x400000]
    store = bytes.fromhex("a300004000")  # mov [0x400000], eax
    code = lambda cr2, insn, cpl=0: page_fault_code(  # noqa: E731
        mem, PAGING_32, cr2, cpl=cpl, pc=0x100000, code=insn, mode=32)
    assert code(0x800000, load) == 0  # not present, read, supervisor
    assert code(0x800000, store) == PF_WRITE
    assert code(0x400000, store) == PF_PRESENT | PF_WRITE  # read-only page
    assert code(0x400000, load, cpl=3) == PF_PRESENT | PF_USER  # a user read, supervisor page
    assert code(0x100002, b"") == 0  # the fetch itself: no I/D without PAE + NXE
    nx = PagingState(cr0=0x80000011, cr3=0x1000, cr4=0x20, efer=0x800)
    assert page_fault_code(mem, nx, 0x100000, cpl=0, pc=0x100000, code=b"", mode=32) & PF_FETCH


def test_push_call_and_string_stores_count_as_writes() -> None:
    assert writes_memory(b"\x50", 32)  # push eax
    assert writes_memory(b"\xe8\x00\x00\x00\x00", 32)  # call
    assert writes_memory(b"\xab", 32)  # stosd
    assert not writes_memory(b"\x58", 32)  # pop eax: a read of the stack
    assert not writes_memory(b"", 64)


def test_the_selector_of_a_faulting_mov_sreg() -> None:
    assert selector_fault_code(b"\x8e\xd8", 32, {"rax": 0x1237}) == 0x1234  # mov ds, ax
    assert selector_fault_code(b"\x8e\xdb", 32, {"rbx": 0x2B}) == 0x28  # mov ds, bx
    assert selector_fault_code(b"\x0f\x0b", 32, {"rax": 0x1234}) == 0  # ud2: not a load


@settings(max_examples=300, deadline=None)
@given(code=st.binary(max_size=15), cr2=st.integers(0, 2**64 - 1),
       cr3=st.integers(0, (1 << 21) - 1), cr4=st.sampled_from([0, 0x10, 0x20, 0x30]),
       efer=st.sampled_from([0, 0x500, 0xD00]), mode=st.sampled_from([16, 32, 64]),
       junk=st.binary(min_size=64, max_size=64), cpl=st.integers(0, 3))  # fmt: skip
def test_hostile_tables_and_bytes_give_a_code_never_an_exception(
    code: bytes, cr2: int, cr3: int, cr4: int, efer: int, mode: int, junk: bytes, cpl: int,
) -> None:
    mem = GuestMemory(1 << 21)
    mem.write(cr3 & ~0xFFF, junk * 64)
    paging = PagingState(cr0=0x80000011, cr3=cr3, cr4=cr4, efer=efer)
    value = page_fault_code(mem, paging, cr2, cpl=cpl, pc=0x1000, code=code, mode=mode)
    assert 0 <= value < 32
    assert 0 <= selector_fault_code(code, mode, {"rax": cr2 & 0xFFFF}) <= 0xFFFC
