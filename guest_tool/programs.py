"""Build the guest programs shipped in ``asm/`` into flat images.

Models: the link step of a tiny toolchain. A program is ``asm/programs/<name><mode>.s``
(``hello64.s``, ``update16.s``...); ``#include "file.s"`` lines pull in shared files (``hvabi.s``,
``print64.s``) at that point, once each, like the C preprocessor with ``#pragma once``; keystone
itself reads them as comments. An include is looked up beside the including file, then in
``asm/include/`` (the compiler's ``-I``). Every program gets the ``HC_<NAME>`` hypercall numbers as
``.equ`` lines in front, generated from ``hv_emu.hypercalls.builtin.BUILTINS`` (a hypercall's
number is its position there) as Linux generates ``unistd_64.h`` from ``syscall_64.tbl``, and the
I/O ports it talks to (``DEBUGCON_PORT``, ``NIC_PORT``, ``ATA_PORT``...), generated from
``hv_emu.layout`` by the table ``PORTS``: ``asm/include/hvabi.s`` and ``nicregs.s`` hold the other
constants and neither, so each is defined once.
Parameters arrive as ``.equ`` lines put in front of the source, 16- and 32-bit programs get the
raw-byte macros of ``asm/include/macros16.s`` / ``macros32.s`` in front too, and the image is
assembled at the address the loader will use (U32). The
update program gets its bundle and signature appended after the code, because keystone's
``.incbin`` is unusable; it and ``diskwrite`` (its payload) are the programs that need data
(``NEEDS_DATA``): ``build_program`` builds the others by name.

``asm/`` sits at the top of the repository and is installed inside the wheel as the package
``guest_tool.asm`` (``pyproject.toml``); ``ASM_DIR`` is found through ``importlib.resources``, so an
installed ``guest-tool`` reads only its own installed files, never the current directory.

Follows: the hypercall ABI of ``hv_emu.hypercalls`` (numbers from ``builtin.BUILTINS``, generated
here; codes and limits of ``abi``, mirrored by ``asm/include/hvabi.s``), the ports of
``hv_emu.layout`` (generated here) and
the loader's start state for each mode (``hv_emu.layout``: load 0x100000, or 0x7C00 in real mode
with CS = DS = 0).

Leaves out: ELF output (``linux_programs.py`` builds Linux programs), relocation (an image runs
only where it was assembled), a zipped installation (the sources must be files on disk).

The user controls the bundle and signature bytes (appended verbatim, never parsed here), the load
address, the mode and extra equates; all are checked against the mode's address limits. A user's
own source (``build_source_file``) also controls its ``#include`` lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from guest_tool.assemble import MODES, AssemblyError, assemble
from hv_emu import layout
from hv_emu.errors import ConfigError, HostError
from hv_emu.hypercalls.builtin import NUMBERS
from hv_emu.named_file import read_user_file

#: The installed ``asm/`` tree (the package ``guest_tool.asm``).
ASM_DIR = Path(str(resources.files("guest_tool.asm")))
#: The programs ``build_program`` knows (``<name><mode>.s``).
PROGRAMS_DIR = ASM_DIR / "programs"
#: Shared files that programs ``#include``; searched after the including file's directory.
INCLUDE_DIR = ASM_DIR / "include"
#: The ABI's constants for assembly (return codes, limits; no ``HC_`` and no ports: those are
#: generated).
HVABI = INCLUDE_DIR / "hvabi.s"
#: Largest assembly source file read (the shipped ones are a few KiB).
MAX_SOURCE_BYTES = 16 * 1024 * 1024
#: Alignment of the bundle and of the signature appended to the update program.
BLOB_ALIGN = 16
#: The program that needs blobs (built by ``build_update_program`` only).
UPDATE = "update"
#: The I/O ports the programs of ``asm/`` use, by their assembler names: ``.equ`` lines generated
#: in front of every program, so ``hv_emu/layout.py`` stays the only home of a port number.
#: ``ATA_CTRL_PORT`` (Device Control / Alternate Status) is for a user's own driver: ``ata.s``
#: polls Status instead.
PORTS: dict[str, int] = {
    "DEBUGCON_PORT": layout.PORT_DEBUGCON,
    "NIC_PORT": layout.PORT_NIC,
    "ATA_PORT": layout.PORT_ATA_PRIMARY,
    "ATA_CTRL_PORT": layout.PORT_ATA_PRIMARY_CTRL,
    "BM_PORT": layout.PORT_BUSMASTER,
}


@dataclass(frozen=True)
class NeedsData:
    """A program that cannot be built by name alone: the data appended after its code, the
    Python function that builds it, and the ``guest-tool build`` option that does."""

    data: str
    builder: str
    option: str


#: The programs of ``asm/programs/`` that need data, and where to get them built instead.
NEEDS_DATA: dict[str, NeedsData] = {
    UPDATE: NeedsData("a signed bundle and its signature",
                      "guest_tool.programs.build_update_program()", "--bundle FILE"),
    "diskwrite": NeedsData("the payload to write",
                           "guest_tool.disk_programs.build_disk_write_program()", "--write FILE"),
}
#: A real-mode segment spans 64 KiB: with CS = DS = 0 the code and its strings must lie below
#: (docs/UNICORN.md U32: a 16-bit near jump past 127 bytes works only there).
REAL_MODE_SEGMENT = 0x10000

_INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')
_EQU = re.compile(r"^\s*\.(?:equ|set)\s+([A-Za-z_.$][\w.$]*)\s*,\s*([^#;]+?)\s*(?:[#;].*)?$")
_DEFINES = re.compile(r"^\s*\.(?:equ|set|equiv)\s+([A-Za-z_.$][\w.$]*)\s*,")
_NAME = re.compile(r"^[A-Za-z_][\w.$]*$")
_PROGRAM_FILE = re.compile(r"^([a-z_]+?)(16|32|64)\.s$")


@dataclass(frozen=True)
class Source:
    """Source text with every ``#include`` expanded; ``origins[i]`` is the (file, line) that
    line ``i + 1`` of ``text`` came from; ``name`` the file that was read."""

    text: str
    origins: tuple[tuple[str, int], ...]
    name: str = ""

    def locate(self, error: AssemblyError) -> AssemblyError:
        """``error`` pointed at the file and line its statement came from; an error without a
        line (a lint finding, an error keystone could not place) names the file that was read."""
        if error.line is None and error.origin is None and not error.in_prelude and self.name:
            return AssemblyError(error.reason, statement=error.statement, offset=error.offset,
                                 origin=self.name)
        if error.line is None or error.line > len(self.origins):
            return error
        file, line = self.origins[error.line - 1]
        return AssemblyError(error.reason, line=line, statement=error.statement,
                             offset=error.offset, origin=file)  # fmt: skip


def load_source(filename: str, *, asm_dir: Path = PROGRAMS_DIR,
                include_dirs: tuple[Path, ...] = (INCLUDE_DIR,),
                already: tuple[Path, ...] = ()) -> Source:
    """Read ``asm_dir/filename`` and expand its ``#include "file.s"`` lines (each file at most
    once), looking for an included file beside the including file, then in ``include_dirs``.
    An ``#include`` of one of the files ``already`` put in front of the source is dropped."""
    lines: list[str] = []
    origins: list[tuple[str, int]] = []
    seen: set[Path] = {path.resolve() for path in already}

    def expand(path: Path, stack: tuple[Path, ...]) -> None:
        path = path.resolve()
        if path in stack:
            raise ConfigError(f"{path.name}: #include cycle")
        if path in seen:
            return
        seen.add(path)
        try:
            text = read_user_file(path, "source", MAX_SOURCE_BYTES).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"source {path}: not UTF-8 text ({exc.reason})") from None
        for number, line in enumerate(text.splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m is None:
                lines.append(line)
                origins.append((path.name, number))
            else:
                expand(_find_include(m.group(1), path.parent, include_dirs), (*stack, path))

    expand(asm_dir / filename, ())
    return Source("\n".join(lines) + "\n", tuple(origins), filename)


def _find_include(name: str, beside: Path, include_dirs: tuple[Path, ...]) -> Path:
    """The first of ``beside/name``, ``include_dirs[i]/name`` that exists; a ``ConfigError``
    naming every directory searched when none does."""
    searched = (beside, *include_dirs)
    for directory in searched:
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"#include \"{name}\": not found in {', '.join(map(str, searched))}")


def parse_equates(text: str) -> dict[str, int]:
    """The ``.equ NAME, value`` (and ``.set``) lines of ``text`` whose value is an integer
    literal (decimal, 0x hex, 0b binary, 0o octal, optionally negative). Later lines win.

    Raises ``ConfigError`` for an equate whose value is an expression: this reader is for
    constant tables such as ``asm/include/hvabi.s``.
    """
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        m = _EQU.match(line)
        if m is None:
            continue
        try:
            found[m.group(1)] = int(m.group(2), 0)
        except ValueError:
            raise ConfigError(
                f"line {number}: .equ {m.group(1)} is not an integer literal: {m.group(2)!r}"
            ) from None
    return found


def hypercall_equates() -> dict[str, int]:
    """``HC_<NAME>`` -> number for each built-in hypercall (``HC_GET_STATUS``: 1), generated
    from its position in ``hv_emu.hypercalls.builtin.BUILTINS``."""
    return {f"HC_{name.upper()}": nr for name, nr in NUMBERS.items()}


def hypercall_prelude() -> str:
    """The ``.equ HC_<NAME>, n`` lines of ``generated_prelude`` (``asm/include/hvabi.s`` defines
    none)."""
    return equate_lines(hypercall_equates())


def generated_equates() -> dict[str, int]:
    """Every constant generated from the hypervisor's tables: the ``HC_`` numbers and ``PORTS``."""
    return hypercall_equates() | PORTS


def generated_prelude() -> str:
    """The ``.equ`` lines put in front of every program assembled here, in ``linux_programs.py``
    and by ``hv_emu.testing``: the hypercall numbers, then the ports (``asm/`` defines neither)."""
    return hypercall_prelude() + equate_lines(PORTS)


def equate_lines(equates: Mapping[str, int]) -> str:
    """``.equ`` lines for ``equates``, checking names and values."""
    out = []
    for name, value in equates.items():
        if not _NAME.match(name):
            raise ConfigError(f"equate name {name!r} is not an assembler symbol")
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"equate {name} must be an integer, not {value!r}")
        out.append(f".equ {name}, {value:#x}" if value >= 0 else f".equ {name}, {value}")
    return "\n".join(out) + ("\n" if out else "")


def macro_prelude(mode: int) -> str:
    """The raw-byte macros for ``mode`` (``asm/include/macros16.s`` / ``macros32.s``; none for
    64)."""
    if mode == 64:
        return ""
    return load_source(f"macros{mode}.s", asm_dir=INCLUDE_DIR).text


def buildable_programs() -> dict[str, tuple[int, ...]]:
    """The programs ``build_program`` builds by name (``available_programs`` without
    ``NEEDS_DATA``), with their modes."""
    return {name: modes for name, modes in available_programs().items() if name not in NEEDS_DATA}


def available_programs(*, asm_dir: Path = PROGRAMS_DIR) -> dict[str, tuple[int, ...]]:
    """Program name -> the modes it exists in (``{"hello": (64,), "update": (16, 32, 64)...}``)."""
    found: dict[str, list[int]] = {}
    for path in sorted(asm_dir.glob("*.s")):
        m = _PROGRAM_FILE.match(path.name)
        if m is not None:
            found.setdefault(m.group(1), []).append(int(m.group(2)))
    return {name: tuple(sorted(modes)) for name, modes in sorted(found.items())}


def abi_prelude() -> str:
    """Every ABI constant for a source that does not ``#include "hvabi.s"`` itself: the
    generated hypercall numbers and ports, then ``asm/include/hvabi.s``."""
    return generated_prelude() + load_source(HVABI.name, asm_dir=HVABI.parent).text


def default_load(mode: int) -> int:
    """Where the loader puts an image in ``mode`` unless told otherwise."""
    return layout.DEFAULT_LOAD_REAL if mode == 16 else layout.DEFAULT_LOAD


def build_program(name: str, *, mode: int = 64, load: int | None = None,
                  equates: dict[str, int] | None = None) -> bytes:
    """Assemble ``asm/programs/<name><mode>.s`` at ``load`` (default: the loader's) with ``equates``
    in front. The programs of ``NEEDS_DATA`` are refused with the function that builds them."""
    if name in NEEDS_DATA:
        needs = NEEDS_DATA[name]
        raise ConfigError(f"the {name} program needs {needs.data}: use {needs.builder}")
    return assemble_program(name, mode=mode, load=load, equates=equates)


def build_update_program(bundle: bytes, signature: bytes, *, mode: int = 64,
                         load: int | None = None, lookup: bool = True) -> bytes:
    """The update guest for ``mode`` with ``bundle`` and ``signature`` appended.

    The image is ``code | bundle | zero padding | signature``: the bundle starts at the first
    ``BLOB_ALIGN`` boundary after the code, the signature at the next one after the bundle. With
    ``lookup`` the guest resolves "update_signatures" by name before calling it.
    """
    offset = _align(len(bundle))
    equates = {
        "LOOKUP": int(lookup),
        "BUNDLE_LEN": len(bundle),
        "SIGNATURE_LEN": len(signature),
        "SIGNATURE_OFFSET": offset,
    }
    if len(bundle) >= 1 << 32:
        raise ConfigError(f"a bundle of {len(bundle)} bytes does not fit a 32-bit length")
    code = assemble_program(UPDATE, mode=mode, load=load, equates=equates)
    if len(code) % BLOB_ALIGN:
        raise HostError(f"asm/programs/update{mode}.s must end with `.p2align 4` and `blobs:`")
    image = code + bundle + bytes(offset - len(bundle)) + signature
    start = default_load(mode) if load is None else load
    _check_fits(image, mode, start, f"the {mode}-bit update image")
    return image


def assemble_program(name: str, *, mode: int = 64, load: int | None = None,
                     equates: Mapping[str, int] | None = None) -> bytes:
    """``asm/programs/<name><mode>.s`` assembled at ``load`` with ``equates`` in front, whether or
    not it needs data: the builders of ``NEEDS_DATA`` programs append theirs after the code."""
    equates = dict(equates or {})
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {mode}")
    modes = available_programs().get(name)
    if modes is None or mode not in modes:
        known = ", ".join(f"{n} ({'/'.join(map(str, m))})" for n, m in buildable_programs().items())
        raise ConfigError(f"no program {name!r} for {mode}-bit mode; available: {known}")
    start = default_load(mode) if load is None else load
    if start < 0:
        raise ConfigError(f"load address {start:#x} is negative")
    clash = sorted(set(equates) & set(generated_equates()))
    if clash:
        raise ConfigError(f"equates {', '.join(clash)} would redefine hypercall numbers or ports")
    source = load_source(f"{name}{mode}.s")
    prelude = macro_prelude(mode) + generated_prelude() + equate_lines(equates)
    try:
        code = assemble(source.text, mode=mode, address=start, prelude=prelude)
    except AssemblyError as exc:
        if mode == 16 and start != default_load(16):
            # Labels past 64 KiB do not fit 16-bit operands: say so rather than "invalid fixup".
            try:
                size = len(assemble(source.text, mode=16, address=default_load(16),
                                    prelude=prelude))
            except AssemblyError:
                size = 0  # broken anywhere: report the original error
            _check_segment(name, start, size)
        raise source.locate(exc) from None
    _check_fits(code, mode, start, f"{name}{mode}.s")
    if mode == 16:
        _check_segment(name, start, len(code))
    return code


def _check_segment(name: str, start: int, size: int) -> None:
    if start + size > REAL_MODE_SEGMENT:
        raise ConfigError(
            f"{name}16.s: {size} bytes of real-mode code at {start:#x} end at "
            f"{start + size:#x}, beyond the first 64 KiB that CS = DS = 0 can address")


def _check_fits(image: bytes, mode: int, start: int, what: str) -> None:
    end = start + len(image)
    limit = layout.REAL_MODE_IMAGE_END if mode == 16 else 1 << 32 if mode == 32 else 1 << 64
    if end > limit:
        raise ConfigError(
            f"{what} is {len(image)} bytes: loaded at {start:#x} it would end at {end:#x}, "
            f"above {limit:#x} ({max(limit - start, 0)} bytes available)")


def _align(n: int) -> int:
    return (n + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN


def build_source_file(path: Path, *, mode: int = 64, load: int | None = None) -> bytes:
    """Assemble the user's own source file for ``mode`` at ``load`` (default: the loader's), with
    the hypercall numbers (``HC_*``), the ports (``PORTS``), the ABI constants of
    ``asm/include/hvabi.s`` and the mode's
    raw-byte macros defined in front; ``#include "x.s"`` lines resolve beside the file, then among
    the shipped ``asm/include/`` files, and one that finds the shipped ``hvabi.s`` is dropped, as
    it is in front already (``guest-tool build --asm FILE``)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {mode}")
    start = default_load(mode) if load is None else load
    source = load_source(path.name, asm_dir=path.parent, already=(HVABI,))
    prelude = macro_prelude(mode) + abi_prelude()
    # keystone takes a second `.equ` of a name silently, the last one winning: a user's file that
    # redefines an ABI constant would build a program that disagrees with the hypervisor.
    defined = {m.group(1) for m in map(_DEFINES.match, prelude.splitlines()) if m}
    clash = sorted({m.group(1) for m in map(_DEFINES.match, source.text.splitlines()) if m}
                   & defined)
    if clash:
        raise ConfigError(f"{path.name} redefines {', '.join(clash)}, which the hypervisor's ABI "
                          "defines already (asm/include/hvabi.s, the HC_ numbers and the ports)")
    try:
        code = assemble(source.text, mode=mode, address=start, prelude=prelude)
    except AssemblyError as exc:
        raise source.locate(exc) from None
    _check_fits(code, mode, start, path.name)
    return code
