"""ClamAV body-signature databases (``.db`` and ``.ndb``): lines, fields and whole files.

Models: the two text formats ClamAV uses for byte-pattern ("body") signatures. A ``.db`` line is
``Name=HEXBODY``; an ``.ndb`` line is ``Name:TargetType:Offset:HEXBODY[:MinFL[:MaxFL]]``. Each line
becomes a ``Signature``: its name, target type, offset, and its body parsed by ``body.py`` into
ordered parts.

Follows: ClamAV's signature manual (``BodySignatureFormat.md``, ``ExtendedSignatures.md``) and the
loader rules of libclamav 1.4 (``readdb.c``): ``#`` comments, 4-6 ``.ndb`` fields, numeric
FLEVELs (lines for another functionality level skipped quietly), one bad line refuses the whole
database, and a database without lines is refused ("Empty database file"; one of comments only
loads); a line ends at its first NUL byte (``c_line``), as libclamav reads it as a C string.

Names are clamscan's: any text up to the first " (Clam)" (``cli_mpool_virname``). Offsets are
read as ``cli_caloff`` reads them, leniency included (an empty number is 0, ``sscanf`` forms,
numbers modulo 2**32, and an absolute 4294967295, ``CLI_OFF_ANY``, meaning anywhere).
Blank lines refuse the database and ``Name==`` ``.db`` lines are skipped, as in ``readdb.c``.

Leaves out: the body constructs ``body.py`` refuses. Accepted but recorded as not applied
(``Signature.not_applied``): target types other than 0 (they need ClamAV's file typing; so do
their ``EP``/``Sx``/``SEx``/``SL``/``VI`` offsets, which ClamAV refuses on other types), ``$n$``
macro offsets, and ranges ``{n-m}`` with 0 < m < n (clamscan
never matches them). ``EOF-n`` offsets are parsed; they can only match where the length is known
(one-shot scans, not a disk stream).

Guest controls: everything. A database may arrive from the guest as a signature update, so the
parser bounds the input size, line length and signature count (and ``body.py`` each body's
expansion) before it allocates, and raises only ``DatabaseError``.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from hv_emu.errors import DatabaseError
from hv_emu.scanner.body import (
    MAX_BYTE_ALTERNATIVES,
    MAX_FIXED_SKIP,
    MAX_PARTS,
    MAX_SIGNATURE_ELEMENTS,
    MAX_VARIANTS,
    BodyError,
    overfull_alternation,
    parse_body,
)
from hv_emu.scanner.kinds import (
    CLAM_SUFFIX,
    FLEVEL,
    HASH_KINDS,
    KINDS,
    LOADABLE_KINDS,
    LOGICAL_KINDS,
    MAX_DATABASE_BYTES,
    MAX_SIGNATURES,
    PUA_KINDS,
    UNSUPPORTED_KINDS,
    c_line,
    clam_name,
    load_database_file,
)
from hv_emu.scanner.pattern import (
    MAX_OFFSET,
    Anchor,
    Boundary,
    ByteClass,
    Choice,
    Element,
    Literal,
    Offset,
    Part,
    Variant,
)

# The pattern model, the body limits and the file kinds (``kinds.py``) are re-exported: callers
# see one signature module.
__all__ = [
    "CLAM_SUFFIX", "FLEVEL", "HASH_KINDS", "KINDS", "LOADABLE_KINDS", "LOGICAL_KINDS",
    "MAX_DATABASE_BYTES", "MAX_DATABASE_ELEMENTS", "MAX_FIXED_SKIP", "MAX_LINE_LENGTH",
    "MAX_OFFSET", "MAX_PARTS", "MAX_SIGNATURES", "MAX_SIGNATURE_ELEMENTS", "MAX_VARIANTS",
    "PUA_KINDS", "TARGET_ANY",
    "UNSUPPORTED_KINDS", "Anchor", "Boundary", "ByteClass", "Choice", "Element", "Literal",
    "Offset", "Part", "Signature", "Variant", "anywhere", "c_line", "clam_name",
    "load_database_file", "parse_database",
]

# Bounds on hostile input, checked before the work they limit.
MAX_LINE_LENGTH = 64 * 1024  # ClamAV's longest official bodies are a few thousand hex digits
MAX_DATABASE_ELEMENTS = 8_000_000
#: libclamav's ``CLI_OFF_ANY`` (0xffffffff): an absolute offset that reads as this number (after
#: ``atoi``'s wrap) is "anywhere", as ``*`` (docs/SIGNATURES.md, Offsets).
CLI_OFF_ANY = 2**32 - 1
TARGET_ANY = 0


@dataclass(frozen=True, slots=True)
class Signature:
    """One database line: a name, where it applies, and its body as ordered parts."""

    name: str
    line: int
    target_type: int
    offset: Offset
    parts: tuple[Part, ...]
    not_applied: str | None = None  # why hv-emu accepts but never matches this signature
    source: str = ""  # the database file it came from, for messages


# --------------------------------------------------------------------------- lines and fields

#: ``cli_isnumber``: digits only, and the empty string passes (``atoi`` then reads it as 0).
_DIGITS = re.compile(r"[0-9]*")
#: What C's ``sscanf("%u")`` reads: white space, a sign, digits (the rest of the text is ignored).
_C_UNSIGNED = r"[ \t\n\v\f\r]*[+-]?[0-9]+"
_SECTION = re.compile(rf"S{_C_UNSIGNED}\+{_C_UNSIGNED}")
_MACRO = re.compile(r"\$[ \t\n\v\f\r]*(?P<sign>[+-]?)(?P<group>[0-9]+)")
MAX_OFFSET_TEXT = 64  # cli_caloff: "Offset string too long"
MAX_MACRO_GROUPS = 32
#: Target types whose files have an entry point and sections: PE, ELF, Mach-O.
EXECUTABLE_TARGETS = (1, 6, 9)


#: libclamav's ``CLI_MTARGETS``: target types 0..14 load, others are skipped quietly.
TARGET_TYPES = 15


def _c_atoi32(digits: str) -> int:
    """C's ``atoi`` on a digit string, as glibc does it: ``strtol`` (saturating at 2**63 - 1)
    truncated to a 32-bit ``int``. Empty text is 0."""
    value = min(int(digits or "0"), 2**63 - 1) & 0xFFFF_FFFF
    return value - 2**32 if value >= 2**31 else value


def _c_atoi(digits: str) -> int:
    """An offset number as libclamav keeps it: ``atoi`` (glibc: ``strtol`` saturating at
    2**63 - 1) stored in a ``uint32_t``, so modulo 2**32 (empty text is 0). Measured on clamscan
    1.4.6: 4294967296 is 0, 4294967298 is 2, 99999999999999999999 is 4294967295."""
    return _c_atoi32(digits) & MAX_OFFSET


def _parse_offset(text: str, target: int) -> tuple[Offset, str | None]:
    """An offset field, as ``cli_caloff`` decodes it: the offset, and why it is not applied (None:
    it is). Raises ``ValueError`` with ClamAV's reason where ``cli_caloff`` refuses the line."""
    if text == "*":
        return Offset("any"), None
    if len(text) > MAX_OFFSET_TEXT:
        raise ValueError("Offset string too long")
    head, comma, shift_text = text.partition(",")
    if comma and not _DIGITS.fullmatch(shift_text):
        raise ValueError(f"Invalid offset shift value {shift_text!r}")
    shift = _c_atoi(shift_text)
    kind, start = "", 0
    if head.startswith(("EP+", "EP-")) or head.startswith("SL+"):
        if not _DIGITS.fullmatch(head[3:]):
            raise ValueError(f"Invalid offset value {head[3:]!r}")
        kind = "executable"
    elif head.startswith("SE"):
        if not _DIGITS.fullmatch(head[2:]):
            raise ValueError(f"Invalid section number {head[2:]!r}")
        kind = "executable"
    elif head.startswith("S"):
        if not _SECTION.match(head):
            raise ValueError(f"Invalid offset string {head!r}")
        kind = "executable"
    elif head.startswith("EOF-"):
        if not _DIGITS.fullmatch(head[4:]):
            raise ValueError(f"Invalid offset value {head[4:]!r}")
        kind, start = "eof", _c_atoi(head[4:])
    elif head.startswith("VI"):  # the PE version information; anything may follow
        kind = "executable"
    elif "$" in head:
        macro = _MACRO.match(head)
        if macro is None:
            raise ValueError(f"Invalid macro($) in offset: {head}")
        group = int(macro["group"])
        if macro["sign"] == "-" and group:
            group = 2**32 - group  # %u reads a negative number modulo 2**32
        if group >= MAX_MACRO_GROUPS:
            raise ValueError(f"at most {MAX_MACRO_GROUPS} macro groups supported")
        kind = "macro"
    else:
        if not _DIGITS.fullmatch(head):
            raise ValueError(f"Invalid offset value {head!r}")
        kind, start = "absolute", _c_atoi(head)
        if start == CLI_OFF_ANY:  # cli_caloff's sentinel: an absolute 4294967295 is '*'
            kind = "any"
    if kind == "executable" and target not in EXECUTABLE_TARGETS:
        raise ValueError(f"Invalid offset type for target {target}")
    offset = Offset(kind, start, shift, text)
    if kind == "macro":
        return offset, "a macro offset ($n$) needs ClamAV's logical-signature macro groups"
    return offset, None


def _body(text: str, column: int, source: str, line: int) -> tuple[Part, ...]:
    try:
        return parse_body(text)
    except BodyError as error:
        raise DatabaseError(source, line, column + error.column, error.message) from None


def _never_matches(parts: tuple[Part, ...], text: str = "") -> str | None:
    """Why a body that clamscan loads can never match (a range ``{n-m}`` with 0 < m < n), or
    matches in clamscan only as its ``text`` lies in the data (``overfull_alternation``)."""
    if overfull_alternation(text):
        return (f"an alternation of more than {MAX_BYTE_ALTERNATIVES} single bytes (clamscan's "
                "prefilter wraps its size; docs/SIGNATURES.md)")
    for part in parts:
        if part.gap_max is not None and part.gap_max < part.gap_min:
            return (f"range {{{part.gap_min}-{part.gap_max}}} ends before it starts (clamscan "
                    "never matches it)")
    return None


def _parse_db_line(text: str, source: str, line: int) -> Signature | None:
    """``Name=HEXBODY``: the name is everything before the first ``=``. A body that starts with
    ``=`` (``Name==...``) makes libclamav skip the line quietly: None."""
    raw_name, equals, body = text.partition("=")
    if not equals:
        raise DatabaseError(source, line, 1, "expected 'Name=HexSignature'")
    if body.startswith("="):
        return None
    name = clam_name(raw_name, source, line)
    parts = _body(body, len(raw_name) + 2, source, line)
    return Signature(name, line, TARGET_ANY, Offset("any"), parts, _never_matches(parts, body),
                     source)


def _parse_ndb_line(text: str, source: str, line: int) -> Signature | None:
    """``Name:TargetType:Offset:HEXBODY[:MinFL[:MaxFL]]``; None when FLEVEL excludes the line."""
    fields = text.split(":")
    if not 4 <= len(fields) <= 6:
        message = f"expected 4 to 6 ':'-separated fields, got {len(fields)}"
        raise DatabaseError(source, line, 1, message)
    columns = [1]
    for field in fields[:-1]:
        columns.append(columns[-1] + len(field) + 1)
    raw_name, target_text, offset_text, body_text = fields[:4]
    # In cli_loadndb's order: each FLEVEL is checked, then used (a line for another level is
    # skipped quietly, before its later fields are looked at), then the target type (one out of
    # range skipped quietly too), then the name, offset and body.
    for index in (4, 5):
        if len(fields) > index:
            if not _DIGITS.fullmatch(fields[index]):
                raise DatabaseError(source, line, columns[index], "FLEVEL must be a number")
            level = _c_atoi32(fields[index]) & 0xFFFF_FFFF  # compared as unsigned
            if (level > FLEVEL) if index == 4 else (level < FLEVEL):
                return None
    if target_text != "*" and not _DIGITS.fullmatch(target_text):
        raise DatabaseError(source, line, columns[1], f"bad target type {target_text!r}")
    target = 0 if target_text == "*" else _c_atoi32(target_text)
    if not 0 <= target < TARGET_TYPES:
        return None
    name = clam_name(raw_name, source, line)
    try:
        offset, reason = _parse_offset(offset_text, target)
    except ValueError as error:
        raise DatabaseError(source, line, columns[2], str(error)) from None
    parts = _body(body_text, columns[3], source, line)
    reason = reason or _never_matches(parts, body_text)
    if target != TARGET_ANY:
        reason = f"target type {target} needs ClamAV's file typing"
    return Signature(name, line, target, offset, parts, reason, source)


_ANYWHERE = Offset("any")


def anywhere() -> Offset:
    """The one ``Offset`` of every plain literal anywhere (``*``), shared by their signatures."""
    return _ANYWHERE

# The line that is a plain literal anywhere in any file (all of rfxn.ndb but one line), parsed
# without splitting fields: a name (printable, no ':', not a '#' comment) and at least 3 hex bytes.
# What it accepts, the general path accepts with the same result (tests/scanner/test_signatures.py).
_PLAIN_NDB_LINE = re.compile(rb"([\x21\x22\x24-\x39\x3b-\x7e][\x21-\x39\x3b-\x7e]*):0:\*:"
                             rb"((?:[0-9a-fA-F]{2}){3,})\r?")


def plain_signature(plain: re.Match[bytes], line: int, source: str) -> Signature:
    """The ``Signature`` of a line ``_PLAIN_NDB_LINE`` matched (name, then the hex body)."""
    body = (Part(0, 0, ((Literal(binascii.unhexlify(plain[2])),),)),)
    return Signature(plain[1].decode("latin-1"), line, TARGET_ANY, _ANYWHERE, body, source=source)


def parse_database(data: bytes, *, kind: str, source: str) -> list[Signature]:
    """Parse a whole ``.db`` or ``.ndb`` database; one bad line refuses it, as ClamAV does."""
    if kind not in KINDS:
        raise DatabaseError(source, 0, 0, f"unknown database kind {kind!r} (expected db or ndb)")
    if len(data) > MAX_DATABASE_BYTES:
        raise DatabaseError(source, 0, 0, f"database larger than {MAX_DATABASE_BYTES} bytes")
    signatures: list[Signature] = []
    elements = 0
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line starts no line
    if not lines:  # a file of comments loads (no signatures); one with no line at all does not
        raise DatabaseError(source, 0, 0, "Empty database file")
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_LENGTH:
            raise DatabaseError(source, number, 0, f"line longer than {MAX_LINE_LENGTH} bytes")
        raw = c_line(raw)
        plain = _PLAIN_NDB_LINE.fullmatch(raw) if kind == "ndb" else None
        if plain is None:
            text = raw.decode("latin-1").rstrip("\r")
            if text.startswith("#"):
                continue
            if not text:  # libclamav refuses a database with an empty line
                raise DatabaseError(source, number, 1, "empty line")
        if len(signatures) >= MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {MAX_SIGNATURES} signatures")
        # Each signature costs at most MAX_SIGNATURE_ELEMENTS, so the total is checked in time.
        if elements > MAX_DATABASE_ELEMENTS:
            raise DatabaseError(source, number, 0, f"more than {MAX_DATABASE_ELEMENTS} elements")
        if plain is not None:  # "Name:0:*:HEX", nearly every real line: no general machinery
            signatures.append(plain_signature(plain, number, source))
            elements += 1
            continue
        if kind == "db":
            signature: Signature | None = _parse_db_line(text, source, number)
        else:
            signature = _parse_ndb_line(text, source, number)
        if signature is not None:
            signatures.append(signature)
            elements += sum(len(v) for part in signature.parts for v in part.variants)
    return signatures
