"""ClamAV body-signature databases (``.db`` and ``.ndb``) parsed into a pattern model.

Models: the two text formats ClamAV uses for byte-pattern ("body") signatures. A ``.db`` line is
``Name=HEXBODY``; an ``.ndb`` line is ``Name:TargetType:Offset:HEXBODY[:MinFL[:MaxFL]]``. A body is
cut into ordered *parts* at ``*``, ``{-n}``, ``{n-}``, ``{n-m}`` and ``{n}`` with n >= 128, each
with the gap allowed before it. A part is one or more fixed-length *variants* (more than one when
it holds generic alternations), sequences of elements (a static byte run, a one-byte class, a
choice among equal-length strings) that the engine finds by Aho-Corasick on the longest static run
and then verifies, as libclamav's ``matcher-ac.c`` does.

Follows: ClamAV's signature manual (``BodySignatureFormat.md``, ``ExtendedSignatures.md``) and the
loader rules of libclamav 1.4 (``readdb.c``, ``cli_ac_addsig``): ``#`` comments, 4-6 ``.ndb``
fields, numeric FLEVELs, bodies of at least 2 bytes (3 for plain literals), a static run of at least
2 bytes in every body, no unbounded wildcards inside alternations, one bad line refuses the whole
database, and a database without signatures is refused ("Empty database file").

Leaves out (refused with a ``DatabaseError`` naming the construct, never half-matched): anchored
byte ranges ``[x-y]`` (clamscan 1.4.6 is inconsistent on the left-anchored form: ``4a[0-32]4b4c4d``
misses distances 0, 1 and 32, yet ``41[1-3]424344`` finds 1), the boundary tokens ``(B)``,
``(L)``, ``(W)``, and ranges ``{n-m}`` with m < n (which clamscan accepts). Accepted but
recorded as not applied (``Signature.not_applied``): target types other than 0 (they need
ClamAV's file typing; so do their ``EP``/``Sx``/``SEx``/``SL`` offsets, which ClamAV refuses on
other types). ``EOF-n`` offsets are parsed; they can only match where the length is known
(one-shot scans, not a disk stream).

Guest controls: everything. A database may arrive from the guest as a signature update, so the
parser bounds the input size, line length, signature count, parts, alternation expansion and the
elements a body expands to before it allocates, and raises only ``DatabaseError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hv_emu.errors import ConfigError, DatabaseError

# Bounds on hostile input, checked before the work they limit.
MAX_DATABASE_BYTES = 64 * 1024 * 1024
MAX_LINE_LENGTH = 64 * 1024  # ClamAV's longest official bodies are a few thousand hex digits
MAX_SIGNATURES = 500_000
MAX_VARIANTS = 64  # per part, after expanding generic alternations
MAX_PARTS = 64
# Elements (byte runs, classes, choices) summed over every variant: '{127}' is 127 elements and
# alternations multiply variants, so a body can cost far more than its text.
MAX_SIGNATURE_ELEMENTS = 65_536
MAX_DATABASE_ELEMENTS = 8_000_000
MAX_FIXED_SKIP = 127  # {n} with n < 128 is n x '??' in libclamav; larger n splits the body
MAX_OFFSET = 2**32 - 1
#: The functionality level hv-emu answers to in ``.ndb`` MinFL/MaxFL fields: clamscan 1.4.6's
#: (measured: a line with MinFL 216 loads, 217 is skipped).
FLEVEL = 216

KINDS = ("db", "ndb")
TARGET_ANY = 0
_HEX = "0123456789abcdefABCDEF"
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2})+")


# --------------------------------------------------------------------------- the pattern model


@dataclass(frozen=True)
class Literal:
    """A run of static bytes."""

    data: bytes

    @property
    def width(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ByteClass:
    """One byte out of a set: ``??``, a nibble ``a?``/``?a`` or a one-byte alternation."""

    allowed: frozenset[int]

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True)
class Choice:
    """One of several equal-length strings, ``(aabb|ccdd)``, or none of them, ``!(aabb|ccdd)``."""

    options: frozenset[bytes]
    negated: bool
    width: int


Element = Literal | ByteClass | Choice
Variant = tuple[Element, ...]


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Part:
    """A fixed-length piece of a body, as its variants. ``*`` and ranges split a body into parts;
    ``gap_min``..``gap_max`` bytes lie between the previous part's end and this part's start
    (``gap_max`` None: unbounded). The first part has the gap (0, 0)."""

    gap_min: int
    gap_max: int | None
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class Signature:
    """One database line: a name, where it applies, and its body as ordered parts."""

    name: str
    line: int
    target_type: int
    offset: Offset
    parts: tuple[Part, ...]
    not_applied: str | None = None  # why hv-emu accepts but never matches this signature


# --------------------------------------------------------------------------- body syntax


class _BodyError(Exception):
    """A body syntax error at ``column`` (0-based in the body); turned into DatabaseError."""

    def __init__(self, column: int, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


_ANY = ByteClass(frozenset(range(256)))
# Nibble wildcards 'h?' and '?h': 32 classes, built once and shared.
_HIGH_NIBBLE = [ByteClass(frozenset(range(h << 4, (h + 1) << 4))) for h in range(16)]
_LOW_NIBBLE = [ByteClass(frozenset(range(low, 256, 16))) for low in range(16)]


class _Budget:
    """Elements a signature may still allocate; charged before each allocation."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, elements: int, column: int) -> None:
        self.left -= elements
        if self.left < 0:
            raise _BodyError(column, f"body expands to more than {MAX_SIGNATURE_ELEMENTS} elements")

_UNBOUNDED = "Alternative match cannot contain unbounded wildcards"
# {n} (n < 128 stays inside a part), {-n}, {n-}, {n-m}: the last three, and {n} with n >= 128,
# split the body into parts.
_MAY_SPLIT = re.compile(r"[(*{]")
_RANGE = re.compile(r"\{(?:(?P<exact>[0-9]{1,9})|-(?P<most>[0-9]{1,9})|(?P<least>[0-9]{1,9})-"
                    r"|(?P<low>[0-9]{1,9})-(?P<high>[0-9]{1,9}))\}")


def _nibble_class(pair: str, at: int) -> ByteClass | Literal:
    """Decode one two-character byte token: ``hh``, ``??``, ``h?`` or ``?h``."""
    high, low = pair[0], pair[1]
    if high not in _HEX + "?" or low not in _HEX + "?":
        bad = at if high not in _HEX + "?" else at + 1
        raise _BodyError(bad, f"bad hex digit {pair[bad - at]!r}")
    if high != "?" and low != "?":
        return Literal(bytes([int(pair, 16)]))
    if high == "?" and low == "?":
        return _ANY
    if low == "?":
        return _HIGH_NIBBLE[int(high, 16)]
    return _LOW_NIBBLE[int(low, 16)]


def _parse_fixed(text: str, base: int, budget: _Budget, *, in_alternative: bool) -> list[Variant]:
    """Parse a body (or one alternative) into its fixed-length variants; ``base`` is the column."""
    variants: list[list[Element]] = [[]]
    i = 0
    while i < len(text):
        c = text[i]
        at = base + i
        budget.spend(len(variants), at)  # one element per variant, for most tokens
        run = _HEX_RUN.match(text, i)
        if run:  # the common case: a run of plain bytes, decoded at once
            for variant in variants:
                variant.append(Literal(bytes.fromhex(run.group())))
            i = run.end()
        elif c in _HEX or c == "?":
            if i + 1 >= len(text):
                raise _BodyError(at, "odd number of hex digits")
            for variant in variants:
                variant.append(_nibble_class(text[i : i + 2], at))
            i += 2
        elif c == "{":
            close = text.find("}", i)
            if close < 0:
                raise _BodyError(at, "unterminated '{'")
            inner = text[i + 1 : close]
            if not inner.isdigit() or len(inner) > 9 or int(inner) > MAX_FIXED_SKIP:
                raise _BodyError(at, _UNBOUNDED if in_alternative else f"bad range '{{{inner}}}'")
            budget.spend(len(variants) * int(inner), at)
            for variant in variants:
                variant.extend([_ANY] * int(inner))
            i = close + 1
        elif c == "*":  # at the top level, '*' has already split the body into parts
            raise _BodyError(at, _UNBOUNDED)
        elif c == "[":
            raise _BodyError(at, "anchored byte range '[x-y]' is not supported by hv-emu")
        elif c in "(!" and not in_alternative:
            negated = c == "!"
            if negated and text[i + 1 : i + 2] != "(":
                raise _BodyError(at, "'!' must be followed by '('")
            opening = i + 1 if negated else i
            close = text.find(")", opening)
            if close < 0:
                raise _BodyError(at, "unterminated '('")
            element_variants = _parse_alternation(text[opening + 1 : close], base + opening + 1,
                                                  negated, budget)
            if len(variants) * len(element_variants) > MAX_VARIANTS:
                raise _BodyError(at, f"alternations expand to more than {MAX_VARIANTS} variants")
            # Each new variant copies an old one and one alternative.
            longest = max(map(len, variants)) + max(map(len, element_variants))
            budget.spend(len(variants) * len(element_variants) * longest, at)
            variants = [v + list(e) for v in variants for e in element_variants]
            i = close + 1
        else:
            what = "bad hex digit" if c.isalnum() else "unexpected character"
            raise _BodyError(at, f"{what} {c!r}")
    return [tuple(v) for v in variants]


def _parse_alternation(inner: str, base: int, negated: bool, budget: _Budget) -> list[Variant]:
    """``(a|b|...)``: a byte class, a choice of equal-length strings, or generic alternatives."""
    if inner in ("B", "L", "W"):
        raise _BodyError(base, f"boundary '({inner})' is not supported by hv-emu")
    alternatives: list[list[Variant]] = []
    column = base
    for text in inner.split("|"):
        if not text:
            raise _BodyError(column, "empty alternative")
        alternatives.append(_parse_fixed(text, column, budget, in_alternative=True))
        column += len(text) + 1
    plain = [a[0][0].data for a in alternatives
             if len(a) == 1 and len(a[0]) == 1 and isinstance(a[0][0], Literal)]
    # Plain hex alternatives of one length become one element: a byte class or a string choice.
    if len(plain) == len(alternatives) and len({len(p) for p in plain}) == 1:
        if len(plain[0]) == 1:
            chosen = frozenset(p[0] for p in plain)
            return [(ByteClass(frozenset(range(256)) - chosen if negated else chosen),)]
        return [(Choice(frozenset(plain), negated, len(plain[0])),)]
    if negated:
        raise _BodyError(base, "generic alternatives (mixed lengths, wildcards) cannot be negated")
    flattened = [variant for alternative in alternatives for variant in alternative]
    if len(flattened) > MAX_VARIANTS:
        raise _BodyError(base, f"alternations expand to more than {MAX_VARIANTS} variants")
    return flattened


def _merge_literals(variant: Variant) -> Variant:
    """Join adjacent static bytes into runs, the unit the Aho-Corasick trie is keyed on."""
    merged: list[Element] = []
    for element in variant:
        if merged and isinstance(element, Literal) and isinstance(merged[-1], Literal):
            merged[-1] = Literal(merged[-1].data + element.data)
        else:
            merged.append(element)
    return tuple(merged)


def _split_parts(text: str) -> list[tuple[int, str, int, int | None]]:
    """Cut a body at ``*`` and ranges: (column, text, gap_min, gap_max) per part."""
    pieces: list[tuple[int, str, int, int | None]] = []
    gap: tuple[int, int | None] = (0, 0)
    begin = i = 0
    while hit := _MAY_SPLIT.search(text, i):
        i = hit.start()
        found: tuple[int, int | None]
        if text[i] == "(":  # skip alternations: a '*' inside one is an error, not a split
            close = text.find(")", i)
            i = len(text) if close < 0 else close + 1
            continue
        if text[i] == "*":
            found, end = (0, None), i + 1
        elif text[i] == "{" and (m := _RANGE.match(text, i)):
            if m["exact"] is not None and int(m["exact"]) <= MAX_FIXED_SKIP:
                i = m.end()
                continue
            low = m["exact"] or m["least"] or m["low"] or "0"
            high = m["exact"] or m["most"] or m["high"]
            found, end = (int(low), None if high is None else int(high)), m.end()
            if high is not None and int(high) < int(low):
                raise _BodyError(i, f"range {m.group()} ends before it starts")
        else:  # a malformed '{', reported by _parse_fixed
            i += 1
            continue
        pieces.append((begin, text[begin:i], *gap))
        if len(pieces) >= MAX_PARTS:
            raise _BodyError(i, f"more than {MAX_PARTS} parts")
        gap, begin, i = found, end, end
    pieces.append((begin, text[begin:], *gap))
    return pieces


def parse_body(text: str) -> tuple[Part, ...]:
    """Parse a hex body and apply ClamAV's length rules; raises ``_BodyError``."""
    pieces = _split_parts(text)
    budget = _Budget(MAX_SIGNATURE_ELEMENTS)
    parts = []
    for column, piece, gap_min, gap_max in pieces:
        if not piece:
            raise _BodyError(column, "empty part: '*' or a range at an end or after another")
        fixed = _parse_fixed(piece, column, budget, in_alternative=False)
        variants = [_merge_literals(v) for v in fixed]
        for variant in variants:
            width = sum(element.width for element in variant)
            is_plain = len(variant) == 1 and isinstance(variant[0], Literal)
            if width < 2 or (is_plain and width < 3 and len(pieces) == 1):
                raise _BodyError(column, f"body of {width} byte(s) is too short")
            if not any(isinstance(e, Literal) and e.width >= 2 for e in variant):
                raise _BodyError(column, "Can't find a static subpattern of length 2")
        parts.append(Part(gap_min, gap_max, tuple(variants)))
    return tuple(parts)


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


def _check_name(name: str, source: str, line: int) -> None:
    if not name:
        raise DatabaseError(source, line, 1, "empty signature name")
    for column, char in enumerate(name, start=1):
        if not "\x21" <= char <= "\x7e":
            raise DatabaseError(source, line, column, f"bad character {char!r} in signature name")


def _body(text: str, column: int, source: str, line: int) -> tuple[Part, ...]:
    try:
        return parse_body(text)
    except _BodyError as error:
        raise DatabaseError(source, line, column + error.column, error.message) from None


def _parse_db_line(text: str, source: str, line: int) -> Signature:
    """``Name=HEXBODY``: the name is everything before the first ``=``."""
    name, equals, body = text.partition("=")
    if not equals:
        raise DatabaseError(source, line, 1, "expected 'Name=HexSignature'")
    _check_name(name, source, line)
    parts = _body(body, len(name) + 2, source, line)
    return Signature(name, line, TARGET_ANY, Offset("any"), parts)


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
    return Signature(name, line, target, offset, parts, reason)


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
        text = raw.decode("latin-1").rstrip("\r")
        if not text.strip() or text.startswith("#"):
            continue
        saw_line = True
        if len(signatures) >= MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {MAX_SIGNATURES} signatures")
        # Each signature costs at most MAX_SIGNATURE_ELEMENTS, so the total is checked in time.
        if elements > MAX_DATABASE_ELEMENTS:
            raise DatabaseError(source, number, 0, f"more than {MAX_DATABASE_ELEMENTS} elements")
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
