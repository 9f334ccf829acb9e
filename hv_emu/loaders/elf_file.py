"""ELF executables: the header and program headers of an x86 program, parsed strictly.

Models: what an operating system's ``execve`` reads from an ELF file before it maps anything: the
identification bytes (class, byte order), the file header (type, machine, entry point, where the
program headers are) and the program headers, of which the loader needs the ``PT_LOAD`` segments
(file bytes to copy, memory size, permissions) and the ``PT_INTERP`` that names a dynamically
linked program's interpreter (its dynamic loader, ``ld.so``). Position-independent files
(``ET_DYN``: PIE programs, the interpreter itself) are parsed alike; their addresses are relative
to the load bias ``elf_process.py`` picks. Section headers are not read: an executable runs
without them.

Follows: the System V ABI gABI ch. 4-5 (ELF header, program header, segment types and flags), its
i386 and AMD64 supplements (``EM_386``, ``EM_X86_64``, little-endian), and the checks Linux's
``fs/binfmt_elf.c`` makes before loading (``e_phentsize``, the page congruence of ``p_offset`` and
``p_vaddr``, ``p_filesz <= p_memsz``, a ``PT_INTERP`` of 2..``PATH_MAX`` bytes ending in its
only NUL). Shaped like pyelftools: one concept, plain dataclasses.

Leaves out: big-endian files, ``PN_XNUM`` extended program-header counts, sections, symbols and
relocations (the interpreter relocates the program, as on Linux).

The user controls every byte of the file, and the file may be hostile: every offset, size and
count is checked against the file and against overflow before it is used, the number of program
headers is bounded before anything is allocated, and any violation is an ``ElfError`` that names
the field, its value and the rule it breaks.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from hv_emu.errors import ImageError

#: The four bytes every ELF file starts with (gABI, ``e_ident[EI_MAG0..EI_MAG3]``).
ELF_MAGIC = b"\x7fELF"
#: The size of the page the segments are laid out for (both ABIs' ``p_align`` minimum).
ELF_PAGE = 0x1000
#: Most program headers accepted (Linux allows 64 KiB of them; real static programs have ~12).
MAX_PHNUM = 128
#: Longest ``PT_INTERP`` accepted, with its NUL (Linux refuses more than ``PATH_MAX``).
MAX_INTERP = 4096

_IDENT = struct.Struct("<4sBBBBB7x")  # magic, class, data, version, OS ABI, ABI version

# The file header after e_ident, and one program header, for each class (gABI figures 4-3, 5-1).
_EHDR = {
    32: struct.Struct("<HHIIIIIHHHHHH"),
    64: struct.Struct("<HHIQQQIHHHHHH"),
}
_PHDR_32 = struct.Struct("<IIIIIIII")  # type, offset, vaddr, paddr, filesz, memsz, flags, align
_PHDR_64 = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
_PHDR = {32: _PHDR_32, 64: _PHDR_64}
_EHDR_SIZE = {32: 52, 64: 64}

#: How far up the address space a segment may reach: 4 GiB for i386; the lower canonical half
#: for x86-64 (user space ends at 2^47 with 4-level paging).
ADDRESS_LIMIT = {32: 1 << 32, 64: 1 << 47}


class ElfClass(IntEnum):
    """``e_ident[EI_CLASS]``: the size of addresses, hence the CPU mode the program runs in."""

    ELF32 = 1
    ELF64 = 2


class ElfType(IntEnum):
    """``e_type``: executables (``ET_EXEC``) and position-independent ones (``ET_DYN``) load."""

    REL = 1
    EXEC = 2
    DYN = 3
    CORE = 4


class ElfMachine(IntEnum):
    """``e_machine``: the two x86 flavours, one per class."""

    I386 = 3
    X86_64 = 62


class SegmentType(IntEnum):
    """``p_type`` values this loader acts on (others are kept as plain numbers)."""

    NULL = 0
    LOAD = 1
    DYNAMIC = 2
    INTERP = 3
    NOTE = 4
    PHDR = 6
    TLS = 7
    GNU_STACK = 0x6474E551


class SegmentFlags(IntFlag):
    """``p_flags``: what the program may do with a segment's memory."""

    X = 1
    W = 2
    R = 4


#: ``e_machine`` each class must carry.
_MACHINE_OF = {32: ElfMachine.I386, 64: ElfMachine.X86_64}


class ElfError(ImageError):
    """An ELF file that cannot be loaded: ``field`` (e.g. ``e_phoff``, ``phdr[3].p_filesz``) has
    ``value``, which breaks ``rule``."""

    def __init__(self, field: str, value: int, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"ELF: {field} = {value:#x}: {rule}")


@dataclass(frozen=True)
class Segment:
    """One program header. ``data`` is the ``p_filesz`` bytes of the file it names (only for
    ``PT_LOAD``; empty otherwise); the other ``p_memsz - p_filesz`` bytes are zeros (``.bss``)."""

    type: int
    flags: SegmentFlags
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int
    data: bytes = b""

    @property
    def end(self) -> int:
        """First virtual address past the segment's memory."""
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class ElfImage:
    """An x86 executable: its class (32 or 64 bits), entry point and program headers.

    ``phoff``, ``phentsize`` and ``phnum`` are kept because a C library finds its own program
    headers (its TLS template, ``PT_TLS``) through the auxiliary vector's ``AT_PHDR``. ``type``
    is ``ET_EXEC`` (addresses as they are) or ``ET_DYN`` (addresses relative to a load bias);
    ``interp`` is the interpreter's path of a dynamically linked program (``PT_INTERP``).
    """

    bits: int
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    segments: tuple[Segment, ...]
    type: int = ElfType.EXEC
    interp: str | None = None

    @property
    def position_independent(self) -> bool:
        """``ET_DYN``: every address is relative to where the loader puts the file."""
        return self.type == ElfType.DYN

    @property
    def max_align(self) -> int:
        """The largest ``p_align`` of the ``PT_LOAD`` segments, at least a page (the alignment
        Linux gives an ``ET_DYN`` file's load bias)."""
        return max([ELF_PAGE, *(s.align for s in self.loads)])

    @property
    def span(self) -> int:
        """Bytes from the first ``PT_LOAD``'s page to the end of the last one's memory."""
        return page_up(max(s.end for s in self.loads)) - page_down(self.loads[0].vaddr)

    @property
    def loads(self) -> tuple[Segment, ...]:
        """The ``PT_LOAD`` segments in ascending ``p_vaddr`` order."""
        return tuple(s for s in self.segments if s.type == SegmentType.LOAD)

    def phdr_address(self) -> int | None:
        """Where the program headers are in the program's memory: the address of ``PT_PHDR``, or
        else of the file offset ``phoff`` inside a ``PT_LOAD`` that maps it (as Linux computes
        ``AT_PHDR``); ``None`` when no segment maps them."""
        size = self.phentsize * self.phnum
        for seg in self.segments:
            if seg.type == SegmentType.PHDR:
                return seg.vaddr
        for seg in self.loads:
            if seg.offset <= self.phoff and self.phoff + size <= seg.offset + seg.filesz:
                return seg.vaddr + (self.phoff - seg.offset)
        return None


def is_elf(image: bytes) -> bool:
    """Whether ``image`` starts with the ELF magic (how ``hv-emu run`` tells ELF from flat)."""
    return image[:4] == ELF_MAGIC


def parse_elf(image: bytes) -> ElfImage:
    """Parse and check a static x86 executable; raise ``ElfError`` on the first broken rule."""
    if len(image) < _IDENT.size:
        raise ElfError("file size", len(image), f"shorter than the {_IDENT.size}-byte e_ident")
    magic, klass, data, version, _osabi, _abiversion = _IDENT.unpack_from(image, 0)
    if magic != ELF_MAGIC:
        raise ElfError("e_ident[EI_MAG]", int.from_bytes(magic, "big"), "not the ELF magic")
    if klass not in (ElfClass.ELF32, ElfClass.ELF64):
        raise ElfError("e_ident[EI_CLASS]", klass, "neither ELFCLASS32 (1) nor ELFCLASS64 (2)")
    if data != 1:
        raise ElfError("e_ident[EI_DATA]", data, "only little-endian (ELFDATA2LSB, 1) is x86")
    if version != 1:
        raise ElfError("e_ident[EI_VERSION]", version, "must be EV_CURRENT (1)")
    bits = 32 if klass == ElfClass.ELF32 else 64
    if len(image) < _EHDR_SIZE[bits]:
        raise ElfError("file size", len(image), f"shorter than the ELF{bits} header")
    header = _EHDR[bits].unpack_from(image, _IDENT.size)
    e_type, e_machine, e_version, e_entry, e_phoff = header[:5]
    e_phentsize, e_phnum = header[8], header[9]

    if e_type not in (ElfType.EXEC, ElfType.DYN):
        raise ElfError("e_type", e_type, "not an executable (ET_EXEC, 2, or ET_DYN, 3)")
    if e_machine != _MACHINE_OF[bits]:
        raise ElfError("e_machine", e_machine,
                       f"ELF{bits} must be {_MACHINE_OF[bits].name} ({int(_MACHINE_OF[bits])})")
    if e_version != 1:
        raise ElfError("e_version", e_version, "must be EV_CURRENT (1)")
    if e_phentsize != _PHDR[bits].size:
        raise ElfError("e_phentsize", e_phentsize, f"must be {_PHDR[bits].size} in ELF{bits}")
    if not 1 <= e_phnum <= MAX_PHNUM:
        raise ElfError("e_phnum", e_phnum, f"must be 1..{MAX_PHNUM}")
    if e_phoff + e_phnum * e_phentsize > len(image):
        raise ElfError("e_phoff", e_phoff,
                       f"{e_phnum} program headers there run past the end of the file")  # fmt: skip

    segments = tuple(
        _segment(image, bits, i, e_phoff + i * e_phentsize) for i in range(e_phnum)
    )
    interp = _interpreter(image, segments)
    loads = sorted((s for s in segments if s.type == SegmentType.LOAD), key=lambda s: s.vaddr)
    if not loads:
        raise ElfError("e_phnum", e_phnum, "no PT_LOAD segment: nothing to run")
    for before, after in itertools.pairwise(loads):
        if after.vaddr < before.end:
            raise ElfError("p_vaddr", after.vaddr,
                           f"PT_LOAD overlaps the one at {before.vaddr:#x}-{before.end:#x}")
    if not any(s.vaddr <= e_entry < s.end and s.flags & SegmentFlags.X for s in loads):
        raise ElfError("e_entry", e_entry, "not inside an executable PT_LOAD segment")
    span = page_up(loads[-1].end) - page_down(loads[0].vaddr)
    if span > ADDRESS_LIMIT[bits] // 2:
        raise ElfError("p_memsz", span, "the PT_LOAD segments span more than half the "
                       f"{bits}-bit user address space")  # fmt: skip
    ordered = tuple(s for s in segments if s.type != SegmentType.LOAD) + tuple(loads)
    return ElfImage(bits, e_entry, e_phoff, e_phentsize, e_phnum, ordered, e_type, interp)


def _interpreter(image: bytes, segments: tuple[Segment, ...]) -> str | None:
    """The path ``PT_INTERP`` names (the first one, as Linux reads it), checked as
    ``load_elf_binary`` checks it: 2..``MAX_INTERP`` bytes in the file, NUL-terminated."""
    for index, seg in enumerate(segments):
        if seg.type != SegmentType.INTERP:
            continue
        name = f"phdr[{index}]"
        if not 2 <= seg.filesz <= MAX_INTERP:
            raise ElfError(f"{name}.p_filesz", seg.filesz, f"PT_INTERP must be 2..{MAX_INTERP}")
        if seg.offset + seg.filesz > len(image):
            raise ElfError(f"{name}.p_offset", seg.offset, "PT_INTERP runs past the file's end")
        raw = image[seg.offset : seg.offset + seg.filesz]
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise ElfError(f"{name}.p_filesz", seg.filesz, "PT_INTERP must end at its only NUL")
        return raw[:-1].decode("utf-8", "surrogateescape")
    return None


def page_down(value: int, page: int = ELF_PAGE) -> int:
    """``value`` rounded down to a multiple of ``page``."""
    return value - value % page


def page_up(value: int, page: int = ELF_PAGE) -> int:
    """``value`` rounded up to a multiple of ``page``."""
    return -(-value // page) * page


def _segment(image: bytes, bits: int, index: int, at: int) -> Segment:
    """Program header ``index`` (at file offset ``at``), checked if it is a ``PT_LOAD``."""
    if bits == 32:
        p_type, offset, vaddr, _paddr, filesz, memsz, flags, align = _PHDR_32.unpack_from(image, at)
    else:
        p_type, flags, offset, vaddr, _paddr, filesz, memsz, align = _PHDR_64.unpack_from(image, at)
    segment = Segment(p_type, SegmentFlags(flags & 7), offset, vaddr, filesz, memsz, align)
    if p_type != SegmentType.LOAD:
        return segment
    name = f"phdr[{index}]"
    if filesz > memsz:
        raise ElfError(f"{name}.p_filesz", filesz, f"larger than p_memsz ({memsz:#x})")
    if memsz == 0:
        raise ElfError(f"{name}.p_memsz", memsz, "an empty PT_LOAD")
    if offset + filesz > len(image):
        raise ElfError(f"{name}.p_offset", offset,
                       f"{filesz:#x} bytes there run past the end of the file ({len(image):#x})")
    if vaddr + memsz > ADDRESS_LIMIT[bits]:
        raise ElfError(f"{name}.p_vaddr", vaddr, f"{memsz:#x} bytes there end above the "
                       f"{bits}-bit user address space ({ADDRESS_LIMIT[bits]:#x})")  # fmt: skip
    if align > 1 and align & (align - 1):
        raise ElfError(f"{name}.p_align", align, "not a power of two")
    if (vaddr - offset) % ELF_PAGE:
        raise ElfError(f"{name}.p_vaddr", vaddr,
                       f"not congruent to p_offset ({offset:#x}) modulo the page ({ELF_PAGE:#x})")
    return Segment(p_type, segment.flags, offset, vaddr, filesz, memsz, align,
                   image[offset : offset + filesz])  # fmt: skip
