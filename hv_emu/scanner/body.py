"""The ClamAV body grammar: a body's text parsed into the pattern of ``pattern.py``.

Models: a *body*, the hex pattern of a ClamAV byte signature (the last field of a ``.db`` or
``.ndb`` line). A body is cut into ordered *parts* at ``*``, ``{-n}``, ``{n-}``, ``{n-m}`` and
``{n}`` with n >= 128, each with the gap allowed before it. A part is one or more fixed-length
*variants* (more than one when it holds generic alternations), sequences of elements (a static
byte run, a one-byte class, a choice among equal-length strings) that the engine finds by
Aho-Corasick on the longest static run and then verifies, as libclamav's ``matcher-ac.c`` does.

Follows: ClamAV's signature manual (``BodySignatureFormat.md``) and the body rules of libclamav
1.4's loader (``readdb.c``, ``cli_ac_addsig``): bodies of at least 2 bytes (3 for plain literals),
a static run of at least 2 bytes in every part, no unbounded wildcards inside alternations,
``{n}`` with n < 128 as n x ``??``, and which alternations may be negated.

Anchored byte ranges ``aa[x-y]BODY`` and ``BODY[x-y]aa`` (x <= y <= 32) are parsed per part
into an ``Anchor`` beside the part's variants, as ``cli_ac_addsig`` does: at most one on each side,
the anchor one plain byte ``hh`` (clamscan accepts ``??`` and nibbles there but checks ``?h`` only;
refused here), the range also written ``[n]``.

Alternations nest, ``6161(6a6a|66(6767|6868)66|6969)6161``, as ``ac_special_altexpand`` expands
them: a nested alternation makes its enclosing one generic (so not negatable), a negation inside
one is refused, and an enclosing alternation may hold at most ``MAX_NESTED`` groups
(``ACPATT_ALTN_MAXNEST``). An empty alternative other than the first is accepted and never
matches; an empty first one is refused (both measured on clamscan 1.4.6).

Boundaries ``(B)``, ``(L)``, ``(W)`` follow ``cli_ac_addsig`` and ``ac_findmatch_special``: first
in a part (and not negated) it is a condition on the byte before the part (``Part.left_boundary``),
last in a part (negated or not) one on the byte(s) after it (``Part.right_boundary``); anywhere
else, or negated first, it is one byte of the part (a ``ByteClass``). The byte sets are
libclamav's ``boundary[]`` table, restated in docs/SIGNATURES.md.

Leaves out (refused with a ``BodyError`` naming the column, never half-matched): ranges ``{n-m}``
with m < n (which clamscan accepts). Names, target types and offsets are the line's business
(``signatures.py``). Cutting a body into parts and a part's edges off it (anchored bytes,
boundaries), with ``BodyError`` and the byte token, are ``body_parts.py``'s; this module parses
what lies between: a part's bytes, classes and alternations.

Guest controls: the body text, when a database arrives as an update. The parser bounds parts,
alternation expansion and the elements a body expands to before it allocates, and raises only
``BodyError``.
"""

from __future__ import annotations

import re

from hv_emu.scanner.body_parts import (
    HEX_DIGITS,
    MAX_FIXED_SKIP,
    MAX_PARTS,
    BodyError,
    closing_paren,
    nibble_class,
    split_anchors,
    split_boundaries,
    split_parts,
)
from hv_emu.scanner.pattern import (
    ALNUM,
    ANY,
    BOUNDARY_KINDS,
    LF,
    WORD_ANY,
    ByteClass,
    Choice,
    Element,
    Literal,
    Part,
    Variant,
)

# The outer level (parts, edges, errors: ``body_parts.py``) is re-exported: callers see one body
# grammar.
__all__ = [
    "MAX_BYTE_ALTERNATIVES", "MAX_FIXED_SKIP", "MAX_NESTED", "MAX_PARTS", "MAX_SIGNATURE_ELEMENTS",
    "MAX_VARIANTS", "BodyError", "closing_paren", "overfull_alternation", "parse_body",
]

MAX_VARIANTS = 64  # per part, after expanding generic alternations
# Elements (byte runs, classes, choices) summed over every variant: '{127}' is 127 elements and
# alternations multiply variants, so a body can cost far more than its text.
MAX_SIGNATURE_ELEMENTS = 65_536
MAX_NESTED = 15  # libclamav's ACPATT_ALTN_MAXNEST: groups inside one top-level alternation

_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2})+")


# --------------------------------------------------------------------------- body syntax

def _boundary_class(kind: str, negated: bool) -> ByteClass:
    """A boundary inside a part (or negated at its start): one byte, as ``ac_findmatch_special``
    checks it. ``(L)`` there is an LF only (measured: clamscan 1.4.6 never matches CR LF there)."""
    allowed = {"B": WORD_ANY, "L": frozenset([LF]), "W": frozenset(range(256)) - ALNUM}[kind]
    if negated:
        return ByteClass(frozenset(range(256)) - allowed, not_crlf=kind == "L")
    return ByteClass(allowed)




class _Budget:
    """Elements a signature may still allocate; charged before each allocation."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, elements: int, column: int) -> None:
        self.left -= elements
        if self.left < 0:
            raise BodyError(column, f"body expands to more than {MAX_SIGNATURE_ELEMENTS} elements")

_UNBOUNDED = "Alternative match cannot contain unbounded wildcards"


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
        elif c in HEX_DIGITS or c == "?":
            if i + 1 >= len(text):
                raise BodyError(at, "odd number of hex digits")
            for variant in variants:
                variant.append(nibble_class(text[i : i + 2], at))
            i += 2
        elif c == "{":
            close = text.find("}", i)
            if close < 0:
                raise BodyError(at, "unterminated '{'")
            inner = text[i + 1 : close]
            # isascii: str.isdigit() also takes '¹²³', which int() refuses
            if (not (inner.isascii() and inner.isdigit()) or len(inner) > 9
                    or not 0 < int(inner) <= MAX_FIXED_SKIP):
                raise BodyError(at, _UNBOUNDED if in_alternative else f"bad range '{{{inner}}}'")
            budget.spend(len(variants) * int(inner), at)
            for variant in variants:
                variant.extend([ANY] * int(inner))
            i = close + 1
        elif c == "*":  # at the top level, '*' has already split the body into parts
            raise BodyError(at, _UNBOUNDED)
        elif c in "[]":  # anchors were cut off by _split_anchors: any left is out of place
            raise BodyError(at, "an anchored byte range must have one byte on one side: "
                                "'aa[x-y]BODY' or 'BODY[x-y]aa'")
        elif c in "(!":
            negated = c == "!"
            if negated and text[i + 1 : i + 2] != "(":
                raise BodyError(at, "'!' must be followed by '('")
            if negated and in_alternative:
                raise BodyError(at, "Generic alternates cannot contain negations")
            opening = i + 1 if negated else i
            close = closing_paren(text, opening)
            if close < 0:
                raise BodyError(at, "unterminated '('")
            inner = text[opening + 1 : close]
            element_variants: list[Variant]
            if inner in BOUNDARY_KINDS:
                if in_alternative:
                    raise BodyError(base + opening + 1, f"boundary '({inner})' inside an "
                                                        "alternation")
                element_variants = [(_boundary_class(inner, negated),)]
            else:
                if not in_alternative and inner.count("(") > MAX_NESTED:
                    raise BodyError(at, "Expression exceeds maximum alternate nesting limit "
                                        f"({MAX_NESTED} groups)")
                element_variants = _parse_alternation(inner, base + opening + 1, negated, budget)
            if len(variants) * len(element_variants) > MAX_VARIANTS:
                raise BodyError(at, f"alternations expand to more than {MAX_VARIANTS} variants")
            # Each new variant copies an old one and one alternative.
            longest = max(map(len, variants)) + max(map(len, element_variants))
            budget.spend(len(variants) * len(element_variants) * longest, at)
            variants = [v + list(e) for v in variants for e in element_variants]
            i = close + 1
        else:
            what = "bad hex digit" if c.isalnum() else "unexpected character"
            raise BodyError(at, f"{what} {c!r}")
    return [tuple(v) for v in variants]


def _top_level_alternatives(inner: str) -> list[str]:
    """Split an alternation's text at its own ``|``, not at those of nested alternations."""
    pieces, depth, begin = [], 0, 0
    for index, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            pieces.append(inner[begin:index])
            begin = index + 1
    pieces.append(inner[begin:])
    return pieces


def _parse_alternation(inner: str, base: int, negated: bool, budget: _Budget) -> list[Variant]:
    """``(a|b|...)``: a byte class, a choice of equal-length strings, or generic alternatives."""
    alternatives: list[list[Variant]] = []
    column = base
    texts = _top_level_alternatives(inner)
    for number, text in enumerate(texts):
        if not text and number == 0:
            raise BodyError(column, "empty alternative")
        if text:  # a later empty alternative loads in clamscan and never matches
            alternatives.append(_parse_fixed(text, column, budget, in_alternative=True))
        column += len(text) + 1
    plain = [a[0][0].data for a in alternatives
             if len(a) == 1 and len(a[0]) == 1 and isinstance(a[0][0], Literal)]
    # Plain hex alternatives of one length become one element: a byte class or a string choice.
    if len(plain) == len(texts) and len({len(p) for p in plain}) == 1:
        if len(plain[0]) == 1:
            chosen = frozenset(p[0] for p in plain)
            return [(ByteClass(frozenset(range(256)) - chosen if negated else chosen),)]
        return [(Choice(frozenset(plain), negated, len(plain[0])),)]
    if negated:
        raise BodyError(base, "generic alternatives (mixed lengths, wildcards) cannot be negated")
    flattened = [variant for alternative in alternatives for variant in alternative]
    if len(flattened) > MAX_VARIANTS:
        raise BodyError(base, f"alternations expand to more than {MAX_VARIANTS} variants")
    return flattened


#: The most one-byte alternatives libclamav matches reliably: one per byte value.
MAX_BYTE_ALTERNATIVES = 256


def overfull_alternation(text: str) -> bool:
    """Whether a body holds an alternation of more than ``MAX_BYTE_ALTERNATIVES`` one-byte
    alternatives (so at least one repeated). clamscan 1.4.6 loads such a body, but its prefilter
    keeps the alternation's size in a ``uint8_t`` and wraps, so what it finds depends on the
    prefilter's state (docs/SIGNATURES.md, More than 256 one-byte alternatives); hv-emu does not
    imitate that: the caller reports the signature not applied."""
    at = text.find("(")
    while at >= 0:
        close = closing_paren(text, at)
        if close < 0:
            return False
        pieces = _top_level_alternatives(text[at + 1 : close])
        if len(pieces) > MAX_BYTE_ALTERNATIVES and all(
                len(p) == 2 and p[0] in HEX_DIGITS and p[1] in HEX_DIGITS for p in pieces):
            return True
        at = text.find("(", at + 1)
    return False


def _merge_literals(variant: Variant) -> Variant:
    """Join adjacent static bytes into runs, the unit the Aho-Corasick trie is keyed on."""
    merged: list[Element] = []
    for element in variant:
        if merged and isinstance(element, Literal) and isinstance(merged[-1], Literal):
            merged[-1] = Literal(merged[-1].data + element.data)
        else:
            merged.append(element)
    return tuple(merged)


def parse_body(text: str, *, min_plain: int = 3) -> tuple[Part, ...]:
    """Parse a hex body and apply ClamAV's length rules; raises only ``BodyError``. A plain
    literal needs ``min_plain`` bytes: 3 in ``.db``/``.ndb`` (Boyer-Moore in libclamav), 2 in a
    logical signature's subsignature (always Aho-Corasick there; measured on clamscan 1.4.6)."""
    if _HEX_RUN.fullmatch(text):  # a plain literal, as nearly every real body is: one Literal
        if len(text) < 2 * min_plain:
            raise BodyError(0, f"body of {len(text) // 2} byte(s) is too short")
        return (Part(0, 0, ((Literal(bytes.fromhex(text)),),)),)
    pieces = split_parts(text)
    budget = _Budget(MAX_SIGNATURE_ELEMENTS)
    parts = []
    for column, piece, gap_min, gap_max in pieces:
        left, column, piece, right = split_anchors(piece, column)
        left_boundary, column, piece, right_boundary = split_boundaries(piece, column)
        if not piece:
            raise BodyError(column, "empty part: '*' or a range at an end or after another")
        fixed = _parse_fixed(piece, column, budget, in_alternative=False)
        variants = [_merge_literals(v) for v in fixed]
        for variant in variants:
            width = sum(element.width for element in variant)
            is_plain = len(variant) == 1 and isinstance(variant[0], Literal)
            # A plain literal (Boyer-Moore in libclamav) needs 3 bytes, anything else 2.
            anchored = any(edge is not None for edge in (left, right, left_boundary,
                                                           right_boundary))
            if width < 2 or (is_plain and width < min_plain and len(pieces) == 1
                             and not anchored):
                raise BodyError(column, f"body of {width} byte(s) is too short")
            if not any(isinstance(e, Literal) and e.width >= 2 for e in variant):
                raise BodyError(column, "Can't find a static subpattern of length 2")
        parts.append(Part(gap_min, gap_max, tuple(variants), left, right, left_boundary,
                          right_boundary))
    return tuple(parts)
