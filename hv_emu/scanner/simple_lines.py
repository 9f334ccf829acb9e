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
``bulk.entries_of``). ``WILD_RUNS`` is the same check for a whole run of lines at once (one
regular expression, in C): each line either a plain literal of the plain runs' form or a line
``simple_form`` takes, with names that hold no ``(``, ``?``, ``*``, and ``{`` only first (in every
line of a run or in none), so that ``run_elements`` counts the run's elements from a few byte
counts over the run.

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


_HEX = rb"[0-9a-fA-F]"
#: The part's static run (``_STATIC``), checked ahead at the part's start: a lazy walk over the
#: part's own characters (never past a gap, ``*`` or ``{``) to four hex digits in a row.
_STATIC_AHEAD = rb"(?=[0-9a-fA-F?()|]*?" + _HEX + rb"{4})"
#: A body ``simple_form`` takes: at least one wildcard or gap (a character no plain body has),
#: at most ``MAX_SIMPLE_PARTS`` parts, each with its static run.
_WILD_BODY = (rb"(?=[0-9a-fA-F]*+[?(*{])" + _STATIC_AHEAD + _PART + rb"(?:" + _GAP + _STATIC_AHEAD
              + _PART + rb"){0," + str(MAX_SIMPLE_PARTS - 1).encode() + rb"}+")  # fmt: skip
#: A plain body as ``database_check``'s plain runs take it (an even number of hex digits, at
#: least 6 and below 60,000; docs/PERFORMANCE.md, issue 10).
PLAIN_BODY = (_HEX + rb"{6}(?:" + _HEX + rb"{32}){0,1870}+(?:" + _HEX + rb"{16})?+(?:" + _HEX
              + rb"{8})?+(?:" + _HEX + rb"{4})?+(?:" + _HEX + rb"{2})?+")  # fmt: skip
_NAME_REST = rb"[\x21-\x27\x29\x2b-\x39\x3b-\x3e\x40-\x7a\x7c-\x7e]{0,4095}+"


def _wild_run(first: bytes) -> re.Pattern[bytes]:
    """Runs of whole lines (each with its newline), each a plain literal or of ``simple_form``'s
    form, whose names start with ``first`` and hold no ``(``, ``?``, ``*`` or ``{`` after it. A
    line stays below ``MAX_LINE_LENGTH``: a name of at most 4,096 characters, a plain body below
    60,000 hex digits, a body with wildcards no longer than 60,000 (checked ahead)."""
    return re.compile(rb"(?:" + first + _NAME_REST + rb":0:\*:(?>" + PLAIN_BODY + rb"\r?\n|"
                      rb"(?=[^\n]{0,60000}\n)" + _WILD_BODY + rb"\r?\n))++")  # fmt: skip


#: ``_wild_run``'s two forms, each with the ``{`` its every name holds: rfxn.ndb's ``{HEX}``
#: names (one), or names without braces (none). A run is of one form.
WILD_RUNS = ((_wild_run(rb"\{"), 1),
             (_wild_run(rb"[\x21\x22\x24-\x27\x29\x2b-\x39\x3b-\x3e\x40-\x7a\x7c-\x7e]"), 0))


def run_elements(data: bytes, start: int, end: int, lines: int, name_braces: int) -> int:
    """The elements of the ``lines`` signatures of a run one of ``WILD_RUNS`` matched at
    ``data[start:end]`` (``name_braces``: its form's): ``simple_form``'s count summed (a plain
    line's is 1, its one part)."""
    # Bodies hold '?' only in '??', names none; every line's offset is one '*', its name holds
    # ``name_braces`` '{'; the rest of the '(', '*' and '{' are the bodies' wildcards and gaps.
    wildcards = data.count(b"?", start, end) // 2 + data.count(b"(", start, end)
    stars = data.count(b"*", start, end) - lines
    braces = data.count(b"{", start, end) - lines * name_braces
    return 2 * wildcards + lines + stars + braces


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
