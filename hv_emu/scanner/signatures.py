"""ClamAV body-signature databases (``.db`` and ``.ndb``): lines, fields and whole files.

Models: the two text formats ClamAV uses for byte-pattern ("body") signatures. A ``.db`` line is
``Name=HEXBODY``; an ``.ndb`` line is ``Name:TargetType:Offset:HEXBODY[:MinFL[:MaxFL]]``. Each line
becomes a ``Signature``: its name, target type, offset, and its body parsed by ``body.py`` into
ordered parts.

Follows: ClamAV's signature manual (``BodySignatureFormat.md``, ``ExtendedSignatures.md``) and the
loader rules of libclamav 1.4 (``readdb.c``): ``#`` comments, 4-6 ``.ndb`` fields, numeric
FLEVELs (lines for another functionality level skipped quietly), one bad line refuses the whole
database, and a database without signatures is refused ("Empty database file").

Leaves out: the body constructs ``body.py`` refuses. Accepted but recorded as not applied
(``Signature.not_applied``): target types other than 0 (they need ClamAV's file typing; so do
their ``EP``/``Sx``/``SEx``/``SL`` offsets, which ClamAV refuses on other types). ``EOF-n``
offsets are parsed; they can only match where the length is known (one-shot scans, not a disk
stream).

Guest controls: everything. A database may arrive from the guest as a signature update, so the
parser bounds the input size, line length and signature count (and ``body.py`` each body's
expansion) before it allocates, and raises only ``DatabaseError``.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.body import (
    MAX_FIXED_SKIP,
    MAX_PARTS,
    MAX_SIGNATURE_ELEMENTS,
    MAX_VARIANTS,
    Anchor,
    BodyError,
    ByteClass,
    Choice,
    Element,
    Literal,
    Part,
    Variant,
    parse_body,
)

# The pattern model and the body limits are re-exported: callers see one signature module.
__all__ = [
    "FLEVEL", "KINDS", "MAX_DATABASE_BYTES", "MAX_DATABASE_ELEMENTS", "MAX_FIXED_SKIP",
    "MAX_LINE_LENGTH", "MAX_OFFSET", "MAX_PARTS", "MAX_SIGNATURES", "MAX_SIGNATURE_ELEMENTS",
    "MAX_VARIANTS", "TARGET_ANY", "Anchor", "ByteClass", "Choice", "Element", "Literal", "Offset",
    "Part", "Signature", "Variant", "load_database_file", "parse_database",
]

# Bounds on hostile input, checked before the work they limit.
MAX_DATABASE_BYTES = 64 * 1024 * 1024
MAX_LINE_LENGTH = 64 * 1024  # ClamAV's longest official bodies are a few thousand hex digits
MAX_SIGNATURES = 500_000
MAX_DATABASE_ELEMENTS = 8_000_000
MAX_OFFSET = 2**32 - 1
#: The functionality level hv-emu answers to in ``.ndb`` MinFL/MaxFL fields: clamscan 1.4.6's
#: (measured: a line with MinFL 216 loads, 217 is skipped).
FLEVEL = 216

KINDS = ("db", "ndb")
TARGET_ANY = 0


@dataclass(frozen=True, slots=True)
class Offset:
    """Where a body may start: ``any`` (``*``), ``absolute`` (``n[,shift]``: from n to n+shift),
    ``eof`` (``EOF-n[,shift]``: ``start`` is n, counted back from the end) or ``executable``
    (``EP``, ``Sx``, ``SEx``, ``SL``: never placed, as hv-emu does not parse executables)."""

    kind: str
    start: int = 0
    shift: int = 0
    text: str = "*"

    def allows(self, position: int, length: int | None) -> bool:
        """Whether a body may start at ``position`` of data ``length`` bytes long (None: unknown,
        as on a disk stream)."""
        if self.kind == "absolute":
            return self.start <= position <= self.start + self.shift
        if self.kind == "eof":
            return length is not None and 0 <= position - (length - self.start) <= self.shift
        return self.kind == "any"


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

_NUMBER = re.compile(r"[0-9]{1,10}")
_SHIFT = r"(?:,(?P<shift>[0-9]{1,10}))?"
_ABSOLUTE = re.compile(r"(?P<start>[0-9]{1,10})" + _SHIFT)
_EOF = re.compile(r"EOF-(?P<start>[0-9]{1,10})" + _SHIFT)
# Offsets from an executable's entry point or sections (ClamAV's EP+-n, Sx+n, SL+n, SEx).
_EXECUTABLE = re.compile(r"(?:EP[+-][0-9]{1,10}|(?:S[0-9]{1,5}|SL)\+[0-9]{1,10})(?:,[0-9]{1,10})?"
                         r"|SE[0-9]{1,5}")
#: Target types whose files have an entry point and sections: PE, ELF, Mach-O.
EXECUTABLE_TARGETS = (1, 6, 9)


def _parse_offset(text: str) -> Offset:
    if text == "*":
        return Offset("any")
    for kind, grammar in (("absolute", _ABSOLUTE), ("eof", _EOF)):
        if found := grammar.fullmatch(text):
            start, shift = int(found["start"]), int(found["shift"] or 0)
            if start > MAX_OFFSET or shift > MAX_OFFSET:
                raise ValueError(f"offset {text!r} is out of range")
            return Offset(kind, start, shift, text)
    if _EXECUTABLE.fullmatch(text):
        return Offset("executable", text=text)
    raise ValueError(f"bad offset {text!r}")


_NAME = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space


def _check_name(name: str, source: str, line: int) -> None:
    if not name:
        raise DatabaseError(source, line, 1, "empty signature name")
    if _NAME.fullmatch(name):
        return
    for column, char in enumerate(name, start=1):  # find the culprit for the message
        if not "\x21" <= char <= "\x7e":
            raise DatabaseError(source, line, column, f"bad character {char!r} in signature name")


def _body(text: str, column: int, source: str, line: int) -> tuple[Part, ...]:
    try:
        return parse_body(text)
    except BodyError as error:
        raise DatabaseError(source, line, column + error.column, error.message) from None


def _parse_db_line(text: str, source: str, line: int) -> Signature:
    """``Name=HEXBODY``: the name is everything before the first ``=``."""
    name, equals, body = text.partition("=")
    if not equals:
        raise DatabaseError(source, line, 1, "expected 'Name=HexSignature'")
    _check_name(name, source, line)
    parts = _body(body, len(name) + 2, source, line)
    return Signature(name, line, TARGET_ANY, Offset("any"), parts, source=source)


def _parse_ndb_line(text: str, source: str, line: int) -> Signature | None:
    """``Name:TargetType:Offset:HEXBODY[:MinFL[:MaxFL]]``; None when FLEVEL excludes the line."""
    fields = text.split(":")
    if not 4 <= len(fields) <= 6:
        message = f"expected 4 to 6 ':'-separated fields, got {len(fields)}"
        raise DatabaseError(source, line, 1, message)
    columns = [1]
    for field in fields[:-1]:
        columns.append(columns[-1] + len(field) + 1)
    name, target_text, offset_text, body_text = fields[:4]
    _check_name(name, source, line)
    for index in (4, 5):
        if len(fields) > index and not _NUMBER.fullmatch(fields[index]):
            raise DatabaseError(source, line, columns[index], "FLEVEL must be a number")
    # ClamAV skips, quietly, lines meant for another functionality level.
    if len(fields) > 4 and int(fields[4]) > FLEVEL:
        return None
    if len(fields) > 5 and int(fields[5]) < FLEVEL:
        return None
    if target_text == "*":
        target_text = "0"
    if not _NUMBER.fullmatch(target_text):
        raise DatabaseError(source, line, columns[1], f"bad target type {target_text!r}")
    try:
        offset = _parse_offset(offset_text)
    except ValueError as error:
        raise DatabaseError(source, line, columns[2], str(error)) from None
    target = int(target_text)
    if offset.kind == "executable" and target not in EXECUTABLE_TARGETS:
        raise DatabaseError(source, line, columns[2], f"Invalid offset type for target {target}")
    parts = _body(body_text, columns[3], source, line)
    reason = None if target == TARGET_ANY else f"target type {target} needs ClamAV's file typing"
    return Signature(name, line, target, offset, parts, reason, source)


_ANYWHERE = Offset("any")
# The line that is a plain literal anywhere in any file (all of rfxn.ndb but one line), parsed
# without splitting fields: a name (printable, no ':', not a '#' comment) and at least 3 hex bytes.
# What it accepts, the general path accepts with the same result (tests/scanner/test_signatures.py).
_PLAIN_NDB_LINE = re.compile(rb"([\x21\x22\x24-\x39\x3b-\x7e][\x21-\x39\x3b-\x7e]*):0:\*:"
                             rb"((?:[0-9a-fA-F]{2}){3,})\r?")


def parse_database(data: bytes, *, kind: str, source: str) -> list[Signature]:
    """Parse a whole ``.db`` or ``.ndb`` database; one bad line refuses it, as ClamAV does."""
    if kind not in KINDS:
        raise DatabaseError(source, 0, 0, f"unknown database kind {kind!r} (expected db or ndb)")
    if len(data) > MAX_DATABASE_BYTES:
        raise DatabaseError(source, 0, 0, f"database larger than {MAX_DATABASE_BYTES} bytes")
    signatures: list[Signature] = []
    saw_line = False
    elements = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if len(raw) > MAX_LINE_LENGTH:
            raise DatabaseError(source, number, 0, f"line longer than {MAX_LINE_LENGTH} bytes")
        plain = _PLAIN_NDB_LINE.fullmatch(raw) if kind == "ndb" else None
        if plain is None:
            text = raw.decode("latin-1").rstrip("\r")
            if not text.strip() or text.startswith("#"):
                continue
        saw_line = True
        if len(signatures) >= MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {MAX_SIGNATURES} signatures")
        # Each signature costs at most MAX_SIGNATURE_ELEMENTS, so the total is checked in time.
        if elements > MAX_DATABASE_ELEMENTS:
            raise DatabaseError(source, number, 0, f"more than {MAX_DATABASE_ELEMENTS} elements")
        if plain is not None:  # "Name:0:*:HEX", nearly every real line: no general machinery
            body = (Part(0, 0, ((Literal(binascii.unhexlify(plain[2])),),)),)
            name = plain[1].decode("latin-1")
            signatures.append(Signature(name, number, TARGET_ANY, _ANYWHERE, body, source=source))
            elements += 1
            continue
        if kind == "db":
            signature: Signature | None = _parse_db_line(text, source, number)
        else:
            signature = _parse_ndb_line(text, source, number)
        if signature is not None:
            signatures.append(signature)
            elements += sum(len(v) for part in signature.parts for v in part.variants)
    if not saw_line:
        raise DatabaseError(source, 0, 0, "Empty database file")
    return signatures


def load_database_file(path: Path) -> tuple[bytes, str]:
    """Read a database file; its kind comes from the suffix (``.db`` or ``.ndb``)."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in KINDS:
        raise ConfigError(f"{path}: unknown signature database suffix {path.suffix!r} "
                          "(expected .db or .ndb)")
    try:
        size = path.stat().st_size
        if size > MAX_DATABASE_BYTES:
            raise ConfigError(f"{path}: database larger than {MAX_DATABASE_BYTES} bytes")
        return path.read_bytes(), kind
    except OSError as error:
        raise ConfigError(f"{path}: cannot read signature database: {error.strerror}") from None
