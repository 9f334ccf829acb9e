"""The common ``.ndb`` line with wildcards, parsed by one regular expression instead of the grammar.

Models: the lines of a real database that are not plain literals but nearly so: ``Name:0:*:BODY``
where the body is static byte runs separated by ``??``, one-byte alternations ``(hh|hh...)``,
``*`` and gaps ``{n-m}``, ``{n-}``, ``{-m}`` (rfxn.ndb's ``(22|27)`` line, most of a wildcard
update). ``body.parse_body`` walks such a body a token at a time, about 30 µs a line, which is
what an update's pause spends on them (docs/PERFORMANCE.md, issue 10); here one regular
expression proves the form and the parts are built directly, as the grammar builds them.

Follows: ``body.parse_body`` and ``signatures._parse_ndb_line`` exactly, on the forms it takes:
parts cut at ``*`` and ranges as ``_split_parts`` cuts them (a maximum of 0 is no maximum), a run
for each stretch of hex, ``body.ANY`` for ``??``, a ``ByteClass`` for a one-byte alternation, the
length rules (every part at least 2 bytes wide with a static run of 2), and the same "not
applied" reason for a range that ends before it starts. Whatever it does not take for certain
(a name outside the plain names' characters, other targets or offsets, nibbles, longer
alternatives, negations, anchors, boundaries, ``{n}``, more than ``MAX_SIMPLE_PARTS`` parts, a
part too short) it leaves to the grammar, which gives the answer and the error.
``tests/scanner/test_simple_lines.py`` holds the two to the same ``Signature`` (Hypothesis).
``simple_form`` is the check alone, for an update's pause: whether ``simple_ndb_line`` takes the
line, and the elements of what it builds, without building it (the compile worker does,
``bulk.entries_of``).

Leaves out: errors (the grammar's business); every form not listed above.

Guest controls: the line (an update's text): a bounded line (``MAX_LINE_LENGTH``), matched by a
regular expression without nested repetition over the same characters; raises nothing.
"""

from __future__ import annotations

import re
from binascii import unhexlify

from hv_emu.scanner.pattern import ANY, ByteClass, Element, Literal, Part
from hv_emu.scanner.signatures import TARGET_ANY, Signature, anywhere

#: At most this many parts here (the grammar's limit, ``MAX_PARTS``, is checked there).
MAX_SIMPLE_PARTS = 32

_RUN = rb"(?:[0-9a-fA-F]{2})+"
_ONE = rb"(?:\?\?|\([0-9a-fA-F]{2}(?:\|[0-9a-fA-F]{2}){1,15}\))"
_GAP = rb"(?:\*|\{[0-9]{1,9}-[0-9]{1,9}\}|\{[0-9]{1,9}-\}|\{-[0-9]{1,9}\})"
_PART = _RUN + rb"(?:" + _ONE + _RUN + rb")*"
#: A name as plain lines have it, target 0, offset ``*``, and a body of at least one wildcard.
_LINE = re.compile(rb"([\x21\x22\x24-\x39\x3b-\x7e][\x21-\x39\x3b-\x7e]*):0:\*:(" + _PART
                   + rb"(?:" + _GAP + _PART + rb")*)\r*")  # fmt: skip
_TOKENS = re.compile(rb"(" + _RUN + rb")|(\?\?)|\(([^)]*)\)|(\*)|\{([0-9]*)-([0-9]*)\}")
_GAPS = re.compile(_GAP)
#: Four hex digits in a row: in a part of this form only a run of 2 bytes or more holds them
#: (an alternation's options are one byte each).
_STATIC = re.compile(rb"[0-9a-fA-F]{4}")


def simple_form(raw: bytes) -> int | None:
    """The elements of the ``Signature`` ``simple_ndb_line`` gives for this line, without
    building it; None exactly when it gives None (an update's pause checks, its worker builds)."""
    match = _LINE.fullmatch(raw)
    if match is None:
        return None
    body = match[2]
    parts = _GAPS.split(body)
    if len(parts) > MAX_SIMPLE_PARTS or not all(_STATIC.search(part) for part in parts):
        return None
    wildcards = body.count(b"??") + body.count(b"(")
    if len(parts) == 1 and not wildcards:
        return None  # a plain literal: not this path's
    # Each part is runs around its wildcards: one run more than wildcards.
    return 2 * wildcards + len(parts)


def simple_ndb_line(raw: bytes, line: int, source: str) -> Signature | None:
    """The ``Signature`` ``_parse_ndb_line`` gives for this line (its bytes, NUL-cut), when the
    line has one of the forms above; None otherwise (also for a plain literal: not this path's)."""
    match = _LINE.fullmatch(raw)
    if match is None:
        return None
    parts: list[Part] = []
    elements: list[Element] = []
    gap: tuple[int, int | None] = (0, 0)
    width, static, wild = 0, False, False  # the part's so far: bytes, a run of 2, any wildcard
    for run, any_byte, choice, star, low, high in _TOKENS.findall(match[2]):
        if run:
            elements.append(Literal(unhexlify(run)))
            width += len(run) >> 1
            static = static or len(run) >= 4
        elif any_byte:
            elements.append(ANY)
            width, wild = width + 1, True
        elif choice:
            elements.append(ByteClass(frozenset(unhexlify(choice.replace(b"|", b"")))))
            width, wild = width + 1, True
        else:  # a gap: the part before it ends
            # The length rules (every part 2 bytes wide, with a static run of 2): the grammar
            # decides a part that might break them.
            if width < 2 or not static or len(parts) + 2 > MAX_SIMPLE_PARTS:
                return None
            parts.append(Part(gap[0], gap[1], (tuple(elements),)))
            elements, width, static, wild = [], 0, False, True
            top = None if star or not high or int(high) == 0 else int(high)
            gap = (0 if star else int(low or b"0"), top)
    if width < 2 or not static or not wild:
        return None
    parts.append(Part(gap[0], gap[1], (tuple(elements),)))
    reason = None
    for each in parts:  # signatures._never_matches, for the ranges this path takes
        if each.gap_max is not None and each.gap_max < each.gap_min:
            reason = (f"range {{{each.gap_min}-{each.gap_max}}} ends before it starts (clamscan "
                      "never matches it)")
            break
    return Signature(match[1].decode("latin-1"), line, TARGET_ANY, anywhere(), tuple(parts),
                     reason, source)  # fmt: skip
