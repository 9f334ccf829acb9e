"""The ``--db`` files: directories of databases, several files compiled as one, through the cache.

Models: what ``clamscan -d`` does with its arguments (libclamav's ``cl_load``/``cli_loaddbdir``):
a directory stands for the database files in it, each file is parsed on its own (an error names
it), and together they make one database; and, hv-emu's own, the compiled database kept across
runs: ``cache_key`` (what an entry was built from) and the entry's payload (``_to_payload``,
``_from_payload``: the parsed signatures and ``Program`` pickled, the Hyperscan database as
Hyperscan serialises it). The store itself, its MAC and its hostile directory, is ``cache.py``.

Follows: clamscan 1.4.6's directory rules (PUA kinds skipped, kinds hv-emu does not implement
refused, "No supported database files found"), measured; docs/SIGNATURES.md (the cache).

Leaves out: compiling (``database.py``) and parsing (``signatures.py``, ``hashes.py``,
``logical.py``).

Guest controls: nothing; the user names the files. A cache entry is unpickled only after its MAC
verified (``cache.py``): it is what this user's hv-emu wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hv_emu import __version__
from hv_emu.errors import ConfigError
from hv_emu.scanner.database import SignatureDatabase, compile_signatures, resolve_engine
from hv_emu.scanner.engine import LiteralMatcher
from hv_emu.scanner.hashes import HashSet, parse_hash_database
from hv_emu.scanner.program import Program
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

# hyperscan is optional: without it, no entry holds a Hyperscan database.
with contextlib.suppress(ImportError):
    from hv_emu.scanner.engines import hyperscan_stream as engine_hs


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
         "database.py", "database_files.py", "cache.py", "logical.py", "logical_expr.py",
         "logical_match.py", "engines/hyperscan_stream.py", "engines/aho_corasick.py")  # fmt: skip


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
