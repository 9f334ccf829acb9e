"""Checking a ``.db``/``.ndb`` database text without building it: what an update's pause needs.

Models: the synchronous half of accepting a signature update. The guest must learn at once
whether the database text parses (``MALFORMED`` otherwise, docs/ABI.md), but the objects a
parse builds (a ``Signature``, a ``Part`` and a ``Literal`` per line) are needed only by the
compile, which runs on the update service's worker thread. ``check_database`` answers the
question alone: the number of signatures ``signatures.parse_database`` would return, or the very
``DatabaseError`` it would raise (same file, line, column and message), without a Python object
per signature.

Follows: ``signatures.parse_database`` line for line, limits included. Runs of lines that are
plain literals anywhere (``Name:0:*:HEX`` in ``.ndb``, ``Name=HEX`` in ``.db``: every line of a
typical update) are matched by one regular expression over the whole run; each such line is a
signature of one element, as the parser would make it. Runs of ``.ndb`` lines that are plain
literals or have only the commonest wildcards (``??``, ``(hh|hh)``, ``*``, ``{n-m}``: the rest
of a typical update, rfxn.ndb's lines) are matched by one of ``simple_lines.WILD_RUNS``, their
elements counted by ``simple_lines.run_elements`` from byte counts over the run; a run that
might reach a limit is walked line by line instead, so the error falls on the parser's line.
Any other line (a comment, another offset or target, an odd or short body, a name no run
covers) goes through the parser's own line functions; a line with only those wildcards through
``simple_lines.simple_form``, which checks it and counts its elements without building it (the
worker builds it, ``bulk.py``).
``tests/scanner/test_database_check.py`` holds the two to the same answer on generated texts.

``walk_database`` is the walk itself, for ``bulk.py`` too: the runs it found, and the
``Signature`` of every other line, in line order.

Leaves out: building a ``Signature`` for a line inside a run (``bulk.py`` reads the runs' lines
into plain literals for the compile worker).

Guest controls: the text (an update's body): bounded as the parser bounds it (size, line length,
signatures, elements) and raising only ``DatabaseError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from hv_emu.errors import DatabaseError
from hv_emu.scanner import signatures as _sig
from hv_emu.scanner.simple_lines import PLAIN_BODY, WILD_RUNS, run_elements, simple_form

# An even number of hex digits, at least 6 and below 60,000, without a group per pair (slow in
# Python's re): 6, then 32s, then at most one each of 16, 8, 4 and 2. Possessive: no backtracking.
_BODY = PLAIN_BODY
#: Runs of whole plain lines (each with its newline). Names and bodies are capped so that a line
#: never reaches ``MAX_LINE_LENGTH``; longer ones take the general path, which checks it.
_RUNS = {
    "ndb": re.compile(rb"(?:[\x21\x22\x24-\x39\x3b-\x7e][\x21-\x39\x3b-\x7e]{0,4095}:0:\*:"
                      + _BODY + rb"\r?\n)++"),
    # A .db name: printable, no '=' (the name ends there), no '(' (so no " (Clam)" to cut).
    "db": re.compile(rb"(?:[\x20-\x22\x24-\x27\x29-\x3c\x3e-\x7e][\x20-\x27\x29-\x3c\x3e-\x7e]"
                     rb"{0,4095}=" + _BODY + rb"\r?\n)++"),
}


def _run_limits(count: int, elements: int, number: int, lines: int, source: str) -> None:
    """The limit ``parse_database`` would hit inside a run of ``lines`` plain lines (each one
    signature of one element) following line ``number``, if any."""
    # Before line k of the run: count + k - 1 signatures and elements + k - 1 elements so far.
    signatures_at = _sig.MAX_SIGNATURES - count + 1
    elements_at = _sig.MAX_DATABASE_ELEMENTS - elements + 2
    first = max(1, min(signatures_at, elements_at))
    if first > lines:
        return
    if signatures_at <= elements_at:
        message = f"more than {_sig.MAX_SIGNATURES} signatures"
    else:
        message = f"more than {_sig.MAX_DATABASE_ELEMENTS} elements"
    raise DatabaseError(source, number + first, 0, message)


@dataclass(frozen=True)
class WildRun:
    """A run of ``.ndb`` lines ``simple_lines.WILD_RUN`` matched (each a plain literal or of
    ``simple_form``'s form, checked but not built): ``data[start:end]``, its first line's
    number, and how many lines it holds."""

    start: int
    end: int
    first: int
    lines: int


def _wild_run(data: bytes, at: int) -> tuple[re.Match[bytes] | None, int]:
    """The run of one of ``WILD_RUNS``'s forms at ``at``, and the braces its names hold."""
    for form, braces in WILD_RUNS:
        found = form.match(data, at)
        if found is not None:
            return found, braces
    return None, 0


#: What ``walk_database`` gives, in line order: a run of plain lines as its (start, end) in the
#: text (each line one signature of one element), a ``WildRun``, a line of ``simple_lines``'s
#: form as its (start, end, line number), checked but not built, or the ``Signature`` of any
#: other line.
Step = tuple[int, int] | tuple[int, int, int] | WildRun | _sig.Signature


def walk_database(data: bytes, *, kind: str, source: str) -> Iterator[Step]:
    """``parse_database``'s walk: runs of plain lines, and the ``Signature`` of every other line
    that gives one, in line order; raises exactly the ``DatabaseError`` ``parse_database`` raises
    (before giving the step it would fail at)."""
    if kind not in _sig.KINDS:
        raise DatabaseError(source, 0, 0, f"unknown database kind {kind!r} (expected db or ndb)")
    if len(data) > _sig.MAX_DATABASE_BYTES:
        raise DatabaseError(source, 0, 0, f"database larger than {_sig.MAX_DATABASE_BYTES} bytes")
    run = _RUNS[kind]
    count = elements = number = 0
    if not data:  # as parse_database: no line at all (a file of comments loads)
        raise DatabaseError(source, 0, 0, "Empty database file")
    at, end = 0, len(data)
    slow_until = 0  # a run near a limit is walked line by line, up to here
    while at < end:
        block = run.match(data, at)
        wild, braces = None, 0
        if block is None and kind == "ndb" and at >= slow_until:
            wild, braces = _wild_run(data, at)
        if wild is not None:
            lines = data.count(b"\n", at, wild.end())
            more = run_elements(data, at, wild.end(), lines, braces)
            # Clear of both limits (checked before each line, as below) for the whole run?
            if (count + lines - 1 < _sig.MAX_SIGNATURES
                    and elements + more <= _sig.MAX_DATABASE_ELEMENTS):  # fmt: skip
                yield WildRun(at, wild.end(), number + 1, lines)
                count, elements, number = count + lines, elements + more, number + lines
                at = wild.end()
                continue
            slow_until = wild.end()  # the lines below find where, as parse_database does
        if block is not None:
            lines = data.count(b"\n", at, block.end())
            _run_limits(count, elements, number, lines, source)
            count, elements, number = count + lines, elements + lines, number + lines
            yield at, block.end()
            at = block.end()
            continue
        newline = data.find(b"\n", at)
        stop = end if newline < 0 else newline
        raw = data[at:stop]
        first, at, number = at, stop + 1, number + 1
        # From here on, parse_database's loop body for one line.
        if len(raw) > _sig.MAX_LINE_LENGTH:
            raise DatabaseError(source, number, 0, f"line longer than {_sig.MAX_LINE_LENGTH} bytes")
        raw = _sig.c_line(raw)
        plain = _sig._PLAIN_NDB_LINE.fullmatch(raw) if kind == "ndb" else None
        # The common wildcard line (never a comment, never empty): checked, its elements counted.
        simple = simple_form(raw) if plain is None and kind == "ndb" else None
        text = ""
        if plain is None and simple is None:
            text = raw.decode("latin-1").rstrip("\r")
            if text.startswith("#"):
                continue
            if not text:
                raise DatabaseError(source, number, 1, "empty line")
        if count >= _sig.MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {_sig.MAX_SIGNATURES} signatures")
        if elements > _sig.MAX_DATABASE_ELEMENTS:
            raise DatabaseError(source, number, 0,
                                f"more than {_sig.MAX_DATABASE_ELEMENTS} elements")  # fmt: skip
        if plain is not None:
            count, elements = count + 1, elements + 1
            yield _sig.plain_signature(plain, number, source)
            continue
        if simple is not None:
            count, elements = count + 1, elements + simple
            yield first, first + len(raw), number  # the line as c_line cut it
            continue
        if kind == "db":
            signature = _sig._parse_db_line(text, source, number)
        else:
            signature = _sig._parse_ndb_line(text, source, number)
        if signature is not None:
            count += 1
            elements += sum(len(v) for part in signature.parts for v in part.variants)
            yield signature


def check_database(data: bytes, *, kind: str, source: str) -> int:
    """How many signatures ``parse_database(data, kind=kind, source=source)`` returns; raises
    exactly the ``DatabaseError`` it raises."""
    return check_steps(data, kind=kind, source=source)[0]


def check_steps(data: bytes, *, kind: str, source: str) -> tuple[int, list[Step]]:
    """``check_database``'s count, and the walk's steps (kept by an update for its compile
    worker, which then parses no line twice: ``bulk.entries_of``)."""
    count = 0
    steps = list(walk_database(data, kind=kind, source=source))
    for step in steps:
        if isinstance(step, tuple) and len(step) == 2:
            count += data.count(b"\n", step[0], step[1])
        elif isinstance(step, WildRun):
            count += step.lines
        else:
            count += 1
    return count, steps
