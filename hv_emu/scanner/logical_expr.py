"""The logical expression of a ClamAV logical signature (``.ldb``): parsed once, then evaluated.

Models: the third field of an ``.ldb`` line, ``((0|1|2)>5,2)&(3|1)``: subsignature numbers joined
by ``&`` and ``|``, grouped with parentheses, and counted with ``=X``, ``>X``, ``<X`` (matches of
one subsignature, or of a group) and ``=X,Y``, ``>X,Y``, ``<X,Y`` (a group's matches, and at least
Y distinct subsignatures among them). ``parse`` turns the text into a tree; ``holds`` decides it
on the number of matches each subsignature had.

Follows: libclamav 1.4's ``cli_ac_chklsig`` (matcher-ac.c), which parses and evaluates the text
in one recursive walk; this module reads it the same way, quirks included, so that exactly the
expressions clamscan loads load, and each means what it means there:
- at the top level of a (sub)expression the *first* ``&``/``|`` splits it (``0&1|2`` is
  ``0&(1|2)``); inside a parenthesised group without one, the *last* operator at depth 1 does
  (``(0&1|2)`` is ``(0&1)|2``);
- a count after a group applies only when the group and its count are the whole subexpression;
  after a single number it is the last ``=``, ``>`` or ``<`` in it; a ``,Y`` after a single
  number is ignored;
- numbers are read as C's ``sscanf("%u")`` reads them (white space, a sign, 32 bits);
- ``(0)=1`` and ``((0))`` are refused, as clamscan refuses them ("Missing opening parenthesis");
- ``A=0`` holds when A never matched; a group whose operator fails counts 0 matches.
The counts and the distinct subsignatures a subexpression contributes follow the same code.

Leaves out: subsignature numbers clamscan loads but reads out of bounds (a number of 2**31 or
more beside the largest one): refused here. Expressions nested deeper than ``MAX_DEPTH``
(clamscan recurses without a bound): refused.

Guest controls: nothing (``.ldb`` databases come from ``--db`` files only); the text is still
treated as hostile: bounded recursion, and only ``LogicError`` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from hv_emu.errors import HvEmuError

#: The deepest recursion the parser allows (each operator and each stripped pair of parentheses
#: is one level); far beyond any real signature (at most 64 subsignatures).
MAX_DEPTH = 300
_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789"


class LogicError(HvEmuError):
    """A logical expression clamscan refuses, at ``position`` (0-based) in the expression."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.message = message


@dataclass(frozen=True, slots=True)
class Leaf:
    """A subsignature number, with its count condition (``mod`` one of ``=<>``, or None)."""

    index: int
    mod: str | None = None
    value: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """``left op right``; ``mod`` (one of ``=<>``, or None) applies to the group's count, and
    ``distinct`` (Y of ``>X,Y``) to the number of distinct subsignatures it matched."""

    op: str
    left: Leaf | Node
    right: Leaf | Node
    mod: str | None = None
    value: int = 0
    distinct: int = 0


Expression = Leaf | Node


def c_unsigned(text: str, at: int) -> tuple[int, int] | None:
    """C's ``sscanf(text + at, "%u")``: the value (32 bits) and the index after it; None when no
    number is there. White space and a sign are skipped; a negative number wraps."""
    i = at
    while i < len(text) and text[i] in _SPACE:
        i += 1
    negative = i < len(text) and text[i] == "-"
    if i < len(text) and text[i] in "+-":
        i += 1
    start = i
    while i < len(text) and text[i] in _DIGITS:
        i += 1
    if i == start:
        return None
    value = min(int(text[start:i]), 2**64 - 1)  # strtoul saturates
    if negative:
        value = (-value) % 2**64
    return value & 0xFFFF_FFFF, i


def _char(text: str, index: int) -> str:
    """The character at ``index``, or "" past the end (C reads the string's NUL there)."""
    return text[index] if 0 <= index < len(text) else ""


def parse(text: str) -> tuple[Expression, int]:
    """The expression's tree and its largest subsignature number; raises ``LogicError``."""
    tree = _parse(text, 0, len(text), 0)
    return tree, _largest(tree)


def _largest(tree: Expression) -> int:
    if isinstance(tree, Leaf):
        return tree.index
    return max(_largest(tree.left), _largest(tree.right))


def _parse(text: str, start: int, end: int, depth: int) -> Expression:
    if depth > MAX_DEPTH:
        raise LogicError(start, f"expression nested deeper than {MAX_DEPTH} levels")
    length = end - start
    parens = 0
    op = op1 = mod = block_mod = ""
    op_at = op1_at = mod_at = block_end = 0
    value = distinct = 0
    i = 0
    while i < length:
        c = text[start + i]
        if c == "(":
            parens += 1
        elif c == ")":
            if not parens:
                raise LogicError(start + i, "Missing opening parenthesis")
            parens -= 1
            mod, mod_at = c, i
        elif c in "<>=":
            mod, mod_at = c, i
        elif c in "&|":
            if not parens:
                op, op_at = c, i
            elif parens == 1:
                op1, op1_at = c, i
        if op:
            break
        if op1 and not parens:
            block_end = i
            following = _char(text, start + i + 1)
            if following and following in "<>=":
                block_mod = following
                pair = c_unsigned(text, start + i + 2)
                if pair is None:
                    raise LogicError(start + i + 2, f"Missing number after {following!r}")
                value, after = pair  # a Y read earlier stays, as libclamav's modval2 does
                if _char(text, after) == ",":
                    second = c_unsigned(text, after + 1)
                    if second is not None:
                        distinct = second[0]
                i += 2
                while i + 1 < length and (text[start + i + 1] in _DIGITS + ","):
                    i += 1
            if start + i + 1 == end:
                break
            block_mod = ""
        i += 1
    if parens:
        raise LogicError(end, "Missing closing parenthesis")
    if not op and not op1:
        if _char(text, start) == "(":
            return _parse(text, start + 1, end - 1, depth + 1)
        number = c_unsigned(text, start)
        if number is None:
            raise LogicError(start, "Can't parse the expression (a subsignature number expected)")
        if not mod:
            return Leaf(number[0])
        count = c_unsigned(text, start + mod_at + 1)
        if count is None:
            raise LogicError(start + mod_at + 1, f"Missing number after {mod!r}")
        return Leaf(number[0], mod, count[0])
    left_start, right_end = start, end
    if not op:
        op, op_at = op1, op1_at
        left_start, right_end = start + 1, start + block_end
    if not op_at:
        raise LogicError(start, "Missing left argument")
    if op_at + 1 == length:
        raise LogicError(end, "Missing right argument")
    left = _parse(text, left_start, start + op_at, depth + 1)
    right = _parse(text, start + op_at + 1, right_end, depth + 1)
    if not block_mod:
        return Node(op, left, right)
    return Node(op, left, right, block_mod, value, distinct)


def _compare(mod: str, count: int, value: int) -> bool:
    if mod == "=":
        return count == value
    if mod == "<":
        return count < value
    return count > value


def _evaluate(tree: Expression, counts: list[int]) -> tuple[bool, int, int]:
    """(holds, matches counted, bit set of the subsignatures counted), as ``cli_ac_chklsig``."""
    if isinstance(tree, Leaf):
        count = counts[tree.index]
        if tree.mod is not None:
            if not _compare(tree.mod, count, tree.value):
                return False, 0, 0
            return True, count, 1 << tree.index
        return (True, count, 1 << tree.index) if count else (False, 0, 0)
    left, left_count, left_ids = _evaluate(tree.left, counts)
    right, right_count, right_ids = _evaluate(tree.right, counts)
    holds = (left and right) if tree.op == "&" else (left or right)
    if tree.mod is None:
        if holds:
            return True, left_count + right_count, left_ids | right_ids
        return False, 0, 0
    count, ids = (left_count + right_count, left_ids | right_ids) if holds else (0, 0)
    if not _compare(tree.mod, count, tree.value):
        return False, 0, 0
    if tree.distinct and ids.bit_count() < tree.distinct:
        return False, 0, 0
    return True, count, 0  # libclamav adds the group's count but not its subsignatures


def holds(tree: Expression, counts: list[int]) -> bool:
    """Whether the expression holds when subsignature n matched ``counts[n]`` times."""
    return _evaluate(tree, counts)[0]
