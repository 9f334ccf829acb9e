"""The matching program: each applied signature variant as a pattern keyed by its anchor literal.

Models: what libclamav builds from its loaded body signatures for ``matcher-ac.c`` (the trie's
patterns and their ``special`` tables), compiled once per database: each fixed-length variant
of each part of a signature becomes a ``Pattern`` entered in the literal finder under its
*anchor*, its longest static byte run (cut at ``MAX_ANCHOR`` bytes, or ``LARGE_SET_ANCHOR`` in
sets of ``LARGE_SET`` signatures or more; or, for ``hv-emu scan``, ``anchors="rare"``: the run's
``RARE_ANCHOR``-byte window ending on the bytes the database's literals have least; every case
variant of a ``::i`` run's prefix); the
``Program`` groups them by literal and records what a stream must keep (history, widest part,
the gaps of multi-part signatures). ``engine.py`` runs a program over a stream.

Follows: ``cli_ac_addsig`` (libclamav 1.4): the anchor is the longest static run, and the rest
of a variant, with its anchored bytes and boundaries, is verified around a hit.

Leaves out: signatures marked not applied (``signatures.py``): they get no pattern.

Plain lines: ``build_program`` also takes a ``PlainLiteral`` (name, bytes) in place of the
``Signature`` of a line that is a plain literal anywhere (``Name:0:*:HEX``), as ``bulk.py`` hands
an update's lines over without building a ``Signature`` for each; it gives that line's pattern.

Guest controls: the signatures, through updates; a program's size follows the database's, which
``signatures.py`` and ``body.py`` bound.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from hv_emu.scanner.pattern import Folded, Literal
from hv_emu.scanner.record import Frozen, setfield

if TYPE_CHECKING:
    from hv_emu.scanner.logical_match import LogicalTable
    from hv_emu.scanner.pattern import Anchor, Boundary, Part, Variant
    from hv_emu.scanner.signatures import Offset, Signature

#: Longest anchor entered in a literal finder (Hyperscan refuses expressions of a few KiB); the
#: rest of a longer static run is verified like any other element.
MAX_ANCHOR = 1024
#: From this many signatures, anchors are cut to ``LARGE_SET_ANCHOR`` bytes: Hyperscan compiles
#: 100,000 16-64 byte literals about a fifth faster cut to 16, and scans at the same speed
#: (benchmarks/scanner.py; the rest of each literal is verified on a hit, which random and text
#: data almost never give). Smaller sets such as rfxn.ndb keep whole anchors: fewer false hits.
LARGE_SET = 20_000
LARGE_SET_ANCHOR = 16
#: A case-folded run (``::i``) enters the literal finder as every case variant of its longest
#: prefix with at most this many letters (2**3 = 8 literals at most).
FOLDED_ANCHOR_LETTERS = 3
#: How anchors are cut: ``prefix`` (the above: whole up to ``MAX_ANCHOR``, the first
#: ``LARGE_SET_ANCHOR`` bytes in a large set), or ``rare`` (``hv-emu scan``'s, compiled once into
#: its cache): every static run longer than ``RARE_ANCHOR`` bytes enters as its window of that
#: many bytes whose last four bytes are the rarest in the database's own literals
#: (``byte_costs``). Hyperscan's literal matcher filters on a literal's last bytes: with common
#: ones (text's letters and spaces) it confirms candidates all the time, with rare ones seldom.
#: Measured on script-like text: rfxn.ndb 2.2 times as fast as whole anchors, a 25,000-signature
#: set 2.3 times as fast as 16-byte prefixes, random binary data unchanged (docs/PERFORMANCE.md).
#: The rest of a run is verified on a hit, as for any cut anchor: matching is the same.
ANCHOR_POLICIES = ("prefix", "rare")
RARE_ANCHOR = 16
#: ``byte_costs`` counts at most this many bytes of the database's literals (the first ones).
COST_SAMPLE = 1 << 20

#: A line that is a plain literal anywhere (``Name:0:*:HEX``, ``Name=HEX``), not built as a
#: ``Signature`` (``bulk.py``): its name and its bytes. Its pattern is the one its ``Signature``
#: (one part, one variant, one ``Literal``, offset ``*``) would give.
PlainLiteral: TypeAlias = tuple[str, bytes]


class Pattern:
    """One variant of one part of one signature, as entered in the literal finder. Never changed
    once built; not frozen only because a frozen record's ``object.__setattr__`` per field is a
    large share of a 100,000-signature build. Equal only to itself (streams key candidates by
    ``id``); a plain class, not a dataclass, so a scan imports no ``dataclasses``
    (``record.py``)."""

    __slots__ = (  # noqa: RUF023 (__init__'s order)
        "name", "offset", "elements", "anchor", "anchor_at", "width", "chain", "part", "gap_min",
        "gap_max", "last", "left", "right", "left_boundary", "right_boundary", "anchored",
        "needs_verification",
    )  # fmt: skip

    name: str
    offset: Offset  # applies to the start of the first part
    elements: Variant
    anchor: bytes  # the static run entered in the literal finder
    anchor_at: int  # its byte position in the variant
    width: int
    chain: int  # index of the signature among the multi-part ones; -1 for a single part
    part: int
    gap_min: int  # bytes allowed between the previous part's end and this part's start
    gap_max: int | None
    last: bool
    left: Anchor | None  # anchored bytes ``aa[x-y]`` before the start / after the end
    right: Anchor | None
    left_boundary: Boundary | None  # (B), (L), (W) before the start / after the end
    right_boundary: Boundary | None
    anchored: bool  # an anchor or a boundary is set: bytes around the body are checked
    # The literal is not the whole variant, or an anchored byte is to be checked around it.
    needs_verification: bool

    def __init__(
        self, name: str, offset: Offset, elements: Variant, anchor: bytes, anchor_at: int,
        width: int, chain: int, part: int, gap_min: int, gap_max: int | None, last: bool,
        left: Anchor | None, right: Anchor | None, left_boundary: Boundary | None,
        right_boundary: Boundary | None, anchored: bool, needs_verification: bool,
    ) -> None:  # fmt: skip
        self.name = name
        self.offset = offset
        self.elements = elements
        self.anchor = anchor
        self.anchor_at = anchor_at
        self.width = width
        self.chain = chain
        self.part = part
        self.gap_min = gap_min
        self.gap_max = gap_max
        self.last = last
        self.left = left
        self.right = right
        self.left_boundary = left_boundary
        self.right_boundary = right_boundary
        self.anchored = anchored
        self.needs_verification = needs_verification

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return Pattern, tuple([getattr(self, name) for name in Pattern.__slots__])

    @property
    def reach_before(self) -> int:
        """Bytes before the start that verification reads (the farthest left anchored byte)."""
        anchor = 0 if self.left is None else self.left.farthest + 1
        return max(anchor, 0 if self.left_boundary is None else 1)

    @property
    def reach_after(self) -> int:
        """Bytes after the end that verification reads (the farthest right anchored byte, or the
        bytes a right boundary looks at)."""
        anchor = 0 if self.right is None else self.right.farthest + 1
        return max(anchor, 0 if self.right_boundary is None else self.right_boundary.reach)


def _folded_prefix(data: bytes) -> bytes:
    """The longest prefix of a case-folded run with at most ``FOLDED_ANCHOR_LETTERS`` letters."""
    letters = 0
    for index, byte in enumerate(data):
        if 0x61 <= byte <= 0x7A:
            letters += 1
            if letters > FOLDED_ANCHOR_LETTERS:
                return data[:index]
    return data


def _case_variants(data: bytes) -> list[bytes]:
    """Every spelling of lower-case ``data`` with each letter in either case."""
    spellings = [b""]
    for byte in data:
        cases = (byte, byte - 0x20) if 0x61 <= byte <= 0x7A else (byte,)
        spellings = [s + bytes([c]) for s in spellings for c in cases]
    return spellings


def byte_costs(runs: Iterable[bytes]) -> bytes:
    """How rare each byte value is among ``runs`` (their first ``COST_SAMPLE`` bytes): ``-log`` of
    its share (a byte never seen costs most), scaled to 0-63, as a ``bytes.translate`` table."""
    import math
    from collections import Counter

    sample = bytearray()
    for run in runs:
        sample += run
        if len(sample) >= COST_SAMPLE:
            break
    counts = Counter(sample[:COST_SAMPLE])
    total = sum(counts.values()) + 256
    costs = [-math.log((counts.get(value, 0) + 1) / total) for value in range(256)]
    top = max(costs)
    return bytes(round(63 * cost / top) for cost in costs)


def rare_window(data: bytes, costs: bytes) -> int:
    """Where the ``RARE_ANCHOR``-byte window of ``data`` (longer than that) starts whose last four
    bytes cost most together (``costs``: ``byte_costs``'s table); the earliest on a tie. At C
    speed: the costs of ``data`` as one integer, a byte each, added to itself shifted by one, two
    and three bytes give every four bytes' sum in one byte (at most 4 x 63: no carry)."""
    value = int.from_bytes(data.translate(costs), "little")
    sums = (value + (value >> 8) + (value >> 16) + (value >> 24)).to_bytes(len(data), "little")
    ends = sums[RARE_ANCHOR - 4 : len(data) - 3]  # ends[i]: the last four bytes of window i
    return ends.index(max(ends))


class _Rare(Frozen):
    """``rare_window``'s costs for one database."""

    __slots__ = ("costs",)
    costs: bytes

    def __init__(self, costs: bytes) -> None:
        setfield(self, "costs", costs)

    def cut(self, anchor: bytes, anchor_at: int) -> tuple[bytes, int]:
        """``anchor`` (at ``anchor_at``) as its rarest window, if it is longer than one."""
        if len(anchor) <= RARE_ANCHOR:
            return anchor, anchor_at
        start = rare_window(anchor, self.costs)
        return anchor[start : start + RARE_ANCHOR], anchor_at + start


def _literal_runs(signatures: Sequence[Signature | PlainLiteral]) -> Iterator[bytes]:
    for signature in signatures:
        if isinstance(signature, tuple):
            yield signature[1]
            continue
        for part in signature.parts:
            for elements in part.variants:
                for element in elements:
                    if isinstance(element, Literal):
                        yield element.data


def _anchor_length(element: Literal | Folded) -> int:
    return element.width if isinstance(element, Literal) else len(_folded_prefix(element.data))


def _patterns(
    signature: Signature, chain: int, part: int, elements: Variant, max_anchor: int,
    rare: _Rare | None = None,
) -> list[Pattern]:  # fmt: skip
    # The anchor is the longest static run, as libclamav picks the trie entry (earliest on a tie);
    # the parser guarantees every variant has a run of at least 2 bytes. A case-folded run
    # (``::i``) enters as each spelling of its prefix: one pattern per spelling.
    gaps: Part = signature.parts[part]
    anchored = any(edge is not None for edge in (gaps.left, gaps.right, gaps.left_boundary,
                                                 gaps.right_boundary))
    spellings: list[bytes] | None = None
    if len(elements) == 1 and isinstance(elements[0], Literal):  # a plain literal, the usual case
        anchor, anchor_at, width = elements[0].data, 0, elements[0].width
    else:
        runs = {i: e for i, e in enumerate(elements) if isinstance(e, Literal | Folded)}
        best = max(runs, key=lambda i: (_anchor_length(runs[i]), -i))
        chosen = runs[best]
        if isinstance(chosen, Folded):
            anchor = _folded_prefix(chosen.data)
            spellings = _case_variants(anchor)
        else:
            anchor = chosen.data
        anchor_at = sum(e.width for e in elements[:best])
        width = sum(e.width for e in elements)
    if rare is not None and spellings is None:
        anchor, anchor_at = rare.cut(anchor, anchor_at)
    anchor = anchor[:max_anchor]
    pattern = Pattern(
        name=signature.name,
        offset=signature.offset,
        elements=elements,
        anchor=anchor,
        anchor_at=anchor_at,
        width=width,
        chain=chain,
        part=part,
        gap_min=gaps.gap_min,
        gap_max=gaps.gap_max,
        last=part == len(signature.parts) - 1,
        left=gaps.left,
        right=gaps.right,
        left_boundary=gaps.left_boundary,
        right_boundary=gaps.right_boundary,
        anchored=anchored,
        needs_verification=anchored or width != len(anchor) or spellings is not None,
    )
    if spellings is None:
        return [pattern]
    variants = []
    for spelling in spellings:
        variant = copy.copy(pattern)
        variant.anchor = spelling
        variants.append(variant)
    return variants


class Program(Frozen):
    """What the literal finder reports, and what each literal stands for."""

    __slots__ = ("literals", "patterns_by_literal", "history", "widest", "gap_max", "simple",  # noqa: RUF023 (__init__'s order)
                 "logical")  # fmt: skip

    literals: tuple[bytes, ...]
    #: A tuple, or a cache entry's groups decoded on first use (``cache_entry.py``).
    patterns_by_literal: Sequence[Sequence[Pattern]]
    history: int  # bytes a stream keeps for verification
    widest: int  # the widest pattern: no part still to come starts before offset - widest
    gap_max: tuple[tuple[int | None, ...], ...]  # per multi-part signature, per part
    simple: bool  # every pattern is a whole single-part literal: a hit is a match
    #: Logical signatures (``.ldb``): their subsignatures are among the patterns, under hidden
    #: names; a stream counts them and reports the logical signatures instead
    #: (``logical_match.py``).
    logical: LogicalTable | None

    def __init__(
        self, literals: tuple[bytes, ...], patterns_by_literal: Sequence[Sequence[Pattern]],
        history: int, widest: int, gap_max: tuple[tuple[int | None, ...], ...], simple: bool,
        logical: LogicalTable | None = None,
    ) -> None:  # fmt: skip
        setfield(self, "literals", literals)
        setfield(self, "patterns_by_literal", patterns_by_literal)
        setfield(self, "history", history)
        setfield(self, "widest", widest)
        setfield(self, "gap_max", gap_max)
        setfield(self, "simple", simple)
        setfield(self, "logical", logical)


_WIDTH = operator.attrgetter("width")


def build_program(
    signatures: Sequence[Signature | PlainLiteral], logical: LogicalTable | None = None,
    *, anchors: str = "prefix",
) -> Program:  # fmt: skip
    """Group every applied variant by anchor literal; signatures marked not applied are left out.
    ``logical``'s subsignatures are added to ``signatures``; a ``PlainLiteral`` stands for the
    ``Signature`` of its line. ``anchors`` is one of ``ANCHOR_POLICIES``."""
    if logical is not None:
        signatures = [*signatures, *logical.bodies]
    groups: dict[bytes, list[Pattern]] = {}  # by anchor, in the order anchors first appear
    gap_max: list[tuple[int | None, ...]] = []
    max_anchor = MAX_ANCHOR if len(signatures) < LARGE_SET else LARGE_SET_ANCHOR
    rare = None
    if anchors == "rare":
        rare = _Rare(byte_costs(_literal_runs(signatures)))
        max_anchor = MAX_ANCHOR
    elif anchors != "prefix":
        raise ValueError(f"anchors must be one of {ANCHOR_POLICIES}, not {anchors!r}")
    from hv_emu.scanner.signatures import anywhere  # not at import: a warm scan builds nothing

    star = anywhere()
    for signature in signatures:
        if isinstance(signature, tuple):  # a PlainLiteral: ``_patterns``'s one pattern, inline
            name, data = signature
            anchor, anchor_at = (data, 0) if rare is None else rare.cut(data, 0)
            anchor = anchor[:max_anchor]
            pattern = Pattern(name, star, (Literal(data),), anchor, anchor_at, len(data), -1, 0,
                              0, 0, True, None, None, None, None, False,
                              len(data) != len(anchor))  # fmt: skip
            group = groups.get(anchor)
            if group is None:
                groups[anchor] = [pattern]
            else:
                group.append(pattern)
            continue
        if signature.not_applied is not None:
            continue
        chain = -1
        if len(signature.parts) > 1:
            chain = len(gap_max)
            gap_max.append(tuple(part.gap_max for part in signature.parts))
        for number, part in enumerate(signature.parts):
            for elements in part.variants:
                for pattern in _patterns(signature, chain, number, elements, max_anchor, rare):
                    groups.setdefault(pattern.anchor, []).append(pattern)
    patterns = [p for group in groups.values() for p in group]
    verified = [p for p in patterns if p.needs_verification]
    # Only a pattern with an edge (``anchored``) reads bytes around it: for the others (nearly
    # all, in a large update) reach_before and reach_after are 0, so width alone counts.
    edged = [p for p in verified if p.anchored]
    history = max(max(map(_WIDTH, verified), default=0),
                  max((p.reach_before + p.width + p.reach_after for p in edged), default=0))
    # A right-anchored part is decided up to reach_after bytes after its end.
    widest = max(map(_WIDTH, patterns), default=0)
    widest = max([widest, *(p.width + p.reach_after for p in edged)])
    simple = not verified and not gap_max  # no verification and no chains of parts
    return Program(
        tuple(groups), tuple(map(tuple, groups.values())), history, widest, tuple(gap_max), simple,
        logical if logical is not None and logical.signatures else None,
    )
