"""i386 thread-local storage (hv_emu/linux/tls.py): struct user_desc, the descriptors Linux's
fill_ldt builds, the three GDT slots, and a 32-bit program that asks for a slot and loads %gs
with it as glibc does."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import GuestFault
from hv_emu.linux.files import SyscallError
from hv_emu.linux.numbers import GDT_ENTRY_TLS_MAX, GDT_ENTRY_TLS_MIN, Errno
from hv_emu.linux.tls import USER_DESC, TlsSlots, UserDesc, selector
from hv_emu.memory.guest import GuestMemory
from tests.rigs.linux import run_program, sys

#: What glibc's TLS_INIT_TP passes: entry -1, its TCB, 4 GiB in pages, 32-bit, useable (0x51).
GLIBC_FLAGS = 0x51


def test_glibc_s_request_becomes_a_dpl3_accessed_32_bit_data_descriptor() -> None:
    info = UserDesc.from_bytes(USER_DESC.pack(0xFFFFFFFF, 0x12345678, 0xFFFFF, GLIBC_FLAGS))
    assert info.seg_32bit and info.limit_in_pages and info.useable and info.acceptable
    assert info.descriptor() == 0x12DF_F334_5678_FFFF  # P, DPL 3, S, RW + A; G, D, AVL
    back = UserDesc.from_descriptor(6, info.descriptor())
    assert back.to_bytes() == USER_DESC.pack(6, 0x12345678, 0xFFFFF, GLIBC_FLAGS)


@pytest.mark.parametrize("flags, acceptable", [
    (0x50, False),   # 16-bit: refused (espfix would be needed)
    (0x55, False),   # contents 2: a code segment
    (0x71, False),   # not present
    (0x51, True), (0x53, True),  # expand-down data is still data
])  # fmt: skip
def test_only_present_32_bit_data_segments_are_accepted(flags: int, acceptable: bool) -> None:
    assert UserDesc.from_bytes(USER_DESC.pack(6, 0x1000, 0xFFFFF, flags)).acceptable is acceptable


@pytest.mark.parametrize("flags", [0x28, 0x00])  # LDT_empty (read_exec_only, not present), zero
def test_an_empty_description_clears_the_slot(flags: int) -> None:
    info = UserDesc.from_bytes(USER_DESC.pack(7, 0, 0, flags))
    assert info.clears and info.acceptable and info.descriptor() == 0


def test_slots_are_handed_out_in_order_written_to_the_gdt_and_read_back() -> None:
    mem = GuestMemory(1 << 20)
    slots = TlsSlots(mem, 0x800)
    glibc = UserDesc(0xFFFFFFFF, 0x5000, 0xFFFFF, seg_32bit=True, limit_in_pages=True,
                     useable=True)  # fmt: skip
    for expected in range(GDT_ENTRY_TLS_MIN, GDT_ENTRY_TLS_MAX + 1):
        entry = slots.choose(glibc)
        assert entry == expected and slots.install(entry, glibc) == 0x5000
        assert struct.unpack("<Q", mem.read(0x800 + 8 * entry, 8))[0] == glibc.descriptor()
    with pytest.raises(SyscallError) as full:
        slots.choose(glibc)
    assert full.value.errno is Errno.ESRCH
    for bad in (5, 9, 12):  # outside 6-8 (12 is an x86-64 kernel's first slot)
        with pytest.raises(SyscallError) as refused:
            slots.choose(UserDesc(bad, 0, 0xFFFFF, seg_32bit=True))
        assert refused.value.errno is Errno.EINVAL
    # Clearing slot 7 frees it for the next -1, and it reads back as LDT_empty.
    slots.install(7, UserDesc(7, 0, 0))
    assert slots.get(7) == UserDesc(7, 0, 0, read_exec_only=True, seg_not_present=True)
    assert slots.choose(glibc) == 7 and selector(7) == 0x3B


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=24))
def test_user_desc_parsing_raises_only_guest_faults(data: bytes) -> None:
    try:
        info = UserDesc.from_bytes(data)
    except GuestFault:
        assert len(data) != USER_DESC.size
        return
    slots = TlsSlots(GuestMemory(1 << 16), 0x800)
    try:
        entry = slots.choose(info)
    except SyscallError as refused:  # a GuestFault carrying the errno
        assert refused.errno in (Errno.EINVAL, Errno.ESRCH)
        return
    slots.install(entry, info)
    # What get_thread_area reports describes the same descriptor again.
    assert slots.get(entry).descriptor() == info.descriptor()


def _user_desc(at: str, entry: int, base: str, flags: int) -> str:
    return (f"mov dword ptr [{at}], {entry}\n mov [{at} + 4], {base}\n"
            f"mov dword ptr [{at} + 8], 0xfffff\n"
            f"mov dword ptr [{at} + 12], {flags}\n")  # fmt: skip


def test_a_32_bit_program_gets_a_slot_loads_gs_and_reads_its_tls_through_it() -> None:
    store = "mov ebp, [esp + 4096]\n mov [ebp], eax\n add ebp, 4\n mov [esp + 4096], ebp\n"
    body = (
        # The "TCB" at esp+2048: its first word is 0x1234, its second 0x5678.
        "mov dword ptr [esp + 2048], 0x1234\n mov dword ptr [esp + 2052], 0x5678\n"
        "lea edx, [esp + 2048]\n" + _user_desc("esp + 1024", -1, "edx", GLIBC_FLAGS)
        + sys(32, 243, "[esp + 1024]")              # set_thread_area = 0
        + "mov eax, [esp + 1024]\n" + store          # the entry written back: 6
        + "mov eax, [esp + 1024]\n shl eax, 3\n or eax, 3\n mov gs, ax\n"
        + "mov eax, gs:[0]\n" + store                # 0x1234 through GS
        + "mov dword ptr [esp + 1536], 6\n"
        + sys(32, 244, "[esp + 1536]")               # get_thread_area(6) = 0
        + "mov eax, [esp + 1540]\n sub eax, edx\n" + store  # its base - the TCB = 0
        # Moving slot 6 while GS holds 0x33 moves GS with it (Linux reloads GS).
        + "lea edx, [esp + 2052]\n" + _user_desc("esp + 1024", 6, "edx", GLIBC_FLAGS)
        + sys(32, 243, "[esp + 1024]")               # set_thread_area(6) = 0
        + "mov eax, gs:[0]\n" + store                # now 0x5678
        + _user_desc("esp + 1024", -1, "edx", 0x50)
        + sys(32, 243, "[esp + 1024]")               # a 16-bit segment: -EINVAL
    )
    run = run_program(body, bits=32, calls=8)
    assert run.results == [0, 6, 0x1234, 0, 0, 0, 0x5678, -int(Errno.EINVAL)]
    assert run.machine.vcpu.selectors()["gs"] == 0x33
