"""The pattern a ClamAV body is parsed into, and the same pattern without regard to case.

Models: what libclamav's loader turns a body into (``cli_ac_patt`` with its ``special`` table):
ordered *parts*, each one or more fixed-length *variants*, each a sequence of elements (a static
byte run, a one-byte class, a choice among equal-length strings, a case-folded run), with the gap
allowed before the part, its anchored bytes (``aa[x-y]``) and its edge boundaries (``(B)``,
``(L)``, ``(W)``); and ``fold_case``, the ``::i`` modifier of a logical subsignature applied to a
parsed pattern.

Follows: ``matcher-ac.c`` of libclamav 1.4: the ``boundary[]`` table (``WORD_BEFORE``,
``WORD_AFTER``), ``AC_CH_MAXDIST`` (``MAX_ANCHOR_DISTANCE``), and which elements ``::i`` folds
(static bytes and alternations; ``??`` and nibbles compare the raw byte, measured on clamscan
1.4.6). The grammar that builds these values is ``body.py``'s; matching them is ``engine.py``'s.

Leaves out: nothing of the model the grammar accepts; values are plain frozen data.

Guest controls: the values, through a database's bodies (an update); their sizes are bounded by
``body.py`` before they are built.
"""

from __future__ import annotations

from hv_emu.scanner.record import Frozen, setfield


class Literal(Frozen):
    """A run of static bytes."""

    __slots__ = ("data",)
    data: bytes

    def __init__(self, data: bytes) -> None:
        setfield(self, "data", data)

    @property
    def width(self) -> int:
        return len(self.data)


class ByteClass(Frozen):
    """One byte out of a set: ``??``, a nibble ``a?``/``?a``, a one-byte alternation or a
    boundary inside a part. ``not_crlf`` (``!(L)`` inside a part): a CR before an LF fails too."""

    __slots__ = ("allowed", "not_crlf")
    allowed: frozenset[int]
    not_crlf: bool

    def __init__(self, allowed: frozenset[int], not_crlf: bool = False) -> None:
        setfield(self, "allowed", allowed)
        setfield(self, "not_crlf", not_crlf)

    @property
    def width(self) -> int:
        return 1


class Choice(Frozen):
    """One of several equal-length strings, ``(aabb|ccdd)``, or none of them, ``!(aabb|ccdd)``."""

    __slots__ = ("options", "negated", "width", "folded")  # noqa: RUF023 (__init__'s order)
    options: frozenset[bytes]
    negated: bool
    width: int
    folded: bool  # ``::i``: the options are lower-case; the data is lower-cased to compare

    def __init__(
        self, options: frozenset[bytes], negated: bool, width: int, folded: bool = False
    ) -> None:
        setfield(self, "options", options)
        setfield(self, "negated", negated)
        setfield(self, "width", width)
        setfield(self, "folded", folded)


class Folded(Frozen):
    """A run of static bytes matched without regard to ASCII case (a ``.ldb`` subsignature with
    the ``::i`` modifier): ``data`` is lower-case, and the data's bytes are lower-cased (A-Z only,
    as C's ``tolower``) to compare."""

    __slots__ = ("data",)
    data: bytes

    def __init__(self, data: bytes) -> None:
        setfield(self, "data", data)

    @property
    def width(self) -> int:
        return len(self.data)


Element = Literal | ByteClass | Choice | Folded
Variant = tuple[Element, ...]

#: libclamav's ``AC_CH_MAXDIST``: the farthest an anchored byte may lie from its body.
MAX_ANCHOR_DISTANCE = 32


class Anchor(Frozen):
    """An anchored byte, ``aa[nearest-farthest]``: one byte in ``allowed`` lying ``nearest`` to
    ``farthest`` bytes away from the part's body (before its start for a left anchor, after its
    end for a right one)."""

    __slots__ = ("allowed", "nearest", "farthest")  # noqa: RUF023 (__init__'s order)
    allowed: frozenset[int]
    nearest: int
    farthest: int

    def __init__(self, allowed: frozenset[int], nearest: int, farthest: int) -> None:
        setfield(self, "allowed", allowed)
        setfield(self, "nearest", nearest)
        setfield(self, "farthest", farthest)


#: libclamav's ``boundary[]`` table (matcher-ac.c): bytes that end a word before a body (1 or 3),
#: after a body (2 or 3), and either (any non-zero value: ``(B)`` inside a part).
WORD_BEFORE = frozenset(b" -./<@_")
WORD_AFTER = frozenset(b"\n\r \"'-/=>_")
WORD_ANY = WORD_BEFORE | WORD_AFTER
#: C's ``isalnum`` in the "C" locale: what ``(W)`` is not.
ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
LF, CR = 0x0A, 0x0D
BOUNDARY_KINDS = ("B", "L", "W")


class Boundary(Frozen):
    """``(B)``, ``(L)`` or ``(W)`` at a part's edge: a condition on the byte before its start (left;
    never negated) or on the byte(s) after its end (right; ``!(X)`` negates it). The start and the
    end of the data count as boundaries of every kind (for a negated one, as failing)."""

    __slots__ = ("kind", "negated")
    kind: str  # "B", "L" or "W"
    negated: bool

    def __init__(self, kind: str, negated: bool = False) -> None:
        setfield(self, "kind", kind)
        setfield(self, "negated", negated)

    @property
    def reach(self) -> int:
        """Bytes after a part that a right boundary may read: (L) accepts CR LF."""
        return 2 if self.kind == "L" else 1

    def holds_before(self, byte: int | None) -> bool:
        """A left boundary, given the byte before the part (None: the part starts the data)."""
        if byte is None:
            return True
        if self.kind == "B":
            return byte in WORD_BEFORE
        return byte == LF if self.kind == "L" else byte not in ALNUM

    def holds_after(self, following: bytes, ended: bool) -> bool | None:
        """A right boundary, given the bytes after the part (up to ``reach``) and whether the data
        ends after them; None while it cannot be decided yet."""
        if not following:
            verdict: bool | None = True if ended else None
        elif self.kind == "B":
            verdict = following[0] in WORD_AFTER
        elif self.kind == "W":
            verdict = following[0] not in ALNUM
        elif following[0] == LF:
            verdict = True
        elif following[0] != CR:
            verdict = False
        elif len(following) > 1:
            verdict = following[1] == LF
        else:  # a CR: an LF may follow (a CR that ends the data is no line end)
            verdict = False if ended else None
        if verdict is None or not self.negated:
            return verdict
        return not verdict



class Part(Frozen):
    """A fixed-length piece of a body, as its variants. ``*`` and ranges split a body into parts;
    ``gap_min``..``gap_max`` bytes lie between the previous part's end and this part's start
    (``gap_max`` None: unbounded). The first part has the gap (0, 0). ``left`` and ``right`` are
    its anchored bytes, outside the variants."""

    __slots__ = ("gap_min", "gap_max", "variants", "left", "right",  # noqa: RUF023 (__init__'s order)
                 "left_boundary", "right_boundary")  # fmt: skip
    gap_min: int
    gap_max: int | None
    variants: tuple[Variant, ...]
    left: Anchor | None
    right: Anchor | None
    left_boundary: Boundary | None
    right_boundary: Boundary | None

    def __init__(
        self, gap_min: int, gap_max: int | None, variants: tuple[Variant, ...],
        left: Anchor | None = None, right: Anchor | None = None,
        left_boundary: Boundary | None = None, right_boundary: Boundary | None = None,
    ) -> None:  # fmt: skip
        setfield(self, "gap_min", gap_min)
        setfield(self, "gap_max", gap_max)
        setfield(self, "variants", variants)
        setfield(self, "left", left)
        setfield(self, "right", right)
        setfield(self, "left_boundary", left_boundary)
        setfield(self, "right_boundary", right_boundary)


#: Offsets are 32-bit, as libclamav's: an absolute offset's end wraps at 2**32.
MAX_OFFSET = 2**32 - 1


class Offset(Frozen):
    """Where a body may start: ``any`` (``*``), ``absolute`` (``n[,shift]``: from n to n+shift),
    ``eof`` (``EOF-n[,shift]``: ``start`` is n, counted back from the end) or ``executable``
    (``EP``, ``Sx``, ``SEx``, ``SL``: never placed, as hv-emu does not parse executables). Parsed
    by ``signatures.py``; here, beside the patterns, so a stream that checks one imports no
    parser."""

    __slots__ = ("kind", "start", "shift", "text")  # noqa: RUF023 (__init__'s order)
    kind: str  # any, absolute, eof, executable or macro (never placed)
    start: int
    shift: int
    text: str

    def __init__(self, kind: str, start: int = 0, shift: int = 0, text: str = "*") -> None:
        setfield(self, "kind", kind)
        setfield(self, "start", start)
        setfield(self, "shift", shift)
        setfield(self, "text", text)

    def allows(self, position: int, length: int | None) -> bool:
        """Whether a body may start at ``position`` of data ``length`` bytes long (None: unknown,
        as on a disk stream)."""
        if self.kind == "absolute":  # the end wraps at 2**32, as libclamav's uint32_t sum does
            return self.start <= position <= (self.start + self.shift) & MAX_OFFSET
        if self.kind == "eof":
            return length is not None and 0 <= position - (length - self.start) <= self.shift
        return self.kind == "any"


# Shared classes: ``??`` and the nibble wildcards 'h?' and '?h', built once.
ANY = ByteClass(frozenset(range(256)))
HIGH_NIBBLE = [ByteClass(frozenset(range(h << 4, (h + 1) << 4))) for h in range(16)]
LOW_NIBBLE = [ByteClass(frozenset(range(low, 256, 16))) for low in range(16)]


#: The classes ``::i`` leaves as they are: ``??`` and the nibbles compare the raw byte in
#: libclamav (measured on clamscan 1.4.6: ``4?6364::i`` finds "Bcd", ``6?6364::i`` does not).
_RAW_CLASSES = frozenset(id(c) for c in (ANY, *HIGH_NIBBLE, *LOW_NIBBLE))
_UPPER = range(0x41, 0x5B)


def _fold_element(element: Element) -> Element:
    if isinstance(element, Literal):
        if any(byte in _UPPER or byte - 0x20 in _UPPER for byte in element.data):
            return Folded(element.data.lower())
        return element
    if isinstance(element, ByteClass):
        if id(element) in _RAW_CLASSES:
            return element
        closed = set(element.allowed)
        closed |= {b ^ 0x20 for b in element.allowed if b in _UPPER or b - 0x20 in _UPPER}
        return ByteClass(frozenset(closed), element.not_crlf)
    if isinstance(element, Choice):
        return Choice(frozenset(o.lower() for o in element.options), element.negated,
                      element.width, folded=True)
    return element


def fold_case(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """``parts`` matched without regard to ASCII case (``::i``): static bytes and alternations
    fold, ``??`` and nibbles do not (as in libclamav). Anchored bytes stay as written."""
    return tuple(
        Part(p.gap_min, p.gap_max, tuple(tuple(_fold_element(e) for e in v) for v in p.variants),
             p.left, p.right, p.left_boundary, p.right_boundary)
        for p in parts
    )
