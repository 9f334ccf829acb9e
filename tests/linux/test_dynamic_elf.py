"""Loading dynamically linked and position-independent programs (hv_emu/loaders/elf_file.py,
elf_process.py, interp.py; hv_emu/linux/startup.py): PT_INTERP, the load bias, the interpreter
in the arena, and the auxiliary vector ld.so reads."""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.errors import ImageError
from hv_emu.events import EventLog
from hv_emu.layout import LINUX_DYN_BASE, LINUX_MMAP_BASE
from hv_emu.linux.files import FileTable
from hv_emu.linux.numbers import Auxv
from hv_emu.loaders.elf_file import ElfError, ElfType, SegmentType, parse_elf
from hv_emu.loaders.elf_process import load_bias, load_elf
from hv_emu.loaders.interp import load_interpreter
from hv_emu.machine import Machine, MachineConfig
from hv_emu.memory.walk import read_virt

PROGRAM = Path("/usr/bin/sha256sum")
LOADER = "/lib64/ld-linux-x86-64.so.2"
needs_debian = pytest.mark.skipif(not PROGRAM.exists() or not Path(LOADER).exists(),
                                  reason="needs Debian's coreutils and libc6")  # fmt: skip
PHDR0 = 64


def with_interp(path: bytes, *, dyn: bool = False) -> bytes:
    """A tiny static ELF64 whose PT_GNU_STACK header is turned into a PT_INTERP naming ``path``
    (appended to the file); ``dyn`` makes it ET_DYN."""
    image = bytearray(write_executable(assemble("nop\n hlt", mode=64, address=code_address(64)),
                                       bits=64))  # fmt: skip
    offset = len(image)
    image += path
    struct.pack_into("<IIQQQQQQ", image, PHDR0 + 56, SegmentType.INTERP, 4, offset, 0, 0,
                     len(path), len(path), 1)  # fmt: skip
    if dyn:
        struct.pack_into("<H", image, 16, ElfType.DYN)
    return bytes(image)


def test_pt_interp_names_the_loader() -> None:
    elf = parse_elf(with_interp(b"/lib/ld.so\0", dyn=True))
    assert elf.interp == "/lib/ld.so" and elf.position_independent


@pytest.mark.parametrize("path, says", [
    (b"/lib/ld.so", "only NUL"),          # no NUL at the end
    (b"/lib\0ld.so\0", "only NUL"),       # a NUL inside
    (b"\0", "2..4096"),                   # too short
    (b"/" * 5000 + b"\0", "2..4096"),     # longer than PATH_MAX
])  # fmt: skip
def test_a_broken_pt_interp_is_refused(path: bytes, says: str) -> None:
    with pytest.raises(ElfError, match=says.replace(".", r"\.")):
        parse_elf(with_interp(path))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(PHDR0 + 56, PHDR0 + 112), st.integers(0, 255)),
                min_size=1, max_size=6), st.binary(max_size=40))  # fmt: skip
def test_mutated_interpreter_headers_raise_only_elf_errors(edits: list[tuple[int, int]],
                                                           path: bytes) -> None:  # fmt: skip
    image = bytearray(with_interp(path + b"\0", dyn=True))
    for offset, value in edits:
        image[offset] = value
    with contextlib.suppress(ElfError):
        elf = parse_elf(bytes(image))
        assert elf.interp is None or len(elf.interp.encode("utf-8", "surrogateescape")) < 4096


def test_the_load_bias_is_linux_s_and_follows_the_largest_alignment() -> None:
    elf = parse_elf(with_interp(b"/x\0", dyn=True))
    assert load_bias(elf) == LINUX_DYN_BASE[64] - (elf.loads[0].vaddr & ~0xFFF)
    image = bytearray(with_interp(b"/x\0", dyn=True))
    struct.pack_into("<Q", image, PHDR0 + 48, 0x200000)  # the PT_LOAD's p_align: 2 MiB
    big = parse_elf(bytes(image))
    assert load_bias(big) % 0x200000 == 0 and load_bias(big) <= LINUX_DYN_BASE[64]
    static = parse_elf(with_interp(b"/x\0"))
    assert load_bias(static) == 0


def test_without_a_sysroot_or_with_a_bad_loader_nothing_loads(tmp_path: Path) -> None:
    program = parse_elf(with_interp(b"/lib/ld.so\0", dyn=True))
    with pytest.raises(ImageError, match="--sysroot"):
        load_interpreter(program, None)
    with pytest.raises(ImageError, match="is not in --sysroot"):
        load_interpreter(program, tmp_path)
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "ld.so").write_bytes(with_interp(b"/lib/ld.so\0", dyn=True))
    with pytest.raises(ImageError, match="without an interpreter of its own"):
        load_interpreter(program, tmp_path)  # a loader that needs a loader
    (tmp_path / "lib" / "ld.so").unlink()
    (tmp_path / "lib" / "ld.so").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        load_interpreter(program, tmp_path)


@needs_debian
def test_a_pie_program_and_its_loader_land_where_the_auxiliary_vector_says() -> None:
    machine = Machine(MachineConfig(timeout=10), events=EventLog())
    files = FileTable(sysroot=Path("/"))
    process = machine.load_elf(PROGRAM.read_bytes(), argv=["sha256sum"], files=files)
    image = process.image
    assert image.elf.type == ElfType.DYN and image.elf.interp == LOADER
    assert image.bias == LINUX_DYN_BASE[64] and image.interp_base == LINUX_MMAP_BASE[64]
    assert machine.boot is not None and machine.boot.paging is not None
    paging, sp = machine.boot.paging, machine.boot.stack
    n = (image.stack.end - sp) // 8
    words = struct.unpack(f"<{n}Q", read_virt(machine.mem, paging, sp, 8 * n))
    auxv = dict(zip(words[3 + 1 :: 2], words[4 + 1 :: 2], strict=False))
    assert auxv[Auxv.AT_ENTRY] == image.elf.entry + image.bias
    assert auxv[Auxv.AT_BASE] == image.interp_base != 0
    assert auxv[Auxv.AT_PHDR] == image.bias + image.elf.phdr_address()  # type: ignore[operator]
    # The CPU starts in the loader, whose ELF header sits at AT_BASE.
    interp = load_interpreter(image.elf, Path("/"))
    assert machine.boot.entry == image.interp_base + interp.entry
    assert read_virt(machine.mem, paging, image.interp_base, 4) == b"\x7fELF"
    assert read_virt(machine.mem, paging, auxv[Auxv.AT_PHDR], 4) == b"\x06\0\0\0"  # PT_PHDR
    assert image.interp_base + interp.span <= image.mmap.start
    machine.close()


@needs_debian
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_static_pie_program_runs_without_a_sysroot(tmp_path: Path) -> None:
    source, program = tmp_path / "p.c", tmp_path / "p"
    source.write_text('#include <stdio.h>\nint main(void) { puts("pie"); return 3; }\n')
    built = subprocess.run(["gcc", "-static-pie", "-O2", "-o", str(program), str(source)],
                           capture_output=True, check=False)  # fmt: skip
    if built.returncode != 0:
        pytest.skip("gcc cannot build -static-pie here (Debian: libc6-dev)")
    elf = parse_elf(program.read_bytes())
    assert elf.position_independent and elf.interp is None
    out = io.BytesIO()
    machine = Machine(MachineConfig(timeout=20), events=EventLog())
    process = machine.load_elf(program.read_bytes(), argv=["p"], files=FileTable(stdout=out))
    machine.run()
    machine.close()
    assert (out.getvalue(), process.exit_status) == (b"pie\n", 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(16, PHDR0 + 112), st.integers(0, 255)), max_size=6),
       st.lists(st.tuples(st.integers(16, PHDR0 + 112), st.integers(0, 255)), max_size=6))
def test_hostile_pie_programs_and_loaders_load_or_raise_image_errors(
    program_edits: list[tuple[int, int]], loader_edits: list[tuple[int, int]]
) -> None:
    """Mutated headers (types, entries, addresses, sizes, alignments) of an ET_DYN program and of
    its loader: each is parsed, then both are placed in one address space, or an ImageError (an
    ElfError is one) says why not; nothing else escapes, and a loaded process starts in its
    loader, which lies above the program and its heap."""
    images = []
    for edits in (program_edits, loader_edits):
        image = bytearray(with_interp(b"/ld\0", dyn=True))
        struct.pack_into("<I", image, PHDR0 + 56, SegmentType.NOTE)  # the loader names none
        for offset, value in edits:
            image[offset] = value
        images.append(bytes(image))
    machine = Machine(MachineConfig(timeout=10, mem_mib=8), events=EventLog())
    try:
        program, loader = parse_elf(images[0]), parse_elf(images[1])
        image = load_elf(machine.mem, program, loader)
    except ImageError:
        return
    finally:
        machine.close()
    assert image.boot.entry == image.interp_base + loader.entry
    assert image.bias + program.loads[-1].end <= image.heap.start <= image.interp_base
