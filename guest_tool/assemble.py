"""Assemble guest programs with keystone, guarded against its known traps.

Models: the assembler step of building a guest image: Intel-syntax x86 source for a 16-, 32- or
64-bit guest, assembled at the address the loader will put it, into flat bytes.

Follows: keystone-engine 0.9.2 (Intel syntax, GAS-style directives) as measured in
``docs/UNICORN.md`` (U26-U33). This is the only module that imports keystone.

Leaves out: sections, relocations and object files (the output is one flat image linked at
``address``); AT&T syntax; NASM directives. Files are never read here: ``programs.py`` resolves
``#include`` lines; a ``prelude`` (for example ``asm/include/macros16.s``) can be put in front of a
source.

The user controls the source text. keystone crashes (SIGSEGV on ``.text``/``.data``), hangs
(NASM ``%define``) or silently drops bytes (``.section``, ``.incbin``/``.include`` of a missing
file), so those directives are refused before keystone sees them, with the reason. Two encoding bugs
are caught after assembly by a capstone lint: in 16-bit code ``ret``/``retf``/``call``/``push imm``
come out with a 0x66 prefix (32-bit stack slots); in 32-bit code ``lgdt``/``lidt``/``sgdt``/
``sidt``/``ljmp`` come out with a 0x66 prefix (a 24-bit base, a 16-bit offset). The raw-byte macros
in ``asm/include/macros16.s`` and ``asm/include/macros32.s`` produce the right encodings and pass
the lint.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from keystone import KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64, Ks, KsError

from hv_emu.errors import ConfigError

MODES = (16, 32, 64)
_KS_MODES = {16: KS_MODE_16, 32: KS_MODE_32, 64: KS_MODE_64}
_CS_MODES = {16: CS_MODE_16, 32: CS_MODE_32, 64: CS_MODE_64}
#: Highest address (exclusive) an image can be linked at in each mode.
_ADDRESS_LIMIT = {16: 1 << 20, 32: 1 << 32, 64: 1 << 64}

#: Directives refused before keystone sees them, and why (docs/UNICORN.md U29).
REFUSED_DIRECTIVES: dict[str, str] = {
    ".text": "keystone 0.9.2 crashes the whole process (SIGSEGV) on it; images have one section",
    ".data": "keystone 0.9.2 crashes the whole process (SIGSEGV) on it; images have one section",
    ".bss": "images have one section; reserve space with .space or .zero",
    ".rodata": "images have one section",
    ".section": "keystone silently emits no bytes for anything after it",
    ".pushsection": "keystone silently emits no bytes for anything after it",
    ".popsection": "images have one section",
    ".previous": "keystone silently emits no bytes at all with it",
    ".incbin": "a missing file silently yields nothing and paths follow the process's working "
    "directory; append blobs to the assembled bytes instead (see guest_tool/programs.py)",
    ".include": "a missing file silently yields nothing; use '#include \"file.s\"' lines, "
    "which guest_tool/programs.py resolves",
    ".end": "keystone silently drops every statement after it",
    ".abort": "keystone silently drops every statement after it",
    ".att_syntax": "keystone's AT&T mode mis-encodes jumps; write Intel syntax",
    ".code16": "the mode argument (the loader's --mode) chooses the code size",
    ".code32": "the mode argument (the loader's --mode) chooses the code size",
    ".code64": "the mode argument (the loader's --mode) chooses the code size",
}
_INCLUDE = re.compile(r"^\s*#\s*include\b")
_INCLUDE_REASON = ("keystone reads '#include' as a comment; expand it first with "
                   "guest_tool.programs.load_source()")
_PERCENT_REASON = "NASM '%' directives send keystone into an endless loop; use GAS directives"

#: Directives that shape the source rather than emit bytes: kept when locating an error.
_STRUCTURAL = frozenset({
    ".equ", ".set", ".equiv", ".macro", ".endm", ".if", ".ifdef", ".ifndef", ".else", ".elseif",
    ".endif", ".rept", ".endr", ".irp", ".irpc", ".globl", ".global", ".intel_syntax",
})

# Lint tables. 16-bit code: opcodes that keystone wrongly gives a 0x66 prefix, by source mnemonic.
_LINT16_OPCODES = {0xC3: "ret", 0xC2: "ret", 0xCB: "retf", 0xCA: "retf", 0xE8: "call",
                   0x68: "push", 0x6A: "push"}
_LINT16_FIX = "use the CALL16/RET16/RETF16/PUSH16 macros of asm/include/macros16.s"
# 32-bit code: mnemonics whose 0x66 prefix truncates the operand.
_LINT32_MNEMONICS = frozenset({"lgdt", "lidt", "sgdt", "sidt", "ljmp"})
_LINT32_FIX = "use the LGDT32/LIDT32/LJMP32 macros of asm/include/macros32.s"
_OPSIZE = 0x66

_LABEL = re.compile(r"\s*([A-Za-z_.$][\w.$]*|\d+)\s*:(?!:)")


class AssemblyError(ConfigError):
    """Source that keystone rejects, or whose output would be wrong.

    ``line`` is 1-based in the source given (``None`` if it cannot be told, or the fault is in
    the prelude); ``statement`` its text; ``offset`` the byte offset in the output for lint
    findings; ``origin`` a file name, set by callers that know it; ``in_prelude`` says the
    statement at fault is the prelude's, not the source's.
    """

    def __init__(self, reason: str, *, line: int | None = None, statement: str | None = None,
                 offset: int | None = None, origin: str | None = None,
                 in_prelude: bool = False) -> None:
        self.reason = reason
        self.in_prelude = in_prelude
        self.line = line
        self.statement = statement
        self.offset = offset
        self.origin = origin
        where = origin or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        head = f"{where}: " if where else ""
        stmt = f"`{statement}`: " if statement else ""
        super().__init__(f"{head}{stmt}{reason}")


@dataclass(frozen=True)
class Statement:
    """One statement of the source: its 1-based line, its text without comments, and its
    first token after any labels (the mnemonic or directive, lower case; '' for a bare label)."""

    line: int
    text: str
    labels: tuple[str, ...]
    head: str


def split_statements(source: str) -> list[Statement]:
    """Split GAS-style source as keystone does: newlines and ';' end statements, '#' starts a
    comment to the end of the line, '/* */' comments may span lines; none of this in strings."""
    out: list[Statement] = []
    buf: list[str] = []
    line = start = 1
    i, n = 0, len(source)
    in_string = False

    def flush() -> None:
        text = "".join(buf).strip()
        buf.clear()
        if text:
            out.append(_statement(start, text))

    while i < n:
        c = source[i]
        if not buf and not c.isspace():
            start = line  # a statement's line is the line of its first character
        if in_string:
            buf.append(c)
            if c == "\\" and i + 1 < n:
                buf.append(source[i + 1])
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            buf.append(c)
        elif c == "'" and i + 2 < n and source[i + 2] == "'":
            buf.append(source[i:i + 3])  # a character constant such as ';' or '#'
            i += 3
            continue
        elif c == "#":
            while i < n and source[i] != "\n":
                i += 1
            continue
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            line += source.count("\n", i, end)
            i = end
            if buf:
                buf.append(" ")
            continue
        elif c in "\n;":
            flush()
            if c == "\n":
                line += 1
            start = line
        elif buf or not c.isspace():  # leading blanks are dropped
            buf.append(c)
        i += 1
    flush()
    return out


def _statement(line: int, text: str) -> Statement:
    labels: list[str] = []
    rest = text
    while (m := _LABEL.match(rest)) is not None:
        labels.append(m.group(1))
        rest = rest[m.end():]
    rest = rest.strip()
    head = rest.split(None, 1)[0].rstrip(",").lower() if rest else ""
    return Statement(line, text, tuple(labels), head)


#: keystone and capstone handles are not thread-safe, and several machines may assemble at once
#: (a segfault inside keystone was seen with three machines in threads): one lock for both.
_ENGINE_LOCK = threading.RLock()


@functools.cache
def _keystone(mode: int) -> Ks:
    return Ks(KS_ARCH_X86, _KS_MODES[mode])


@functools.cache
def _capstone(mode: int) -> Cs:
    cs = Cs(CS_ARCH_X86, _CS_MODES[mode])
    cs.skipdata = True
    return cs


def assemble(source: str, *, mode: int, address: int, prelude: str = "") -> bytes:
    """Assemble Intel-syntax ``source`` for a ``mode``-bit guest linked at ``address``.

    ``prelude`` (for example the text of ``asm/include/macros16.s``) is assembled in front of the
    source; line numbers in errors still count from the first line of ``source``. Raises
    ``AssemblyError`` for refused directives, keystone errors, empty output and lint findings.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, not {mode}")
    if not 0 <= address < _ADDRESS_LIMIT[mode]:
        raise ConfigError(f"address {address:#x} is out of range for {mode}-bit code")
    pre = split_statements(prelude)
    body = split_statements(source)
    prelude_lines = prelude.count("\n") + 1 if prelude else 0
    stmts = pre + [Statement(s.line + prelude_lines, s.text, s.labels, s.head) for s in body]

    def fail(reason: str, stmt: Statement | None, offset: int | None = None) -> AssemblyError:
        if stmt is None:
            return AssemblyError(reason, offset=offset)
        if stmt.line <= prelude_lines:
            return AssemblyError(f"in the prelude, line {stmt.line}: {reason}",
                                 statement=stmt.text, offset=offset, in_prelude=True)
        return AssemblyError(reason, line=stmt.line - prelude_lines, statement=stmt.text,
                             offset=offset)

    for number, text in enumerate(source.splitlines(), start=1):
        if _INCLUDE.match(text):
            raise AssemblyError(_INCLUDE_REASON, line=number, statement=text.strip())
    for stmt in stmts:
        if stmt.head.startswith("%"):
            raise fail(_PERCENT_REASON, stmt)
        if stmt.head in REFUSED_DIRECTIVES:
            raise fail(f"{stmt.head} is refused: {REFUSED_DIRECTIVES[stmt.head]}", stmt)

    text = "\n".join(s.text for s in stmts)
    with _ENGINE_LOCK:
        ks = _keystone(mode)
        try:
            encoding, _count = ks.asm(text, address, as_bytes=True)
        except KsError as exc:
            culprit = _locate(ks, stmts, address, exc.errno)
            if culprit is not None and culprit.line <= prelude_lines and body \
                    and _assembles(ks, pre, address):
                # The prelude alone is fine: a label or directive of the source broke it.
                culprit = _locate_by_prefix(ks, stmts, len(pre), address, exc.errno)
                if culprit is None:
                    raise AssemblyError(
                        f"keystone: {exc} (keystone blamed the prelude, which assembles alone: "
                        "the error is somewhere in the source or the files it includes)"
                    ) from None
            raise fail(f"keystone: {exc}", culprit) from None
        code = bytes(encoding or b"")
        if not code and any(s.head not in _STRUCTURAL and s.head for s in stmts):
            raise AssemblyError("the source assembled to no bytes (keystone emitted nothing)")
        finding = _lint(code, mode, address, stmts)
    if finding is not None:
        offset, message = finding
        raise fail(message, None, offset)
    return code


def _locate(ks: Ks, stmts: list[Statement], address: int, errno: int) -> Statement | None:
    """The statement keystone failed on (its own statement count is unreliable).

    Bisect on k: keep statements [0, k) and, after them, only labels and structural directives
    (so forward references still resolve). The smallest k that fails the same way names
    statement k - 1.
    """

    def fails(k: int) -> bool:
        kept = [s.text for s in stmts[:k]]
        for s in stmts[k:]:
            if s.head in _STRUCTURAL:
                kept.append(s.text)
            else:
                kept.extend(f"{label}:" for label in s.labels)
        try:
            ks.asm("\n".join(kept), address, as_bytes=True)
        except KsError as exc:
            return bool(exc.errno == errno)
        return False

    if not stmts or not fails(len(stmts)):
        return None
    return stmts[_first_failing(1, len(stmts), fails) - 1]


def _assembles(ks: Ks, stmts: list[Statement], address: int) -> bool:
    try:
        ks.asm("\n".join(s.text for s in stmts), address, as_bytes=True)
    except KsError:
        return False
    return True


def _locate_by_prefix(ks: Ks, stmts: list[Statement], start: int, address: int,
                      errno: int) -> Statement | None:
    """The first statement from ``stmts[start]`` on whose prefix ``stmts[:k]`` fails with
    ``errno``: where ``_locate``'s skeleton blames the prelude (a redefined label, a stray
    directive of the source break the skeleton too) and the prelude alone assembles."""

    def fails(k: int) -> bool:
        try:
            ks.asm("\n".join(s.text for s in stmts[:k]), address, as_bytes=True)
        except KsError as exc:
            return bool(exc.errno == errno)
        return False

    if start + 1 > len(stmts) or not fails(len(stmts)):
        return None
    return stmts[_first_failing(start + 1, len(stmts), fails) - 1]


def _first_failing(lo: int, hi: int, fails: Callable[[int], bool]) -> int:
    """The smallest k in [lo, hi] for which ``fails(k)``, by bisection (``fails(hi)`` holds and
    a failing prefix stays failing when it grows)."""
    while lo < hi:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _lint(code: bytes, mode: int, address: int, stmts: list[Statement]) -> tuple[int, str] | None:
    """Find keystone's 0x66 mis-encodings; ``(offset, message)`` of the first, or ``None``.

    A finding counts only if the source itself uses the mnemonic concerned: bytes that come from
    the raw-byte macros or from data cannot be mistaken for a keystone bug.
    """
    if mode == 64:
        return None
    used = {s.head for s in stmts}
    for insn in _capstone(mode).disasm(code, address):
        raw = bytes(insn.bytes)
        if len(raw) < 2 or raw[0] != _OPSIZE:
            continue
        shown = f"{insn.mnemonic} {insn.op_str}".strip()
        offset = insn.address - address
        if mode == 16:
            source_mnemonic = _LINT16_OPCODES.get(raw[1])
            if source_mnemonic is not None and source_mnemonic in used:
                return offset, (
                    f"keystone encoded `{source_mnemonic}` with a 0x66 prefix at offset "
                    f"{offset:#x} ({raw.hex(' ')} = {shown}): in 16-bit code it moves 4 bytes "
                    f"of stack, not 2; {_LINT16_FIX}")
        elif insn.mnemonic in _LINT32_MNEMONICS and insn.mnemonic in used:
            return offset, (
                f"keystone encoded `{insn.mnemonic}` with a 0x66 prefix at offset {offset:#x} "
                f"({raw.hex(' ')} = {shown}): in 32-bit code the operand is truncated to "
                f"16/24 bits; {_LINT32_FIX}")
    return None
