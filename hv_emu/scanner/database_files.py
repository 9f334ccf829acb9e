"""The ``--db`` files: directories of databases, several files compiled as one, through the cache.

Models: what ``clamscan -d`` does with its arguments (libclamav's ``cl_load``/``cli_loaddbdir``):
a directory stands for the database files in it, each file is parsed on its own (an error names
it), and together they make one database; and, hv-emu's own, the compiled database kept across
runs: ``cache_key`` (what an entry was built from) and the literal finder of an entry
(``_load_matcher``). The payload's layout is ``cache_entry.py``'s; the store itself, its MAC and
its hostile directory, is ``cache.py``.

Follows: clamscan 1.4.6's directory rules (PUA kinds skipped, kinds hv-emu does not implement
refused, "No supported database files found"), measured; docs/SIGNATURES.md (the cache).

Leaves out: compiling (``database.py``) and parsing (``signatures.py``, ``hashes.py``,
``logical.py``).

Guest controls: nothing; the user names the files. A cache entry is unpickled only after its MAC
verified (``cache.py``): it is what this user's hv-emu wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hv_emu import __version__
from hv_emu.errors import ConfigError
from hv_emu.scanner.cache_entry import CACHE_FORMAT, from_payload, to_payload
from hv_emu.scanner.database import SignatureDatabase, compile_signatures, resolve_engine
from hv_emu.scanner.kinds import (
    HASH_KINDS,
    KINDS,
    LOADABLE_KINDS,
    LOGICAL_KINDS,
    PUA_KINDS,
    UNSUPPORTED_KINDS,
    load_database_file,
)

if TYPE_CHECKING:
    from hv_emu.scanner.cache import Cache
    from hv_emu.scanner.engine import LiteralMatcher
    from hv_emu.scanner.program import Program
    from hv_emu.scanner.signatures import Signature

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


#: How ``hv-emu scan`` cuts anchors (``program.ANCHOR_POLICIES``): it compiles once into its
#: cache, so it takes the anchors that scan fastest (docs/SIGNATURES.md).
SCAN_ANCHORS = "rare"


def compile_files(
    paths: Sequence[Path], *, engine: str = "auto", cache: Cache | None = None,
    anchors: str = SCAN_ANCHORS,
) -> SignatureDatabase:  # fmt: skip
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
        key = cache_key(files, resolved, anchors)
        payload = cache.get(key)
        cached = None if payload is None else _from_payload(payload, files)
        if cached is not None:
            return cached
    from hv_emu.scanner.hashes import HashSet, parse_hash_database  # a warm cache parses nothing

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
                            logical=table, anchors=anchors)  # fmt: skip
    if hash_signatures:
        hashes = HashSet.build(hash_signatures)
        db = db.replace(count=db.count + len(hash_signatures), hashes=hashes)
    if cache is not None and key is not None:
        cache.put(key, _to_payload(db))
    return db


#: The modules whose code decides what a database parses and compiles to: their bytes are part
#: of the key, so an entry never outlives the code that wrote it (even at one version number).
_CODE = ("body.py", "body_parts.py", "record.py", "pattern.py", "signatures.py", "hashes.py",
         "engine.py", "program.py", "database.py", "database_files.py", "cache.py",
         "cache_entry.py", "kinds.py", "logical.py", "logical_expr.py", "logical_match.py",
         "engines/hyperscan_stream.py", "engines/aho_corasick.py")  # fmt: skip


def parse_database(data: bytes, *, kind: str, source: str) -> list[Signature]:
    """``signatures.parse_database``, imported only when a database is parsed: a scan whose
    database comes from the cache never imports the parser (docs/SIGNATURES.md)."""
    from hv_emu.scanner.signatures import parse_database as parse

    return parse(data, kind=kind, source=source)


def cache_key(files: Sequence[tuple[str, bytes, str]], engine: str,
              anchors: str = SCAN_ANCHORS) -> str:  # fmt: skip
    """The cache key (64 hex digits) for ``files`` (name as given, bytes, kind) compiled with
    ``engine`` and ``anchors``: it names the files' bytes, kinds and names (signatures carry the
    file's name), the engine and its version, how anchors are cut, hv-emu's version and scanner
    code, and the CPU features Hyperscan compiles for."""
    key = hashlib.sha256()
    key.update(f"hv-emu {__version__} format {CACHE_FORMAT}\n".encode())
    key.update(f"code {_code_digest()}\nengine {engine} {_engine_version(engine)}\n".encode())
    key.update(f"anchors {anchors}\n".encode())
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


def _load_matcher(engine: str, program: Program, hyperscan: Any) -> LiteralMatcher | None:
    """The literal finder of a cached database: Hyperscan's deserialised (raising if it cannot
    be), pyahocorasick's rebuilt from the literals."""
    if engine == "hyperscan":
        return engine_hs.HyperscanMatcher.load(hyperscan)
    if engine == "ac":
        from hv_emu.scanner.engines import aho_corasick as engine_ac

        return engine_ac.AhoCorasickMatcher(program.literals)
    if engine != "none":
        raise ValueError(f"unknown engine {engine!r} in a cache entry")
    return None


def _to_payload(db: SignatureDatabase) -> bytes:
    """``db`` as a cache entry's payload (``cache_entry.py``), with the Hyperscan database as
    Hyperscan serialises it (pyahocorasick's automaton is rebuilt)."""
    hs = db.matcher.dump() if isinstance(db.matcher, engine_hs.HyperscanMatcher) else None
    return to_payload(db, hs)


def _from_payload(
    payload: bytes, files: Sequence[tuple[str, bytes, str]]
) -> SignatureDatabase | None:
    """The database a payload of ``_to_payload`` holds, or None if it cannot be rebuilt; its body
    signatures, if ever wanted, are parsed again from ``files`` (name, bytes, kind: the ones the
    key was made from)."""

    def parse() -> list[Signature]:
        from hv_emu.scanner.signatures import parse_database as parse_again

        return [signature for source, data, kind in files if kind in KINDS
                for signature in parse_again(data, kind=kind, source=source)]  # fmt: skip

    return from_payload(payload, _load_matcher, parse)
