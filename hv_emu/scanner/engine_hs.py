"""The fast literal finder: a Hyperscan database in stream mode.

Models: the same job as ``engine_ac`` (every occurrence of every anchor literal, across chunk
boundaries), done by Intel's Hyperscan, which compiles the literal set into SIMD-friendly matchers
and runs at gigabytes per second on rfxn-sized sets. A stream keeps a few hundred bytes of state
(389 B for rfxn.ndb) instead of an overlap buffer.

Follows: Hyperscan 5.4 through python-hyperscan 0.9 (PyPI ``hyperscan``, statically linked), and
works around two of its binding bugs: ``literal=True`` truncates a pattern at its first NUL, so
every byte is written as a ``\\xNN`` escape in an ordinary expression; and a stream holds only a
borrowed reference to its match callback, so the callback is a bound method kept alive by the
stream object. Flags: ``HS_FLAG_DOTALL`` only, not ``SINGLEMATCH``: a disk needs every occurrence,
not one per stream.

Leaves out: start-of-match reporting (the anchor length gives the start), and thread sharing: a
database owns one scratch space, so streams of one database must be fed from one thread at a time.

Guest controls: the chunks (many matches mean many Python callbacks: slower, never more state) and,
through updates, the literals.
"""

from __future__ import annotations

from collections.abc import Sequence

import hyperscan


class HyperscanCompileError(Exception):
    """Hyperscan refused the literal set (too large for its compiler or for memory)."""


def _expression(literal: bytes) -> bytes:
    """A literal as a Hyperscan expression that matches exactly its bytes, NUL included."""
    # "41|42|43" -> "\\x41\\x42\\x43", in two C-level passes (100,000 literals in milliseconds).
    return ("\\x" + literal.hex("|").replace("|", "\\x")).encode("ascii")


class HyperscanStream:
    """One open Hyperscan stream; hits are collected by the callback and handed out per feed."""

    def __init__(self, database: hyperscan.Database) -> None:
        self._database = database  # the stream borrows it
        self._hits: list[tuple[int, int]] = []
        self._on_match = self._record  # the stream borrows the callback: keep it referenced
        self._stream = database.stream(match_event_handler=self._on_match)
        self._stream.__enter__()  # hs_open_stream
        self._open = True

    def _record(self, literal: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append((literal, end))

    def feed(self, chunk: bytes) -> list[tuple[int, int]]:
        """Return (literal index, absolute end offset, exclusive) for every hit ending in chunk."""
        self._stream.scan(chunk)
        hits, self._hits = self._hits, []
        return hits

    def close(self) -> None:
        """hs_close_stream: frees the stream state (the binding's destructor does not)."""
        if self._open:
            self._open = False
            self._stream.close()

    def __del__(self) -> None:
        self.close()


class HyperscanMatcher:
    """A stream-mode Hyperscan database whose expression ids are literal indexes."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[bytes]) -> None:
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
        try:
            self._database.compile(
                expressions=[_expression(literal) for literal in literals],
                ids=list(range(len(literals))),
                elements=len(literals),
                flags=[hyperscan.HS_FLAG_DOTALL] * len(literals),
            )
        except hyperscan.error as error:
            raise HyperscanCompileError(str(error)) from None

    def open(self) -> HyperscanStream:
        return HyperscanStream(self._database)
