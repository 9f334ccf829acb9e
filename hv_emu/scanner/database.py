"""The signature database in force: compiled once, scanned by many streams, swapped atomically.

Models: what a BitVisor-style hypervisor holds after loading (or receiving as an update) a ClamAV
``.db``/``.ndb`` file: the parsed signatures, the literal finder compiled from them, and the
identity of the raw data (version, kind, source, SHA-256), so the event log can say which database
found what. ``ActiveDatabase`` is the one slot the disk path reads; an update compiles the new
database off to the side and swaps it in with one assignment under a lock, so a scan in progress
finishes on the database it started with.

Follows: clamd's reload model (build the new engine fully, then switch) and ClamAV's refusal of a
whole database over one bad line. ``compile_database(engine="auto")`` picks Hyperscan when it
imports and pyahocorasick otherwise; both give the same matches. ``compile_files`` loads several
files as one database (``hv-emu scan --db A --db B``), through a ``Cache`` when given one
(``hv_emu/scanner/cache.py``; the entry is the parsed signatures and ``Program``, pickled, and the
Hyperscan database as Hyperscan serialises it, under ``cache_key``); ``compile_signatures`` is the
compile half alone, which the update service runs off the vCPU path after parsing on it.

Leaves out: version policy (an older update than the one in force is the
update verifier's business, not this module's).

Guest controls: through updates, the raw data (parsed by ``signatures``, which bounds its work and
raises only ``DatabaseError``); never the engine choice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hv_emu import __version__
from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.engine import LiteralMatcher, Match, ScanStream
from hv_emu.scanner.hashes import HashSet, parse_hash_database
from hv_emu.scanner.program import Program, build_program
from hv_emu.scanner.signatures import (
    HASH_KINDS,
    LOADABLE_KINDS,
    LOGICAL_KINDS,
    PUA_KINDS,
    UNSUPPORTED_KINDS,
    Signature,
    load_database_file,
    parse_database,
)

if TYPE_CHECKING:
    from hv_emu.scanner.cache import Cache
    from hv_emu.scanner.logical_match import LogicalTable

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


@dataclass(frozen=True)
class SignatureDatabase:
    """A parsed and compiled database; immutable, shared by every stream opened on it."""

    version: int
    kind: str
    source: str
    sha256: str  # hex digest of the raw data
    count: int  # signatures (database lines), not expanded variants or literals
    signatures: tuple[Signature, ...] = field(repr=False)
    engine: str  # "ac", "hyperscan" or "none" (nothing to match)
    program: Program = field(repr=False, compare=False)
    matcher: LiteralMatcher | None = field(repr=False, compare=False)
    shards: int = field(default=1, compare=False)  # Hyperscan databases a stream runs side by side
    #: Hash signatures (``.hdb``/``.hsb``/``.mdb``/``.msb``): whole files, ``hv-emu scan`` only.
    hashes: HashSet = field(default_factory=HashSet, repr=False)

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
        return tuple(
            f"{s.source or self.source}:{s.line}: {s.name}: {s.not_applied}; not applied"
            for s in self.signatures
            if s.not_applied is not None
        ) + (() if logical is None else logical.not_applied) + self.hashes.not_applied()

    @property
    def end_relative(self) -> tuple[str, ...]:
        """One line per ``EOF-n`` signature: it matches only where the length is known."""
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
    if kind in LOGICAL_KINDS:  # hv-emu run --db FILE.ldb
        from hv_emu.scanner.logical import LogicalTable, parse_ldb_database

        table = LogicalTable.build(parse_ldb_database(data, source=source))
        return compile_signatures((), kind, version, source, digest, engine, logical=table)
    if kind in HASH_KINDS:  # hv-emu run --db FILE.hdb: accepted, applied to whole files only
        hashes = HashSet.build(parse_hash_database(data, kind=kind, source=source))
        db = compile_signatures((), kind, version, source, digest, engine)
        return dataclasses.replace(db, count=len(hashes.signatures), hashes=hashes)
    signatures = parse_database(data, kind=kind, source=source)
    return compile_signatures(signatures, kind, version, source, digest, engine)


def database_paths(paths: Sequence[Path]) -> list[Path]:
    """``--db`` arguments with each directory replaced by its database files, as ``clamscan -d
    DIR`` loads them (measured on 1.4.6): files directly inside (not in subdirectories, hidden
    ones too, links followed) whose name ends in a database suffix, in any case, sorted by name.
    PUA databases (``.hdu``, ``.ndu`` ...) are skipped, as clamscan skips them without
    ``--detect-pua``; other files silently. A directory with a database kind hv-emu does not
    implement (``.fp``, ``.cvd`` ...) is refused, as is one with no database to load.
    Raises ``ConfigError``: one line naming the path."""
    result: list[Path] = []
    for path in paths:
        if not path.is_dir():
            result.append(path)
            continue
        try:
            names = sorted(os.listdir(path))
        except OSError as error:
            raise ConfigError(f"{path}: cannot list database directory: {error.strerror}") from None
        found: list[Path] = []
        for name in names:
            _, dot, suffix = name.rpartition(".")
            kind = suffix.lower() if dot else ""  # ".hdb" alone is a database too
            if kind not in LOADABLE_KINDS + PUA_KINDS + UNSUPPORTED_KINDS:
                continue
            if not (path / name).is_file():  # a subdirectory named x.db, a dangling link
                continue
            if kind in UNSUPPORTED_KINDS:
                raise ConfigError(f"{path / name}: ClamAV database kind .{kind} is not supported "
                                  "by hv-emu (clamscan would load it)")  # fmt: skip
            if kind in LOADABLE_KINDS:
                found.append(path / name)
        if not found:
            raise ConfigError(f"{path}: No supported database files found")
        result += found
    return result


def compile_files(
    paths: Sequence[Path], *, engine: str = "auto", cache: Cache | None = None
) -> SignatureDatabase:
    """Load several database files as one database (``hv-emu scan --db A --db B``); a directory
    stands for its database files (``database_paths``). Hash databases go to ``hashes``.

    Each file is parsed on its own, so an error names the file it is in; the SHA-256 covers the
    files in order. With a ``cache``, the compiled database is taken from it when an entry under
    ``cache_key`` passes its check, and stored in it otherwise (a cache that cannot be used is
    passed by). Raises ``ConfigError`` (unreadable file, bad suffix, engine) or ``DatabaseError``.
    """
    if not paths:
        raise ConfigError("no signature database given")
    files = [(str(path), *load_database_file(path)) for path in database_paths(paths)]
    resolved = resolve_engine(engine)
    key = None
    if cache is not None:
        key = cache_key(files, resolved)
        payload = cache.get(key)
        cached = None if payload is None else _from_payload(payload)
        if cached is not None:
            return cached
    signatures: list[Signature] = []
    hash_signatures = []
    logical: list[Any] = []
    digest = hashlib.sha256()
    for source, data, kind in files:
        if kind in HASH_KINDS:
            hash_signatures += parse_hash_database(data, kind=kind, source=source)
        elif kind in LOGICAL_KINDS:
            from hv_emu.scanner.logical import parse_ldb_database

            logical += parse_ldb_database(data, source=source)
        else:
            signatures += parse_database(data, kind=kind, source=source)
        digest.update(data)
    kinds = {kind for _, _, kind in files}
    kind = kinds.pop() if len(kinds) == 1 else "mixed"
    source = "+".join(source for source, _, _ in files)
    table = None
    if logical:
        from hv_emu.scanner.logical import LogicalTable

        table = LogicalTable.build(logical)
    db = compile_signatures(signatures, kind, 0, source, digest.hexdigest(), resolved,
                            logical=table)  # fmt: skip
    if hash_signatures:
        hashes = HashSet.build(hash_signatures)
        db = dataclasses.replace(db, count=db.count + len(hash_signatures), hashes=hashes)
    if cache is not None and key is not None:
        cache.put(key, _to_payload(db))
    return db


#: The layout of a cache entry's payload; part of the key, so a change simply misses.
CACHE_FORMAT = 2
#: The modules whose code decides what a database parses and compiles to: their bytes are part
#: of the key, so an entry never outlives the code that wrote it (even at one version number).
_CODE = ("body.py", "pattern.py", "signatures.py", "hashes.py", "engine.py", "program.py",
         "database.py", "cache.py", "logical.py", "logical_expr.py", "logical_match.py",
         "engines/hyperscan_stream.py", "engines/aho_corasick.py")  # fmt: skip


def cache_key(files: Sequence[tuple[str, bytes, str]], engine: str) -> str:
    """The cache key (64 hex digits) for ``files`` (name as given, bytes, kind) compiled with
    ``engine``: it names the files' bytes, kinds and names (signatures carry the file's name), the
    engine and its version, hv-emu's version and scanner code, and the CPU features Hyperscan
    compiles for."""
    key = hashlib.sha256()
    key.update(f"hv-emu {__version__} format {CACHE_FORMAT}\n".encode())
    key.update(f"code {_code_digest()}\nengine {engine} {_engine_version(engine)}\n".encode())
    key.update(f"cpu {_cpu_features()}\n".encode())
    for name, data, kind in files:
        name_bytes = os.fsencode(name)
        key.update(b"file %d %b %b " % (len(name_bytes), name_bytes, kind.encode()))
        key.update(hashlib.sha256(data).digest())
    return key.hexdigest()


def _code_digest() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _CODE:
        try:
            digest.update(name.encode() + b"\0" + (here / name).read_bytes())
        except OSError:  # no source beside the bytecode: the version alone must do
            digest.update(name.encode() + b"\0?")
    return digest.hexdigest()


def _engine_version(engine: str) -> str:
    if engine == "hyperscan":
        return engine_hs.VERSION
    return "pyahocorasick (automaton rebuilt)"


def _cpu_features() -> str:
    """The CPU's feature flags (Hyperscan compiles for the host's): the first ``flags`` line of
    /proc/cpuinfo, read only as far as the first processor, else the machine's name."""
    try:
        fd = os.open("/proc/cpuinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            head = os.read(fd, 16384).decode("ascii", "replace")
        finally:
            os.close(fd)
        for line in head.splitlines():
            if line.startswith("flags"):
                return " ".join(sorted(line.partition(":")[2].split()))
    except OSError:
        pass
    return os.uname().machine


#: Set on every object rebuilt from a cache entry whose class has its own ``__init__``: as
#: dataclass's own ``__setstate__``, without its per-object ``fields()`` call.
_set = object.__setattr__


def _restore(cls: type, names: tuple[str, ...], values: tuple[Any, ...]) -> Any:
    obj: Any = object.__new__(cls)
    for name, value in zip(names, values, strict=True):
        _set(obj, name, value)
    return obj


def _plain_init(cls: type) -> bool:
    """Whether ``cls(*values)`` only stores its fields: a dataclass ``__init__`` that the
    decorator wrote (not one of the class's own), every field an argument, no ``__post_init__``."""
    init = cls.__dict__.get("__init__")
    return (getattr(getattr(init, "__code__", None), "co_filename", None) == "<string>"
            and not hasattr(cls, "__post_init__")
            and all(f.init for f in dataclasses.fields(cls)))  # fmt: skip


class _Pickler(pickle.Pickler):
    """Pickles slotted dataclasses (the parsed signatures, the ``Program``'s patterns) as their
    field values, given back to the class's generated ``__init__`` (or set by ``_restore``):
    dataclass's own ``__setstate__`` made loading rfxn.ndb's entry about twice as slow."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self._how: dict[type, tuple[Callable[..., Any] | None, tuple[str, ...]]] = {}

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        how = self._how.get(cls)
        if how is None:
            how = None, ()
            if dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__:
                names = tuple(f.name for f in dataclasses.fields(cls))
                how = (cls if _plain_init(cls) else _restore), names
            self._how[cls] = how
        rebuild, names = how
        if rebuild is None:
            return NotImplemented
        values = tuple(getattr(obj, name) for name in names)
        return (cls, values) if rebuild is cls else (_restore, (cls, names, values))


def _to_payload(db: SignatureDatabase) -> bytes:
    """``db`` as a cache entry's payload: everything but the literal finder pickled, and the
    Hyperscan database as Hyperscan serialises it (pyahocorasick's automaton is rebuilt)."""
    blobs = db.matcher.dump() if isinstance(db.matcher, engine_hs.HyperscanMatcher) else None
    fields_ = {f.name: getattr(db, f.name) for f in dataclasses.fields(db)}
    fields_.pop("matcher")
    buffer = io.BytesIO()
    _Pickler(buffer).dump({"format": CACHE_FORMAT, "database": fields_, "hyperscan": blobs})
    return buffer.getvalue()


def _from_payload(payload: bytes) -> SignatureDatabase | None:
    """The database a payload of ``_to_payload`` holds, or None if it cannot be rebuilt (the
    caller then compiles it). The payload passed the cache's MAC: it is what this user's
    hv-emu wrote, so it may be unpickled."""
    try:
        entry = pickle.loads(payload)
        if entry["format"] != CACHE_FORMAT:
            return None
        fields_ = entry["database"]
        engine, program = fields_["engine"], fields_["program"]
        matcher: LiteralMatcher | None = None
        if engine == "hyperscan":
            matcher = engine_hs.HyperscanMatcher.load(entry["hyperscan"])
        elif engine == "ac":
            from hv_emu.scanner.engines import aho_corasick as engine_ac

            matcher = engine_ac.AhoCorasickMatcher(program.literals)
        elif engine != "none":
            return None
        db = SignatureDatabase(matcher=matcher, **fields_)
        return db if isinstance(db.program, Program) else None
    except Exception:  # an entry this code cannot use is a miss, whatever it holds
        return None


def compile_signatures(
    signatures: Sequence[Signature], kind: str, version: int, source: str, sha256: str,
    engine: str = "auto", *, shards: int = 1, logical: LogicalTable | None = None,
) -> SignatureDatabase:
    """Compile parsed signatures: the slow half of ``compile_database``, which an update runs off
    the vCPU path; ``shards`` > 1 compiles Hyperscan faster on several cores, to scan slower
    (``engine_hs``). Raises ``DatabaseError`` only if the literal finder refuses the set."""
    program = build_program(signatures, logical)
    matcher = _literal_matcher(program, engine, source, shards)
    return SignatureDatabase(
        version=version,
        kind=kind,
        source=source,
        sha256=sha256,
        count=len(signatures) + (0 if logical is None else len(logical.signatures)),
        signatures=tuple(signatures),
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
    return dataclasses.replace(db, engine="none" if matcher is None else matcher.name,
                               matcher=matcher, shards=1)  # fmt: skip


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
