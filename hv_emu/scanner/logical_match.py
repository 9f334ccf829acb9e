"""Logical signatures (``.ldb``) at scan time: the table a database holds, and a stream's counts.

Models: what libclamav keeps for its logical signatures once loaded (``cli_ac_lsig``) and what a
scan keeps per file (``lsigcnt``, ``lsigsuboff_last``): each signature with its expression and
subsignature bodies; the bodies under hidden names (a NUL byte, which no real name may hold),
matched by the engine like any other signature; and per stream the count of each
subsignature's matches, from which the signatures that hold are reported.

Follows: ``lsig_sub_matched`` (matcher.c): a subsignature's match counts once per start offset,
in increasing order (a start no later than the last one counted is not counted again); and
clamscan's decision after the whole file (``cli_exp_eval``), for a stream of known length. The
line format is ``logical.py``'s business, the expression ``logical_expr.py``'s.

Leaves out: clamscan's per-file verdict on a disk: a write stream has no end, so a signature is
decided on the run's bytes so far (docs/SIGNATURES.md, "Logical signatures").

Guest controls: the scanned bytes (counts grow with matches, one integer per subsignature; the
state is bounded by the database, never by the data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hv_emu.scanner.engine import Match
from hv_emu.scanner.logical_expr import Expression, holds
from hv_emu.scanner.signatures import Signature

HIDDEN = "\0"  # the first character of a subsignature's hidden name


@dataclass(frozen=True, slots=True)
class LogicalSignature:
    """One ``.ldb`` line: its name, expression, and subsignature bodies (subsignature number and
    the ``Signature`` matched for it; ``::wa`` gives two for one number)."""

    name: str
    line: int
    source: str
    expression: Expression
    subsigs: int
    bodies: tuple[tuple[int, Signature], ...]
    file_size: tuple[int, int] | None = None
    not_applied: str | None = None

    def holds(self, counts: list[int], length: int | None) -> bool:
        """Whether it matches data ``length`` bytes long (None: unknown) with these counts."""
        if self.file_size is not None:
            low, high = self.file_size
            if length is None or not low <= length <= high:
                return False
        return holds(self.expression, counts)


@dataclass(frozen=True, slots=True, eq=False)
class LogicalTable:
    """The logical signatures of a database, and their bodies under hidden names."""

    signatures: tuple[LogicalSignature, ...]
    bodies: tuple[Signature, ...]  # every applied signature's bodies, renamed
    owner: dict[str, tuple[int, int]]  # hidden name -> (signature index, subsignature number)
    #: The applied signatures whose expression holds with no match at all (``0=0``): the only
    #: ones a stream must decide without a subsignature match of theirs.
    vacuous: tuple[int, ...] = ()

    @classmethod
    def build(cls, signatures: list[LogicalSignature]) -> LogicalTable:
        bodies: list[Signature] = []
        owner: dict[str, tuple[int, int]] = {}
        vacuous: list[int] = []
        for index, lsig in enumerate(signatures):
            if lsig.not_applied is not None:
                continue
            if holds(lsig.expression, [0] * lsig.subsigs):
                vacuous.append(index)
            for variant, (number, body) in enumerate(lsig.bodies):
                hidden = f"{HIDDEN}{index}.{number}.{variant}"
                owner[hidden] = (index, number)
                bodies.append(dataclasses.replace(body, name=hidden))
        return cls(tuple(signatures), tuple(bodies), owner, tuple(vacuous))

    @property
    def not_applied(self) -> tuple[str, ...]:
        return tuple(f"{s.source}:{s.line}: {s.name}: {s.not_applied}; not applied"
                     for s in self.signatures if s.not_applied is not None)  # fmt: skip

    def open(self, length: int | None) -> LogicalState:
        return LogicalState(self, length)


class LogicalState:
    """One stream's counts. With a known length the signatures are decided once, when the last
    byte has arrived (as clamscan decides them after the whole file); on a disk stream (length
    None) at every chunk that changed a count, and at the first chunk for those that hold without
    any match (``0=0``: ``LogicalTable.vacuous``). Only signatures with a match or such an
    expression are evaluated: the others cannot hold. Each fires at most once."""

    def __init__(self, table: LogicalTable, length: int | None) -> None:
        self._table = table
        self._length = length
        self._counts: dict[int, list[int]] = {}
        self._last: dict[tuple[int, int], int] = {}  # the last start counted, per subsignature
        self._latest: dict[int, Match] = {}  # the last subsignature match counted
        self._fired: set[int] = set()
        self._started = False
        self._decided = False
        self._chunk_start = 0  # where the chunk being fed starts: ``offset`` at the last feed

    def feed(self, matches: list[Match], offset: int) -> list[Match]:
        """The matches of a chunk with the subsignatures' taken out, and the logical signatures
        that hold now added; ``offset`` is the bytes fed so far."""
        table = self._table
        found: list[Match] = []
        touched: set[int] = set()
        chunk_start, self._chunk_start = self._chunk_start, offset
        for match in matches:
            key = table.owner.get(match.name)
            if key is None:
                found.append(match)
                continue
            if match.start <= self._last.get(key, -1):
                continue  # lsig_sub_matched: a start no later than the last counted
            self._last[key] = match.start
            index, number = key
            counts = self._counts.get(index)
            if counts is None:
                counts = self._counts[index] = [0] * table.signatures[index].subsigs
            counts[number] += 1
            self._latest[index] = match
            touched.add(index)
        if self._length is not None:
            if self._decided or offset < self._length:
                return found
            self._decided = True
            candidates = {*self._counts, *table.vacuous}  # every one that could hold
        elif not self._started:
            candidates = {*touched, *table.vacuous}
        else:
            candidates = touched
        self._started = True
        for index in sorted(candidates):
            lsig = table.signatures[index]
            if index in self._fired or lsig.not_applied is not None:
                continue
            counts = self._counts.get(index) or [0] * lsig.subsigs
            if lsig.holds(counts, self._length):
                self._fired.add(index)
                latest = self._latest.get(index)
                # Held with no match counted (vacuous, "0<1"): the bytes are the chunk that
                # decided it, on the disk path the write (docs/SIGNATURES.md, Logical signatures).
                start, end = (chunk_start, offset) if latest is None else (latest.start,
                                                                           latest.end)
                found.append(Match(lsig.name, start, end))  # in database order, as clamscan
        return found
