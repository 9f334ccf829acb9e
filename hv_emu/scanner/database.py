"""The signature database in force: compiled once, scanned by many streams, swapped atomically.

Models: what a BitVisor-style hypervisor holds after loading (or receiving as an update) a ClamAV
``.db``/``.ndb`` file: the parsed signatures, the literal finder compiled from them, and the
identity of the raw data (version, kind, source, SHA-256), so the event log can say which database
found what. ``ActiveDatabase`` is the one slot the disk path reads; an update compiles the new
database off to the side and swaps it in with one assignment under a lock, so a scan in progress
finishes on the database it started with.

Follows: clamd's reload model (build the new engine fully, then switch) and ClamAV's refusal of a
whole database over one bad line. ``compile_database(engine="auto")`` picks Hyperscan when it
imports and pyahocorasick otherwise; both give the same matches. ``compile_signatures`` is the
compile half alone, which the update service runs off the vCPU path after parsing on it.

Leaves out: version policy (an older update than the one in force is the
update verifier's business, not this module's); several ``--db`` files as one database, and the
cache of compiled databases (``database_files.py``).

Guest controls: through updates, the raw data (parsed by ``signatures``, which bounds its work and
raises only ``DatabaseError``); never the engine choice.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.engine import LiteralMatcher, Match, ScanStream
from hv_emu.scanner.hashes import HashSet
from hv_emu.scanner.kinds import HASH_KINDS, LOGICAL_KINDS
from hv_emu.scanner.program import PlainLiteral, Program, build_program
from hv_emu.scanner.record import Frozen, setfield

if TYPE_CHECKING:
    from hv_emu.scanner.logical_match import LogicalTable
    from hv_emu.scanner.signatures import Signature

try:
    from hv_emu.scanner.engines import hyperscan_stream as engine_hs
except ImportError:  # hyperscan is optional: pyahocorasick is always there
    HYPERSCAN_AVAILABLE = False
else:
    HYPERSCAN_AVAILABLE = True

ENGINES = ("auto", "ac", "hyperscan")


def resolve_engine(engine: str) -> str:
    """``"hyperscan"`` or ``"ac"``: what ``engine`` (one of ``ENGINES``) means here. Raises
    ``ConfigError`` for an unknown engine, or ``"hyperscan"`` without Hyperscan installed."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown scanner engine {engine!r} (expected one of {ENGINES})")
    if engine == "hyperscan" and not HYPERSCAN_AVAILABLE:
        raise ConfigError("scanner engine 'hyperscan' asked for, but hyperscan does not import")
    if engine == "hyperscan" or (engine == "auto" and HYPERSCAN_AVAILABLE):
        return "hyperscan"
    return "ac"


def _literal_matcher(
    program: Program, engine: str, source: str, shards: int = 1
) -> LiteralMatcher | None:
    """The literal finder for ``engine`` (Hyperscan in ``shards`` databases compiled at once);
    None when there is nothing to find."""
    engine = resolve_engine(engine)
    if not program.literals:
        return None
    if engine == "hyperscan":
        try:
            return engine_hs.HyperscanMatcher(program.literals, shards)
        except engine_hs.HyperscanCompileError as error:
            raise DatabaseError(source, 0, 0, f"Hyperscan cannot compile it: {error}") from None
    from hv_emu.scanner.engines import aho_corasick as engine_ac  # the reference: only if asked

    return engine_ac.AhoCorasickMatcher(program.literals)


class SignatureDatabase(Frozen):
    """A parsed and compiled database; immutable, shared by every stream opened on it. Equal to
    another with the same identity, signatures, engine and hashes (program, matcher and shards
    are not compared); a record, not a dataclass, so a scan imports no ``dataclasses``
    (``record.py``): ``replace`` is ``dataclasses.replace``'s stand-in."""

    __slots__ = ("version", "kind", "source", "sha256", "count", "signatures", "engine",  # noqa: RUF023 (__init__'s order)
                 "program", "matcher", "shards", "hashes")  # fmt: skip
    version: int
    kind: str
    source: str
    sha256: str  # hex digest of the raw data
    count: int  # signatures (database lines), not expanded variants or literals
    #: A tuple, or a cache entry's signatures decoded on first use (``cache_entry.py``); an
    #: update read by ``bulk.py`` leaves its plain lines out.
    signatures: Sequence[Signature]
    engine: str  # "ac", "hyperscan" or "none" (nothing to match)
    program: Program
    matcher: LiteralMatcher | None
    shards: int  # Hyperscan databases a stream runs side by side
    #: Hash signatures (``.hdb``/``.hsb``/``.mdb``/``.msb``): whole files, ``hv-emu scan`` only.
    hashes: HashSet

    def __init__(
        self, version: int, kind: str, source: str, sha256: str, count: int,
        signatures: Sequence[Signature], engine: str, program: Program,
        matcher: LiteralMatcher | None, shards: int = 1, hashes: HashSet | None = None,
    ) -> None:  # fmt: skip
        hashes = HashSet() if hashes is None else hashes
        for name, value in (("version", version), ("kind", kind), ("source", source),
                            ("sha256", sha256), ("count", count), ("signatures", signatures),
                            ("engine", engine), ("program", program), ("matcher", matcher),
                            ("shards", shards), ("hashes", hashes)):  # fmt: skip
            setfield(self, name, value)

    def _values(self) -> tuple[object, ...]:  # what == compares, as the dataclass did
        return (self.version, self.kind, self.source, self.sha256, self.count, self.signatures,
                self.engine, self.hashes)  # fmt: skip

    __hash__ = None  # type: ignore[assignment]  # its hashes hold dicts, as the dataclass's did

    def __repr__(self) -> str:
        return (f"SignatureDatabase(version={self.version!r}, kind={self.kind!r}, "
                f"source={self.source!r}, sha256={self.sha256!r}, count={self.count!r}, "
                f"engine={self.engine!r}, shards={self.shards!r})")  # fmt: skip

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return SignatureDatabase, tuple([getattr(self, name) for name in self.__slots__])

    def replace(self, **changes: Any) -> SignatureDatabase:
        """A copy with ``changes`` (field name to value), as ``dataclasses.replace``."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"SignatureDatabase has no field {sorted(unknown)[0]!r}")
        return SignatureDatabase(**(fields | changes))

    @classmethod
    def empty(cls) -> SignatureDatabase:
        """Version 0, no signatures: what the hypervisor boots with when no ``--db`` is given."""
        return cls(
            version=0,
            kind="ndb",
            source="<empty>",
            sha256=hashlib.sha256(b"").hexdigest(),
            count=0,
            signatures=(),
            engine="none",
            program=build_program(()),
            matcher=None,
        )

    @property
    def not_applied(self) -> tuple[str, ...]:
        """One line per signature accepted but never matched, naming file, line and reason (and
        one per file of PE-section hashes)."""
        logical = self.program.logical
        return (self.signatures_not_applied + (() if logical is None else logical.not_applied)
                + self.hashes.not_applied())  # fmt: skip

    @property
    def signatures_not_applied(self) -> tuple[str, ...]:
        """The lines of ``not_applied`` about body signatures (``.db``/``.ndb``)."""
        kept: tuple[str, ...] | None = getattr(self.signatures, "not_applied_lines", None)
        if kept is not None:  # a cache entry's, kept as text (cache_entry.py)
            return kept
        return tuple(
            f"{s.source or self.source}:{s.line}: {s.name}: {s.not_applied}; not applied"
            for s in self.signatures
            if s.not_applied is not None
        )

    @property
    def end_relative(self) -> tuple[str, ...]:
        """One line per ``EOF-n`` signature: it matches only where the length is known."""
        kept: tuple[str, ...] | None = getattr(self.signatures, "end_relative_lines", None)
        if kept is not None:  # a cache entry's, kept as text (cache_entry.py)
            return kept
        return tuple(
            f"{s.source or self.source}:{s.line}: {s.name}: offset {s.offset.text!r} needs the "
            "data's length; one-shot scans only"
            for s in self.signatures
            if s.offset.kind == "eof" and s.not_applied is None
        )

    def open_stream(self, length: int | None = None) -> ScanStream:
        """A new stream at offset 0: one per disk (length unknown), or per file of ``length``."""
        literals = None if self.matcher is None else self.matcher.open()
        return ScanStream(self.program, literals, length)

    def scan(self, data: bytes) -> list[Match]:
        """Scan one buffer from offset 0 (``hv-emu scan`` on a file)."""
        stream = self.open_stream(len(data))
        try:
            return stream.feed(data)
        finally:
            stream.close()

    def describe(self) -> str:
        """One line for logs and ``hv-emu`` banners."""
        skipped = len(self.not_applied)
        applied = f" ({skipped} not applied)" if skipped else ""
        return (
            f"{self.source} v{self.version} ({self.kind}, {self.count} signatures{applied}, "
            f"{len(self.program.literals)} literals, engine {self.engine}, "
            f"sha256 {self.sha256[:16]}...)"
        )


def compile_database(
    data: bytes, *, kind: str, version: int, source: str, engine: str = "auto"
) -> SignatureDatabase:
    """Parse and compile raw database bytes.

    Raises ``DatabaseError`` for bad data (the only error the data can cause) and ``ConfigError``
    for an unknown engine or ``engine="hyperscan"`` without Hyperscan installed.
    """
    digest = hashlib.sha256(data).hexdigest()
    from hv_emu.scanner.hashes import parse_hash_database
    from hv_emu.scanner.signatures import parse_database  # only a compile pays for the parser

    if kind in LOGICAL_KINDS:  # hv-emu run --db FILE.ldb
        from hv_emu.scanner.logical import LogicalTable, parse_ldb_database

        table = LogicalTable.build(parse_ldb_database(data, source=source))
        return compile_signatures((), kind, version, source, digest, engine, logical=table)
    if kind in HASH_KINDS:  # hv-emu run --db FILE.hdb: accepted, applied to whole files only
        hashes = HashSet.build(parse_hash_database(data, kind=kind, source=source))
        db = compile_signatures((), kind, version, source, digest, engine)
        return db.replace(count=len(hashes.signatures), hashes=hashes)
    signatures = parse_database(data, kind=kind, source=source)
    return compile_signatures(signatures, kind, version, source, digest, engine)


def compile_signatures(
    signatures: Sequence[Signature | PlainLiteral], kind: str, version: int, source: str,
    sha256: str, engine: str = "auto", *, shards: int = 1, logical: LogicalTable | None = None,
    anchors: str = "prefix",
) -> SignatureDatabase:
    """Compile parsed signatures: the slow half of ``compile_database``, which an update runs off
    the vCPU path; ``shards`` > 1 compiles Hyperscan faster on several cores, to scan slower
    (``engine_hs``). Raises ``DatabaseError`` only if the literal finder refuses the set.
    ``signatures`` may hold ``PlainLiteral`` lines (``bulk.py``): they count and match, and
    are not kept as ``Signature`` objects (nothing reads a plain line's). ``anchors`` is
    ``build_program``'s (``rare`` for ``hv-emu scan``, which compiles once into its cache)."""
    program = build_program(signatures, logical, anchors=anchors)
    matcher = _literal_matcher(program, engine, source, shards)
    return SignatureDatabase(
        version=version,
        kind=kind,
        source=source,
        sha256=sha256,
        count=len(signatures) + (0 if logical is None else len(logical.signatures)),
        signatures=tuple(s for s in signatures if not isinstance(s, tuple)),
        engine="none" if matcher is None else matcher.name,
        program=program,
        matcher=matcher,
        shards=getattr(matcher, "shards", 1),
    )


def recompile(db: SignatureDatabase, engine: str = "auto") -> SignatureDatabase:
    """The same database (same signatures, same ``Program`` object) with its literal finder
    compiled again as one database: the second stage of a sharded activation. A stream of either
    can be handed to the other's finder (``ScanStream.switch_literals``)."""
    matcher = _literal_matcher(db.program, engine, db.source)
    return db.replace(engine="none" if matcher is None else matcher.name, matcher=matcher,
                      shards=1)  # fmt: skip


class ActiveDatabase:
    """The database in force. Readers take ``current``; an update replaces it with ``swap``."""

    def __init__(self, initial: SignatureDatabase) -> None:
        self._lock = threading.Lock()
        self._current = initial

    @property
    def current(self) -> SignatureDatabase:
        # Reading one attribute is atomic; the lock orders it after any swap in progress.
        with self._lock:
            return self._current

    def swap(self, new: SignatureDatabase) -> SignatureDatabase:
        """Put ``new`` in force and return the database it replaces."""
        with self._lock:
            old, self._current = self._current, new
            return old
