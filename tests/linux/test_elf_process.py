"""The ELF loader (hv_emu/loaders/elf_process.py): segments at their virtual addresses with their
permissions and zeroed .bss, a stack, heap and mmap arena, the mode from the ELF class, and
clear refusals for programs that do not fit; hostile files raise only ImageError."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.errors import ImageError, PageFault
from hv_emu.layout import LINUX_IMAGE_BASE, LINUX_STACK_TOP, MIB
from hv_emu.loaders.elf_file import ELF_MAGIC, parse_elf
from hv_emu.loaders.elf_process import load_elf
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingMode, read_virt, translate, write_virt


def two_segment_elf() -> bytes:
    """An ELF64 with a read-only+exec segment and a writable one with .bss, by hand (the
    guest-tool writer makes one segment only)."""
    code = assemble("mov eax, 60\n syscall", mode=64, address=0x401000)
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", ELF_MAGIC, 2, 1, 1, 0, 2, 62, 1, 0x401000,
                       64, 0, 0, 64, 56, 2, 0, 0, 0)  # fmt: skip
    text = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, 0x401000, 0x401000, len(code), len(code),
                       0x1000)  # fmt: skip
    # .data: 8 bytes in the file at 0x2000, 0x1ff8 bytes of .bss after them, in the page
    # right after the code's.
    data = struct.pack("<IIQQQQQQ", 1, 6, 0x2000, 0x402000, 0x402000, 8, 0x2000, 0x1000)
    image = bytearray(0x2008)
    image[: 64 + 112] = ehdr + text + data
    image[0x1000 : 0x1000 + len(code)] = code
    image[0x2000:0x2008] = b"DATADATA"
    return bytes(image)


def test_segments_land_at_their_virtual_addresses_with_their_permissions() -> None:
    mem = GuestMemory(16 * MIB)
    process = load_elf(mem, parse_elf(two_segment_elf()))
    paging = process.boot.paging
    assert paging is not None and paging.mode is PagingMode.LONG and process.boot.mode == 64
    assert read_virt(mem, paging, 0x401000, 2) == b"\xb8\x3c"  # mov eax, 60
    assert read_virt(mem, paging, 0x402000, 8) == b"DATADATA"
    assert read_virt(mem, paging, 0x402008, 0x1FF8) == bytes(0x1FF8)  # .bss is zero
    write_virt(mem, paging, 0x403FF8, b"12345678")  # the data segment is writable
    with pytest.raises(PageFault, match="read-only"):
        write_virt(mem, paging, 0x401000, b"x")  # the code is not
    with pytest.raises(PageFault):
        translate(mem, paging, 0x404000)  # nothing past the last segment's page
    # The stack, heap and arena are mapped and writable, and do not overlap.
    assert process.stack.end == LINUX_STACK_TOP[64] and process.boot.stack == process.stack.end
    for region in (process.stack, process.heap, process.mmap):
        assert region.size > 0
        write_virt(mem, paging, region.end - 8, b"\xff" * 8)
    assert process.heap.start >= 0x404000 and process.heap.end <= process.mmap.start
    assert process.mmap.end <= process.stack.start


def test_an_elf32_runs_in_32_bit_mode_with_32_bit_paging() -> None:
    code = assemble("hlt", mode=32, address=code_address(32))
    mem = GuestMemory(16 * MIB)
    process = load_elf(mem, parse_elf(write_executable(code, bits=32)))
    paging = process.boot.paging
    assert paging is not None and paging.mode is PagingMode.TWO_LEVEL and process.boot.mode == 32
    assert read_virt(mem, paging, code_address(32), 1) == b"\xf4"
    assert read_virt(mem, paging, LINUX_IMAGE_BASE[32], 4) == ELF_MAGIC
    assert process.stack.end == LINUX_STACK_TOP[32] and process.mmap.end <= process.stack.start


def test_a_program_larger_than_ram_is_refused() -> None:
    code = assemble("hlt", mode=64, address=code_address(64))
    elf = parse_elf(write_executable(code, bits=64, bss=64 * MIB))
    with pytest.raises(ImageError, match="raise --mem"):
        load_elf(GuestMemory(16 * MIB), elf)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x1FF), st.integers(0, 255)), min_size=1, max_size=6))
def test_mutated_files_raise_only_image_errors(edits: list[tuple[int, int]]) -> None:
    image = bytearray(two_segment_elf())
    for offset, value in edits:
        image[offset % 176] = value  # the ELF header and both program headers
    try:
        elf = parse_elf(bytes(image))
        load_elf(GuestMemory(4 * MIB), elf)
    except ImageError:
        pass
