"""ClamAV logical signatures (``.ldb``): lines, target description blocks and subsignatures.

Models: an ``.ldb`` line, ``Name;TargetDescriptionBlock;LogicalExpression;Subsig0;Subsig1;...``.
The target description block (``Engine:81-255,Target:0``) says where the signature applies; the
expression (``logical_expr.py``) combines the subsignatures, each a body signature (the ``.ndb``
hex language of ``body.py``) with an optional offset (``EOF-10:...``) and modifiers (``::i`` any
case, ``::w`` wide, ``::a`` ascii too, ``::f`` a full word). Each body subsignature becomes a
``Signature`` under a hidden name (a NUL byte, which no real name may hold), matched by the
engine like any other; a stream counts its matches and reports the logical signature when its
expression holds (``logical_match.py``).

Follows: libclamav 1.4's ``load_oneldb``, ``lsigattribs``, ``init_tdb``,
``readdb_parse_ldb_subsignature`` and ``cli_sigopts_handler`` (readdb.c), ``cli_ac_chklsig``
(matcher-ac.c) and ``lsig_sub_matched`` (matcher.c), checked on clamscan 1.4.6
(docs/SIGNATURES.md, "Logical signatures"):
- fields split at ``;`` (not inside a ``/.../`` regular expression), at least 4, at most 64
  subsignatures, exactly as many as the expression's largest number + 1;
- the block's attributes ``Name:Value``, ``Engine`` first if present; an unknown attribute, a
  ``Target`` of 15 or more, or an ``Engine`` range without 216 (clamscan 1.4.6's level) skip the
  line quietly, before its subsignatures are read; attributes other than ``Target``/``Engine``
  need ``Engine`` with a minimum of at least 51;
- a subsignature's match counts once per start offset, in increasing order (``realoff`` no later
  than the last one counted is not counted again);
- ``::f`` wraps the body in ``(W)...(W)``, ``::w`` puts a 00 after each byte (wildcards, ranges
  and alternation syntax as they are, ``[x-y]`` becoming ``{x-y}``), ``::a`` with ``::w`` adds
  the body as written, ``::i`` folds static bytes and alternations (not ``??`` or nibbles) and
  refuses negated alternations; plain subsignature literals need 2 bytes (3 in ``.ndb``).

Leaves out (accepted, reported once as not applied, never matched): target types other than 0,
``Container``, ``Intermediates``, ``HandlerType``, ``IconGroup1/2``, ``EntryPoint``,
``NumberOfSections``, PCRE (``trigger/regex/flags``), byte-compare (``n(>>x#...#...)``),
macro (``${n-m}g$``) and ``fuzzy_img#`` subsignatures, and subsignature offsets that need file
typing or wrap. ``FileSize:X-Y`` applies where the length is known (``hv-emu scan``) and never
matches on a disk write stream, which has no end. A ``(B)``/``(W)`` anchored byte under ``::i``
compares the raw byte (not measured on clamscan).

Guest controls: nothing directly (``.ldb`` files come from ``--db``; updates carry ``.db`` and
``.ndb`` only); the text is still bounded (line length, subsignatures, ``body.py``'s budgets) and
only ``DatabaseError`` is raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hv_emu.errors import DatabaseError
from hv_emu.scanner.body import BodyError, parse_body
from hv_emu.scanner.logical_expr import LogicError, parse
from hv_emu.scanner.logical_match import HIDDEN, LogicalSignature, LogicalState, LogicalTable
from hv_emu.scanner.pattern import fold_case
from hv_emu.scanner.signatures import (
    FLEVEL,
    MAX_DATABASE_BYTES,
    MAX_LINE_LENGTH,
    MAX_SIGNATURES,
    TARGET_ANY,
    TARGET_TYPES,
    Offset,
    Signature,
    _never_matches,
    _parse_offset,
    c_line,
    clam_name,
)

MAX_SUBSIGS = 64  # libclamav's MAX_LDB_SUBSIGS
_LDB_TOKENS = 68  # load_oneldb tokenizes at most LDB_TOKENS + 1 fields
_ATTRIBUTE_TOKENS = 10  # lsigattribs's ATTRIB_TOKENS
#: Attributes hv-emu accepts but cannot apply to raw bytes, and why.
_NOT_APPLIED = {
    "Container": "a container type needs ClamAV's file typing",
    "Intermediates": "intermediate container types need ClamAV's file typing",
    "HandlerType": "a handler type needs ClamAV's file typing",
    "IconGroup1": "icon groups need ClamAV's PE parsing",
    "IconGroup2": "icon groups need ClamAV's PE parsing",
    "EntryPoint": "an entry point needs ClamAV's executable parsing",
    "NumberOfSections": "sections need ClamAV's executable parsing",
}
_RANGES = ("Engine", "FileSize", "EntryPoint", "NumberOfSections")
_DIGITS = re.compile(r"[0-9]*")  # cli_isnumber: the empty string passes
_C_UNSIGNED = r"[ \t\n\v\f\r]*[+-]?[0-9]+"
_MACRO = re.compile(rf"\$\{{{_C_UNSIGNED}-{_C_UNSIGNED}\}}(?P<group>{_C_UNSIGNED})")
# --------------------------------------------------------------------------- parsing


def tokenize(text: str, delimiter: str, count: int, skip: int) -> list[tuple[int, str]]:
    """libclamav's ``cli_ldbtokenize``: at most ``count`` fields (what follows is dropped), each
    with its column; from field ``skip`` on, a ``/`` not after a backslash opens or closes a
    regular expression, inside which ``delimiter`` does not split."""
    fields: list[tuple[int, str]] = []
    within = False
    i = 0
    while len(fields) < count:
        start = i
        while i < len(text):
            if not within and text[i] == delimiter:
                break
            if len(fields) + 1 > skip and text[i] == "/" and (i == 0 or text[i - 1] != "\\"):
                within = not within
            i += 1
        fields.append((start + 1, text[start:i]))
        if i >= len(text):
            break
        i += 1
    return fields


@dataclass
class _Block:
    target: int = -1
    engine: tuple[int, int] | None = None
    file_size: tuple[int, int] | None = None
    not_applied: str | None = None


def _u32(digits: str) -> int:
    """``atoi`` into an unsigned 32-bit field."""
    return min(int(digits or "0"), 2**63 - 1) & 0xFFFF_FFFF


def _block(text: str, column: int, source: str, line: int) -> _Block | None:
    """The target description block, as ``lsigattribs`` and ``init_tdb`` read it; None when the
    line is to be skipped quietly."""
    block = _Block()
    new_attribute = False
    seen: set[str] = set()
    for position, (at, token) in enumerate(tokenize(text, ",", _ATTRIBUTE_TOKENS, 99)):
        where = column + at - 1
        name, colon, value = token.partition(":")
        if not colon:
            raise DatabaseError(source, line, where, f"Incorrect format of attribute {token!r}")
        if name not in ("Target", *_RANGES, *_NOT_APPLIED):
            return None  # an unknown attribute: the line is skipped (clamscan: debug message)
        if name == "Engine" and position:
            raise DatabaseError(source, line, where, "the Engine attribute must come first")
        if name not in ("Target", "Engine"):
            new_attribute = True
        seen.add(name)
        if name == "Target":
            if not _DIGITS.fullmatch(value):
                raise DatabaseError(source, line, where, f"Invalid argument for {name}")
            block.target = _u32(value)
        elif name in _RANGES:
            low, dash, high = value.partition("-")
            if not dash or not _DIGITS.fullmatch(low) or not _DIGITS.fullmatch(high):
                raise DatabaseError(source, line, where, f"Incorrect parameters in {token!r}")
            bounds = (_u32(low), _u32(high))
            if name == "Engine":
                block.engine = bounds
            elif name == "FileSize":
                block.file_size = bounds
            else:
                block.not_applied = _NOT_APPLIED[name]
        else:
            block.not_applied = block.not_applied or _NOT_APPLIED[name]
    if new_attribute and (block.engine is None or block.engine[0] < 51):
        raise DatabaseError(source, line, column, "attributes other than Target need Engine "
                                                  "with a minimum of at least 51")  # fmt: skip
    if block.engine is not None and not block.engine[0] <= FLEVEL <= block.engine[1]:
        return None
    if block.target < 0:
        raise DatabaseError(source, line, column, "No target specified in TDB")
    if block.target >= TARGET_TYPES:
        return None
    if seen & {"IconGroup1", "IconGroup2"} and block.target != 1:
        raise DatabaseError(source, line, column, "IconGroup is only supported in PE (target 1) "
                                                  "signatures")  # fmt: skip
    if seen & {"EntryPoint", "NumberOfSections"} and block.target not in (1, 6, 9):
        raise DatabaseError(source, line, column, "EntryPoint/NumberOfSections is only supported "
                                                  "in PE/ELF/Mach-O signatures")  # fmt: skip
    return block


def _fullword(body: str) -> str:
    """``::f``: ``(W)BODY(W)``, anchored-byte brackets becoming ranges (two bytes now)."""
    wrapped = f"(W){body}(W)"
    out = list(wrapped)
    at = 0
    while (opening := wrapped.find("[", at)) >= 0:
        closing = wrapped.find("]", opening)
        if closing < 0:
            raise ValueError("unmatched '['")
        out[opening], out[closing] = "{", "}"
        at = closing
    return "".join(out)


def _wide(body: str) -> str:
    """``::w``: each byte token followed by 00, as ``cli_sigopts_handler`` rewrites the text."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in "*|)":
            out.append(c)
        elif c in "[{":
            close = body.find("]" if c == "[" else "}", i)
            close = len(body) if close < 0 else close
            out.append("{" + body[i + 1 : close] + "}")
            i = close
        elif c in "!(":
            if c == "!":
                out.append(c)
                i += 1
            out.append(body[i : i + 1])
            if i + 2 >= len(body):
                raise ValueError("malformed alternation or boundary")
            if body[i + 1] in "BLW":
                if body[i + 2] != ")":
                    raise ValueError("malformed boundary")
                out.append(body[i + 1 : i + 3])
                i += 2
        else:
            if i + 1 >= len(body):
                raise ValueError("odd number of hex digits")
            out.append(body[i : i + 2] + "00")
            i += 1
        i += 1
    return "".join(out)


def _subsignature(token: str, column: int, target: int, source: str, line: int
                  ) -> list[Signature] | str:  # fmt: skip
    """A subsignature's bodies, or why it is accepted but not applied."""
    def error(message: str, at: int = 0) -> DatabaseError:
        return DatabaseError(source, line, column + at, message)

    if token.startswith("$"):
        if not token.endswith("$") or len(token) < 2:
            raise error("macro subsignature is missing the '$' terminator")
        macro = _MACRO.match(token)
        if macro is None:
            raise error("Invalid logical macro subsignature format")
        if _u32(macro["group"].strip().lstrip("+")) >= 32 or "-" in macro["group"]:
            raise error("only 32 macro groups are supported")
        return "a macro subsignature needs ClamAV's macro groups"
    if "/" in token:
        if token.find("/") == token.rfind("/"):
            raise error("PCRE subsig mismatched '/' delimiter")
        if token.startswith("/"):
            raise error("PCRE subsig must contain logical trigger")
        return "a PCRE subsignature is not implemented"
    if "(" in token and "#" in token and token.find("#") != token.rfind("#"):
        return "a byte-compare subsignature is not implemented"
    if token.startswith("fuzzy_img#"):
        return "an image fuzzy hash needs ClamAV's image parsing"
    fields = tokenize(token, ":", 5, 99)
    offset_text = fields[0][1] if len(fields) % 2 == 0 else "*"
    options = fields[len(fields) - 1][1] if len(fields) in (3, 4) else ""
    body_at, body = fields[0] if len(fields) % 2 else fields[1]
    for at, option in enumerate(options):
        if option not in "ifwa":
            raise error(f"invalid subsignature option {option!r}", len(token) - len(options) + at)
    try:
        offset, reason = _parse_offset(offset_text, target)
    except ValueError as problem:
        raise error(str(problem)) from None
    texts = [body]
    try:
        if "f" in options:
            texts = [_fullword(body)]
        if "w" in options:
            texts = [_wide(texts[0]), *(texts if "a" in options else [])]
    except ValueError as problem:
        raise error(str(problem), body_at - 1) from None
    bodies = []
    for text in texts:
        if "i" in options and re.search(r"!\((?![BLW]\))", text):
            raise error("Can't apply negation operation to generic alternate strings", body_at - 1)
        try:
            parts = parse_body(text, min_plain=2)
        except BodyError as problem:
            shift = problem.column if text is body else 0
            raise error(problem.message, body_at - 1 + shift) from None
        if "i" in options:
            parts = fold_case(parts)
        bodies.append(Signature("", line, TARGET_ANY, offset, parts,
                                _never_matches(parts, text), source))  # fmt: skip
    if reason is not None or offset.kind == "executable":
        return reason or "an executable offset needs ClamAV's file typing"
    return bodies


def parse_ldb_line(text: str, source: str, line: int) -> LogicalSignature | None:
    """One ``.ldb`` line; None when clamscan skips it quietly. Raises ``DatabaseError``."""
    fields = tokenize(text, ";", _LDB_TOKENS, 2)
    if len(fields) < 4:
        raise DatabaseError(source, line, 1, "Invalid or unsupported ldb signature format "
                                             "(Name;Target description;Logic;Subsig0;...)")
    (_, raw_name), (block_at, block_text), (logic_at, logic) = fields[:3]
    try:
        expression, largest = parse(logic)
    except LogicError as problem:
        raise DatabaseError(source, line, logic_at + problem.position, problem.message) from None
    subsigs = len(fields) - 3
    if largest + 1 != subsigs:
        raise DatabaseError(source, line, logic_at, f"the expression names subsignatures 0 to "
                            f"{largest}, but the line has {subsigs}")  # fmt: skip
    if subsigs > MAX_SUBSIGS:
        raise DatabaseError(source, line, logic_at, f"more than {MAX_SUBSIGS} subsignatures")
    block = _block(block_text, block_at, source, line)
    if block is None:
        return None
    name = clam_name(raw_name, source, line)
    reason = block.not_applied
    if block.target != TARGET_ANY:
        reason = f"target type {block.target} needs ClamAV's file typing"
    bodies: list[tuple[int, Signature]] = []
    for number, (at, token) in enumerate(fields[3:]):
        result = _subsignature(token, at, block.target, source, line)
        if isinstance(result, str):
            reason = reason or f"subsignature {number}: {result}"
        else:
            bodies += [(number, body) for body in result]
    return LogicalSignature(name, line, source, expression, subsigs, tuple(bodies),
                            block.file_size, reason)  # fmt: skip


def parse_ldb_database(data: bytes, *, source: str) -> list[LogicalSignature]:
    """A whole ``.ldb`` file; one bad line refuses it, as clamscan refuses the database."""
    if len(data) > MAX_DATABASE_BYTES:
        raise DatabaseError(source, 0, 0, f"database larger than {MAX_DATABASE_BYTES} bytes")
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DatabaseError(source, 0, 0, "Empty database file")
    signatures: list[LogicalSignature] = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_LENGTH:
            raise DatabaseError(source, number, 0, f"line longer than {MAX_LINE_LENGTH} bytes")
        text = c_line(raw).decode("latin-1").rstrip("\r\n")
        if text.startswith("#"):
            continue
        if len(signatures) >= MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {MAX_SIGNATURES} signatures")
        signature = parse_ldb_line(text, source, number)
        if signature is not None:
            signatures.append(signature)
    return signatures


__all__ = ["HIDDEN", "MAX_SUBSIGS", "LogicalSignature", "LogicalState", "LogicalTable",
           "Offset", "parse_ldb_database", "parse_ldb_line", "tokenize"]  # fmt: skip
