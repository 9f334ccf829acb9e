"""The ELF parser (hv_emu/loaders/elf_file.py): real executables parse as readelf reads them,
broken or hostile files are refused with an ElfError naming the field, and nothing else ever
escapes."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.layout import LINUX_IMAGE_BASE
from hv_emu.loaders.elf_file import ElfError, SegmentFlags, SegmentType, is_elf, parse_elf


def tiny(bits: int = 64, bss: int = 0) -> bytes:
    return write_executable(assemble("nop\n hlt", mode=bits, address=code_address(bits)),
                            bits=bits, bss=bss)  # fmt: skip


@pytest.mark.parametrize("bits", [32, 64])
def test_the_writer_output_parses_back(bits: int) -> None:
    image = tiny(bits, bss=0x3000)
    elf = parse_elf(image)
    assert is_elf(image) and elf.bits == bits and elf.entry == code_address(bits)
    (load,) = elf.loads
    assert load.vaddr == LINUX_IMAGE_BASE[bits] and load.filesz == len(image) and load.data == image
    assert load.memsz == len(image) + 0x3000
    assert load.flags == SegmentFlags.R | SegmentFlags.X
    assert [s.type for s in elf.segments] == [SegmentType.GNU_STACK, SegmentType.LOAD]
    # the headers are inside the segment
    assert elf.phdr_address() == LINUX_IMAGE_BASE[bits] + elf.phoff


def _readelf_loads(path: Path) -> list[tuple[int, int, int, int]]:
    out = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("LOAD")]
    return [(int(r[1], 16), int(r[2], 16), int(r[4], 16), int(r[5], 16)) for r in rows]


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("readelf") is None,
                    reason="needs gcc and readelf (Debian packages gcc, binutils)")
def test_a_gcc_static_program_parses_as_readelf_reads_it(tmp_path: Path) -> None:
    source = tmp_path / "p.c"
    source.write_text("int main(void) { return 0; }\n")
    program = tmp_path / "p"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(source)], check=True)
    elf = parse_elf(program.read_bytes())
    assert [(s.offset, s.vaddr, s.filesz, s.memsz) for s in elf.loads] == _readelf_loads(program)
    header = subprocess.run(["readelf", "-hW", str(program)], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert f"Entry point address:               {elf.entry:#x}" in header
    assert any(s.type == SegmentType.TLS for s in elf.segments)


def _patch(image: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(image)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


# The ELF64 header and first program header fields, by offset (gABI figures 4-3 and 5-1).
PHDR0 = 64
BROKEN = [
    ("not an ELF", lambda i: b"MZ" + i[2:], "EI_MAG"),
    ("big-endian", lambda i: _patch(i, 5, "<B", 2), "EI_DATA"),
    ("a third class", lambda i: _patch(i, 4, "<B", 3), "EI_CLASS"),
    ("a relocatable object", lambda i: _patch(i, 16, "<H", 1), "not an executable"),
    ("ARM", lambda i: _patch(i, 18, "<H", 40), "e_machine"),
    ("phentsize", lambda i: _patch(i, 54, "<H", 32), "e_phentsize"),
    ("no headers", lambda i: _patch(i, 56, "<H", 0), "e_phnum"),
    ("headers past the end", lambda i: _patch(i, 32, "<Q", len(i) - 8), "e_phoff"),
    ("filesz > memsz", lambda i: _patch(i, PHDR0 + 40, "<Q", 1), "p_memsz"),
    ("data past the end", lambda i: _patch(i, PHDR0 + 8, "<Q", 1 << 20), "p_offset"),
    ("kernel half", lambda i: _patch(i, PHDR0 + 16, "<Q", 1 << 47), "user address space"),
    ("incongruent", lambda i: _patch(i, PHDR0 + 16, "<Q", 0x400010), "congruent"),
    ("entry outside", lambda i: _patch(i, 24, "<Q", 0x10), "e_entry"),
    ("interpreter", lambda i: _patch(i, PHDR0, "<I", SegmentType.INTERP), "PT_INTERP"),
]


@pytest.mark.parametrize("name, breaks, says", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_files_are_refused_naming_the_rule(name: str, breaks, says: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ElfError) as err:
        parse_elf(breaks(tiny(64)))
    assert says in str(err.value) and str(err.value).startswith("ELF: ")


def test_overlapping_segments_are_refused() -> None:
    image = bytearray(tiny(64))
    # Turn the PT_GNU_STACK header into a second PT_LOAD over the first one.
    image[PHDR0 + 56 : PHDR0 + 112] = image[PHDR0 : PHDR0 + 56]
    with pytest.raises(ElfError, match="overlaps"):
        parse_elf(bytes(image))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_elf_errors(data: bytes) -> None:
    for image in (data, b"\x7fELF" + data, b"\x7fELF\x02\x01\x01" + data):
        with contextlib.suppress(ElfError):
            parse_elf(image)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([32, 64]), st.lists(st.tuples(st.integers(0, 0xAF), st.integers(0, 255)),
                                           min_size=1, max_size=8))  # fmt: skip
def test_mutated_headers_raise_only_elf_errors(bits: int, edits: list[tuple[int, int]]) -> None:
    image = bytearray(tiny(bits))
    for offset, value in edits:
        image[offset % len(image)] = value
    try:
        elf = parse_elf(bytes(image))
    except ElfError:
        return
    assert all(s.filesz <= s.memsz and len(s.data) == s.filesz for s in elf.loads)
