"""The reference literal finder: a pyahocorasick automaton, streamed with one iterator per stream.

Models: the Aho-Corasick trie libclamav builds in ``matcher-ac.c`` (there only 2-3 bytes deep, here
over whole anchor literals): one pass over the data finds every occurrence of every literal,
overlapping and nested ones included.

Follows: pyahocorasick 2.x. The PyPI wheel is the ``str`` build, so literals and chunks are decoded
with latin-1, which maps each byte to the character of the same number. Streaming uses the
documented iterator API: ``it = automaton.iter("")`` once, then ``it.set(chunk)`` per chunk with
``reset=False``, which keeps the automaton state and the position, so end indexes are absolute and
literals straddling chunk boundaries are found.

Leaves out: speed. It runs at about 18 MB/s on random binary data with rfxn.ndb (it walks unordered
child lists and chases fail links at scan time); it is the reference the fast engine is tested
against, never the hot path when Hyperscan is installed.

Guest controls: the chunks (and, through updates, the literals). State per stream is one iterator:
the automaton position plus a reference to the current chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import ahocorasick


class AhoCorasickStream:
    """One stream's position in the automaton."""

    def __init__(self, automaton: ahocorasick.Automaton) -> None:
        self._iterator = automaton.iter("")

    def feed(self, chunk: bytes) -> list[tuple[int, int]]:
        """Return (literal index, absolute end offset, exclusive) for every hit ending in chunk."""
        self._iterator.set(chunk.decode("latin-1"))
        return [(index, last + 1) for last, index in self._iterator]

    def close(self) -> None:
        """Nothing to release: the iterator is garbage-collected."""


class AhoCorasickMatcher:
    """An automaton over the anchor literals; the value stored for each literal is its index."""

    name = "ac"

    def __init__(self, literals: Sequence[bytes]) -> None:
        self._automaton = ahocorasick.Automaton()
        for index, literal in enumerate(literals):
            self._automaton.add_word(literal.decode("latin-1"), index)
        self._automaton.make_automaton()

    def open(self) -> AhoCorasickStream:
        return AhoCorasickStream(self._automaton)
