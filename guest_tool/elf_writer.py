"""A minimal ELF writer: wraps assembled code into a static x86 executable Linux can run.

Models: the last step of a linker for the simplest program there is: one ``PT_LOAD`` segment
(readable and executable) that maps the whole file, headers included, at a fixed address, and a
``PT_GNU_STACK`` header asking for a non-executable stack. The code is assembled to sit right
after the headers, so its first byte is the entry point.

Follows: the System V gABI (ELF header, program headers), the i386 and AMD64 psABI supplements
(``EM_386``/``EM_X86_64``, the conventional base addresses 0x08048000 and 0x400000, kept in
``hv_emu.layout.LINUX_IMAGE_BASE``), and what
Linux's ``binfmt_elf`` needs to run a file (``ET_EXEC``, page-congruent offsets).

Leaves out: sections, symbols, relocations, a writable data segment (programs keep their data on
the stack or ask ``mmap``), ``.bss`` (``bss`` adds zeroed memory to the one segment instead).

The user controls the code bytes (copied verbatim) and the ELF class; nothing is parsed here.
"""

from __future__ import annotations

import struct

from hv_emu.errors import ConfigError
from hv_emu.layout import LINUX_IMAGE_BASE
from hv_emu.loaders.elf_file import (
    ELF_MAGIC,
    ElfClass,
    ElfMachine,
    ElfType,
    SegmentFlags,
    SegmentType,
)

_EHDR = {32: struct.Struct("<16sHHIIIIIHHHHHH"), 64: struct.Struct("<16sHHIQQQIHHHHHH")}
_PHDR = {32: struct.Struct("<IIIIIIII"), 64: struct.Struct("<IIQQQQQQ")}
#: Bytes of the ELF header and 2 program headers, rounded up to 16 so the code starts aligned
#: (0xB0 for ELF64, 0x80 for ELF32).
HEADERS = {bits: -(-(_EHDR[bits].size + 2 * _PHDR[bits].size) // 16) * 16 for bits in (32, 64)}
_MACHINE = {32: ElfMachine.I386, 64: ElfMachine.X86_64}


def code_address(bits: int) -> int:
    """Where the code (and the entry point) is: assemble the program at this address."""
    return LINUX_IMAGE_BASE[bits] + HEADERS[bits]


def write_executable(code: bytes, *, bits: int = 64, bss: int = 0) -> bytes:
    """A static ELF executable whose entry point is ``code``'s first byte (assembled at
    ``code_address(bits)``), with ``bss`` zeroed bytes of memory after the code."""
    if bits not in LINUX_IMAGE_BASE:
        raise ConfigError(f"an ELF class is 32 or 64 bits, not {bits}")
    if not code:
        raise ConfigError("no code to wrap")
    ehdr, phdr = _EHDR[bits], _PHDR[bits]
    size = HEADERS[bits] + len(code)
    ident = ELF_MAGIC + bytes((ElfClass.ELF64 if bits == 64 else ElfClass.ELF32, 1, 1, 0))
    header = ehdr.pack(
        ident.ljust(16, b"\0"), ElfType.EXEC, _MACHINE[bits], 1, code_address(bits),
        ehdr.size, 0, 0, ehdr.size, phdr.size, 2, 0, 0, 0,
    )  # fmt: skip
    rx = SegmentFlags.R | SegmentFlags.X
    rw = SegmentFlags.R | SegmentFlags.W
    load = (SegmentType.LOAD, 0, LINUX_IMAGE_BASE[bits], size, size + bss, rx, 0x1000)
    stack = (SegmentType.GNU_STACK, 0, 0, 0, 0, rw, 16)
    headers = header
    for p_type, offset, vaddr, filesz, memsz, flags, align in (load, stack):
        if bits == 64:
            headers += phdr.pack(p_type, flags, offset, vaddr, vaddr, filesz, memsz, align)
        else:
            headers += phdr.pack(p_type, offset, vaddr, vaddr, filesz, memsz, flags, align)
    return headers.ljust(HEADERS[bits], b"\0") + code
