"""The fast literal finder: a Hyperscan database in stream mode.

Models: the same job as ``aho_corasick`` (every occurrence of every anchor literal, across chunk
boundaries), done by Intel's Hyperscan, which compiles the literal set into SIMD-friendly matchers
and runs at gigabytes per second on rfxn-sized sets. A stream keeps a few hundred bytes of state
(389 B for rfxn.ndb) instead of an overlap buffer.

Follows: Hyperscan 5.4 through python-hyperscan 0.9 (PyPI ``hyperscan``, statically linked), and
works around two of its binding bugs: ``literal=True`` truncates a pattern at its first NUL, so
every byte is written as a ``\\xNN`` escape in an ordinary expression; and a stream holds only a
borrowed reference to its match callback, so the callback is a bound method kept alive by the
stream object. Flags: ``HS_FLAG_DOTALL`` only, not ``SINGLEMATCH``: a disk needs every occurrence,
not one per stream.

Sharding: Hyperscan's compiler takes about 4.5 s for 100,000 literals on one core, and releases
the GIL while it works. ``HyperscanMatcher(literals, shards=n)`` compiles n interleaved slices on
n threads at once (two shards of 100,000: about 2-3 s on two cores) and runs n streams side by
side; each shard scans every byte, so two shards scan 100,000 literals about 40% slower than one
database (measured 0.9 against 1.4 GB/s on random data). The update service no longer uses it:
a large update's first stage is the pyahocorasick automaton, cheaper to build (docs/SIGNATURES.md).

Serialised: ``dump()`` gives each shard's database as Hyperscan's own serialised bytes
(``hs_serialize_database``) and ``HyperscanMatcher.load`` reads them back (about 0.3 ms for
rfxn.ndb, against about 65 ms to compile): ``hv-emu scan`` keeps them in its cache
(``hv_emu/scanner/cache.py``). A deserialised database comes without a scratch space; ``load``
allocates one. The bytes are compiled for the host's CPU features, so the cache's key names them.

Leaves out: start-of-match reporting (the anchor length gives the start), and thread sharing: a
database owns one scratch space, so streams of one database must be fed from one thread at a time.

Guest controls: the chunks (many matches mean many Python callbacks: slower, never more state) and,
through updates, the literals.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import hyperscan

from hv_emu.errors import HvEmuError

#: The binding's version (Hyperscan itself is linked into it): part of the cache key.
VERSION = f"python-hyperscan {getattr(hyperscan, '__version__', 'unknown')}"


class HyperscanCompileError(HvEmuError):
    """Hyperscan refused the literal set (too large for its compiler or for memory); the database
    loader turns it into a ``DatabaseError`` naming the database."""


def _expression(literal: bytes) -> bytes:
    """A literal as a Hyperscan expression that matches exactly its bytes, NUL included."""
    # "41|42|43" -> "\\x41\\x42\\x43", in two C-level passes (100,000 literals in milliseconds).
    return ("\\x" + literal.hex("|").replace("|", "\\x")).encode("ascii")


def _compile(literals: Sequence[bytes], ids: Sequence[int]) -> hyperscan.Database:
    """One stream-mode database whose expression ids are the literals' indexes in the whole set."""
    database = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    database.compile(
        expressions=[_expression(literal) for literal in literals],
        ids=list(ids),
        elements=len(literals),
        flags=[hyperscan.HS_FLAG_DOTALL] * len(literals),
    )
    return database


class HyperscanStream:
    """One open Hyperscan stream per shard; hits are collected by the callback, handed out per
    feed."""

    def __init__(self, databases: Sequence[hyperscan.Database]) -> None:
        self._databases = databases  # the streams borrow them
        self._hits: list[tuple[int, int]] = []
        self._on_match = self._record  # the streams borrow the callback: keep it referenced
        self._streams = [database.stream(match_event_handler=self._on_match)
                         for database in databases]  # fmt: skip
        for stream in self._streams:
            stream.__enter__()  # hs_open_stream
        self._open = True

    def _record(self, literal: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append((literal, end))

    def feed(self, chunk: bytes) -> list[tuple[int, int]]:
        """Return (literal index, absolute end offset, exclusive) for every hit ending in chunk."""
        for stream in self._streams:
            stream.scan(chunk)
        hits, self._hits = self._hits, []
        return hits

    def close(self) -> None:
        """hs_close_stream: frees the stream state (the binding's destructor does not)."""
        if self._open:
            self._open = False
            for stream in self._streams:
                stream.close()

    def __del__(self) -> None:
        self.close()


class HyperscanMatcher:
    """Stream-mode Hyperscan databases (one per shard) whose expression ids are literal indexes."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[bytes], shards: int = 1) -> None:
        self.shards = max(1, min(shards, len(literals)))
        slices = [range(first, len(literals), self.shards) for first in range(self.shards)]
        databases: list[hyperscan.Database | None] = [None] * self.shards
        failures: list[str] = []

        def build(shard: int) -> None:
            ids = slices[shard]
            try:
                databases[shard] = _compile([literals[i] for i in ids], ids)
            except hyperscan.error as error:
                failures.append(str(error))
            except Exception as error:  # e.g. MemoryError: never leave a shard silently out
                failures.append(f"{type(error).__name__}: {error}")

        # The compiler releases the GIL: shards compile on as many cores at once.
        workers = [threading.Thread(target=build, args=(shard,), name=f"hs-shard-{shard}")
                   for shard in range(1, self.shards)]  # fmt: skip
        for worker in workers:
            worker.start()
        build(0)
        for worker in workers:
            worker.join()
        if failures:
            raise HyperscanCompileError(failures[0])
        self._databases = [database for database in databases if database is not None]

    @classmethod
    def load(cls, blobs: Sequence[bytes]) -> HyperscanMatcher:
        """A matcher from ``dump()``'s bytes; raises ``HyperscanCompileError`` for bytes Hyperscan
        refuses (another version, another CPU, corrupt)."""
        if not blobs:
            raise HyperscanCompileError("no serialised database")
        matcher = cls.__new__(cls)
        matcher.shards = len(blobs)
        databases = []
        try:
            for blob in blobs:
                database = hyperscan.loadb(blob, hyperscan.HS_MODE_STREAM)
                database.scratch = hyperscan.Scratch(database)  # loadb gives none
                databases.append(database)
        except hyperscan.error as error:
            raise HyperscanCompileError(f"cannot load a serialised database: {error}") from None
        matcher._databases = databases
        return matcher

    def dump(self) -> list[bytes]:
        """Each shard's database, serialised by Hyperscan (for ``load``)."""
        return [bytes(hyperscan.dumpb(database)) for database in self._databases]

    def open(self) -> HyperscanStream:
        return HyperscanStream(self._databases)
