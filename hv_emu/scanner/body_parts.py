"""A ClamAV body cut into parts, and each part's edges cut off: the outer level of the grammar.

Models: what ``body.py`` does before it parses a part's bytes: a body is cut into ordered *parts*
at ``*``, ``{-n}``, ``{n-}``, ``{n-m}`` and ``{n}`` with n >= 128 (``split_parts``: each part with
the gap allowed before it; alternations are skipped whole, ``closing_paren``), and a part's edges
are cut off it: its anchored bytes ``aa[x-y]BODY``/``BODY[x-y]aa`` (``split_anchors``) and its
edge boundaries ``(B)``, ``(L)``, ``(W)`` (``split_boundaries``). Also the lexical pieces both
levels share: ``BodyError`` (a column and a message) and one byte token (``nibble_class``).
``body.py`` has the module's whole story (docs/SIGNATURES.md restates the rules).

Follows: libclamav 1.4's ``cli_ac_addsig`` (``readdb.c``, ``matcher-ac.c``), as ``body.py`` says:
parts at most ``MAX_PARTS``, ``{n}`` with n <= ``MAX_FIXED_SKIP`` kept inside a part, a maximum
of 0 read as no maximum, anchored bytes at most ``MAX_ANCHOR_DISTANCE`` away, one on each side.

Leaves out: a part's bytes, classes and alternations (``body.py``).

Guest controls: the body text, when a database arrives as an update: every scan here is linear
in the text, numbers are at most 9 digits, and the parts are counted before they are kept; the
only exception raised is ``BodyError``.
"""

from __future__ import annotations

import re

from hv_emu.errors import HvEmuError
from hv_emu.scanner.pattern import (
    ANY,
    BOUNDARY_KINDS,
    HIGH_NIBBLE,
    LOW_NIBBLE,
    MAX_ANCHOR_DISTANCE,
    Anchor,
    Boundary,
    ByteClass,
    Literal,
)

MAX_PARTS = 64
MAX_FIXED_SKIP = 127  # {n} with n < 128 is n x '??' in libclamav; larger n splits the body
HEX_DIGITS = "0123456789abcdefABCDEF"


class BodyError(HvEmuError):
    """A body syntax error at ``column`` (0-based in the body); the line parser turns it into a
    ``DatabaseError`` naming file, line and column (so, like it, neither side's fault yet)."""

    def __init__(self, column: int, message: str) -> None:
        super().__init__(message)
        self.column = column
        self.message = message


def nibble_class(pair: str, at: int) -> ByteClass | Literal:
    """Decode one two-character byte token: ``hh``, ``??``, ``h?`` or ``?h``."""
    high, low = pair[0], pair[1]
    if high not in HEX_DIGITS + "?" or low not in HEX_DIGITS + "?":
        bad = at if high not in HEX_DIGITS + "?" else at + 1
        raise BodyError(bad, f"bad hex digit {pair[bad - at]!r}")
    if high != "?" and low != "?":
        return Literal(bytes([int(pair, 16)]))
    if high == "?" and low == "?":
        return ANY
    if low == "?":
        return HIGH_NIBBLE[int(high, 16)]
    return LOW_NIBBLE[int(low, 16)]


def closing_paren(text: str, opening: int) -> int:
    """The index of the ``)`` that closes the ``(`` at ``opening`` (alternations nest), or -1."""
    depth = 0
    for index in range(opening, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


# {n} (n < 128 stays inside a part), {-n}, {n-}, {n-m}: the last three, and {n} with n >= 128,
# split the body into parts.
_MAY_SPLIT = re.compile(r"[(*{]")
_RANGE = re.compile(r"\{(?:(?P<exact>[0-9]{1,9})|-(?P<most>[0-9]{1,9})|(?P<least>[0-9]{1,9})-"
                    r"|(?P<low>[0-9]{1,9})-(?P<high>[0-9]{1,9}))\}")


def split_parts(text: str) -> list[tuple[int, str, int, int | None]]:
    """Cut a body at ``*`` and ranges: (column, text, gap_min, gap_max) per part."""
    pieces: list[tuple[int, str, int, int | None]] = []
    gap: tuple[int, int | None] = (0, 0)
    begin = i = 0
    while hit := _MAY_SPLIT.search(text, i):
        i = hit.start()
        found: tuple[int, int | None]
        if text[i] == "(":  # skip alternations: a '*' inside one is an error, not a split
            close = closing_paren(text, i)
            i = len(text) if close < 0 else close + 1
            continue
        if text[i] == "*":
            found, end = (0, None), i + 1
        elif text[i] == "{" and (m := _RANGE.match(text, i)):
            if m["exact"] is not None and 0 < int(m["exact"]) <= MAX_FIXED_SKIP:
                i = m.end()
                continue
            low = m["exact"] or m["least"] or m["low"] or "0"
            high = m["exact"] or m["most"] or m["high"]
            # libclamav reads a maximum of 0 as no maximum: {0}, {-0}, {n-0} are gaps of n or more
            # (measured). A maximum below the minimum is kept: the signature is never applied.
            found = (int(low), None if high is None or int(high) == 0 else int(high))
            end = m.end()
        else:  # a malformed '{', reported by _parse_fixed
            i += 1
            continue
        pieces.append((begin, text[begin:i], *gap))
        if len(pieces) >= MAX_PARTS:
            raise BodyError(i, f"more than {MAX_PARTS} parts")
        gap, begin, i = found, end, end
    pieces.append((begin, text[begin:], *gap))
    return pieces

_ANCHOR_RANGE = re.compile(r"\[(?P<nearest>[0-9]{1,9})(?:-(?P<farthest>[0-9]{1,9}))?\]")


def _anchor(token: str, bracket: re.Match[str], at: int) -> Anchor:
    """The anchor ``token[range]`` (or ``[range]token``); ``at`` is the column of the token."""
    byte = nibble_class(token, at)
    if not isinstance(byte, Literal):  # clamscan ignores '??' and 'h?' anchors: refuse them all
        raise BodyError(at, f"an anchored byte must be plain hex, not {token!r}")
    nearest = int(bracket["nearest"])
    farthest = nearest if bracket["farthest"] is None else int(bracket["farthest"])
    if nearest > farthest or farthest > MAX_ANCHOR_DISTANCE:
        raise BodyError(at, f"incorrect range {bracket.group()} (0 <= x <= y <= "
                            f"{MAX_ANCHOR_DISTANCE})")
    return Anchor(frozenset(byte.data), nearest, farthest)


def split_anchors(text: str, column: int) -> tuple[Anchor | None, int, str, Anchor | None]:
    """Cut a part's anchored bytes off it, as ``cli_ac_addsig`` does: a first ``[x-y]`` with
    exactly one byte before it is a left anchor, one with exactly one byte after it (the first or
    the second bracket) a right anchor. Returns (left, column of the rest, rest, right)."""
    left = right = None
    for side in ("left", "right"):
        opening = text.find("[")
        if opening < 0:
            break
        bracket = _ANCHOR_RANGE.match(text, opening)
        if bracket is None:
            raise BodyError(column + opening, "bad anchored byte range: '[n]' or '[n-m]' expected")
        after = bracket.end()
        if side == "left" and opening == 2:
            left = _anchor(text[:2], bracket, column)
            text, column = text[after:], column + after
        elif len(text) - after == 2:
            right = _anchor(text[after:], bracket, column + after)
            text = text[:opening]
            break
        else:
            raise BodyError(column + opening, "an anchored byte range must have one byte on one "
                                              "side: 'aa[x-y]BODY' or 'BODY[x-y]aa'")
    return left, column, text, right


def split_boundaries(text: str, column: int
                      ) -> tuple[Boundary | None, int, str, Boundary | None]:  # fmt: skip
    """Cut a part's edge boundaries off it, as ``cli_ac_addsig`` does: a last ``(X)`` or ``!(X)``
    is a right boundary, then a first ``(X)`` (not negated) a left one. Returns (left, column of
    the rest, rest, right)."""
    left = right = None
    if len(text) >= 3 and text[-3] == "(" and text[-2] in BOUNDARY_KINDS and text[-1] == ")":
        negated = text[-4:-3] == "!"
        right = Boundary(text[-2], negated)
        text = text[: -4 if negated else -3]
    if len(text) >= 3 and text[0] == "(" and text[1] in BOUNDARY_KINDS and text[2] == ")":
        left = Boundary(text[1])
        text, column = text[3:], column + 3
    return left, column, text, right
