"""A compiled database as a cache entry's payload: loaded without one Python object per pattern.

Models: the cached form of a ``SignatureDatabase`` (``hv-emu scan``'s cache, ``cache.py``). A scan
of one clean file needs the database's identity, its warnings, the program's few numbers and the
Hyperscan database, never a pattern: the literal finder reports no hit. So the payload keeps the
patterns as compressed bytes, decoded only when wanted: decompressed on the first hit, then one
literal's group at a time, on the first hit of that literal (``LazyGroups``). The parsed
signatures are not kept at all: a scan never reads them, so they are parsed again from the
database files if something ever does (``LazySignatures``); the ``not_applied`` and
``end_relative`` lines, which a scan prints or may ask for, are kept as text. Loading rfxn.ndb's
entry this way unpickles a few thousand small objects (the literals, the numbers) instead of
every pattern's and signature's objects, and reads a third of the bytes (docs/SIGNATURES.md,
"Start-up, the cache and -j"; docs/PERFORMANCE.md).

The payload is one pickle (protocol 5) of a dict: ``format`` (``CACHE_FORMAT``), ``database`` (the
scalar fields and the ``HashSet``), ``program`` (the ``Program``'s fields but its groups),
``groups`` (each literal's group of ``Pattern`` pickled on its own, end to end, compressed
together by zlib at level 1), ``ends`` (where each group's pickle ends in the decompressed bytes,
as an ``array('Q')``'s bytes), ``offsets_anywhere`` (every pattern at offset ``*``: what ``-j``
asks before it cuts a file), ``signature_count``, ``not_applied`` and ``end_relative`` (their
lines), ``hyperscan`` (the serialised databases).

Follows: pickle's protocol 5; slotted dataclasses pickled as their field values (``_Pickler``);
zlib (RFC 1950) for the patterns.

Leaves out: the MAC and the store (``cache.py``), the key (``database_files.cache_key``).

Guest controls: nothing. The user's cache directory is hostile all the same: a payload reaches
here only after its MAC verified (it is what this user's hv-emu wrote, so it may be unpickled),
and ``from_payload`` still checks the layout it relies on (every field's type, the groups' ends
in order, one group per literal) before it returns a database: any surprise is None, and the
caller compiles afresh. What is decoded later (the compressed patterns, the signatures parsed
again) is checked against the header when it is (``ValueError``: a bug, as only this code
writes what passes the MAC).
"""

from __future__ import annotations

import io
import operator
import pickle
from array import array
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any, overload

from hv_emu.scanner.database import SignatureDatabase
from hv_emu.scanner.program import Pattern, Program

if TYPE_CHECKING:
    from hv_emu.scanner.engine import LiteralMatcher
    from hv_emu.scanner.signatures import Signature

#: The layout of a cache entry's payload; part of the key, so a change simply misses.
CACHE_FORMAT = 3
_SCALARS = ("version", "kind", "source", "sha256", "count", "engine", "shards")
_PROGRAM = ("literals", "history", "widest", "gap_max", "simple", "logical")

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
    import dataclasses

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
        import dataclasses  # only a writer pays for it

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


def _dumps(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer).dump(obj)
    return buffer.getvalue()


class LazyGroups(Sequence[tuple[Pattern, ...]]):
    """``Program.patterns_by_literal`` read from a cache entry: the groups' pickles, compressed
    together, are decompressed on the first access to any group, and group ``i`` (the patterns of
    literal ``i``) unpickled on its first access and kept, so a pattern is one object for the
    stream's life (``ScanStream`` keys candidates by its ``id``)."""

    __slots__ = ("_blob", "_decoded", "_ends", "_packed", "offsets_anywhere")

    def __init__(self, packed: bytes, ends: array[int], offsets_anywhere: bool) -> None:
        self._packed = packed
        self._blob: memoryview | None = None
        self._ends = ends
        self._decoded: list[tuple[Pattern, ...] | None] = [None] * len(ends)
        #: Whether every pattern's offset is ``*``, recorded when the entry was written: what
        #: ``hv_emu/cli/scan_parallel.py``'s ``splittable`` asks, answered without decoding.
        self.offsets_anywhere = offsets_anywhere

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> tuple[Pattern, ...]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[Pattern, ...]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[Pattern, ...] | list[tuple[Pattern, ...]]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        index = range(len(self))[index]  # IndexError past the end, as a tuple's
        group = self._decoded[index]
        if group is None:
            blob = self._blob if self._blob is not None else self._unpack()
            start = self._ends[index - 1] if index else 0
            group = self._decoded[index] = pickle.loads(blob[start : self._ends[index]])
        return group

    def _unpack(self) -> memoryview:
        import zlib  # only a hit pays for it

        try:
            blob = zlib.decompress(self._packed)
        except zlib.error as error:
            raise ValueError(f"a cache entry's patterns do not decompress: {error}") from None
        if len(blob) != self._ends[-1]:
            raise ValueError("a cache entry's patterns are not what its header says")
        self._blob = memoryview(blob)
        return self._blob


class LazySignatures(Sequence["Signature"]):
    """``SignatureDatabase.signatures`` of a database read from a cache entry: parsed again from
    the database files (``parse``) on first use, which a scan never makes. The entry keeps only
    what every scan may print: ``not_applied_lines`` and ``end_relative_lines``, the database's
    lines about them (``SignatureDatabase.not_applied`` reads them without parsing)."""

    __slots__ = ("_count", "_decoded", "_parse", "end_relative_lines", "not_applied_lines")

    def __init__(
        self, parse: Callable[[], Sequence[Signature]], count: int, not_applied: tuple[str, ...],
        end_relative: tuple[str, ...],
    ) -> None:  # fmt: skip
        self._parse = parse
        self._count = count
        self._decoded: tuple[Signature, ...] | None = None
        self.not_applied_lines = not_applied
        self.end_relative_lines = end_relative

    def _all(self) -> tuple[Signature, ...]:
        if self._decoded is None:
            decoded = tuple(self._parse())
            if len(decoded) != self._count:
                raise ValueError("a cache entry's signatures are not what its header says")
            self._decoded = decoded
        return self._decoded

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> Signature: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Signature, ...]: ...

    def __getitem__(self, index: int | slice) -> Signature | tuple[Signature, ...]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Signature]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazySignatures):
            other = other._all()
        return isinstance(other, tuple) and self._all() == other

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return f"LazySignatures({self._count} signatures)"


def to_payload(db: SignatureDatabase, hyperscan: list[bytes] | None) -> bytes:
    """``db`` as a cache entry's payload; ``hyperscan``: its literal finder's serialised
    databases (None for pyahocorasick, whose automaton is rebuilt on load)."""
    import zlib  # only a writer (and a hit) pays for it

    groups = [_dumps(tuple(group)) for group in db.program.patterns_by_literal]
    ends = array("Q")
    end = 0
    for blob in groups:
        end += len(blob)
        ends.append(end)
    return _dumps({
        "format": CACHE_FORMAT,
        "database": {name: getattr(db, name) for name in _SCALARS} | {"hashes": db.hashes},
        "program": {name: getattr(db.program, name) for name in _PROGRAM},
        "groups": zlib.compress(b"".join(groups), 1),
        "ends": ends.tobytes(),
        "offsets_anywhere": all(pattern.offset.kind == "any"
                                for group in db.program.patterns_by_literal for pattern in group),
        "signature_count": len(db.signatures),
        "not_applied": db.signatures_not_applied,
        "end_relative": db.end_relative,
        "hyperscan": hyperscan,
    })  # fmt: skip


def _groups(entry: dict[str, Any], literals: tuple[bytes, ...]) -> LazyGroups | None:
    """The groups of an entry, if their ends are in order, one per literal (the compressed
    bytes are checked as they are decompressed, on the first hit)."""
    packed, raw, anywhere = entry["groups"], entry["ends"], entry["offsets_anywhere"]
    if not isinstance(packed, bytes) or not isinstance(raw, bytes) or len(raw) % 8:
        return None
    if not isinstance(anywhere, bool):
        return None
    ends = array("Q")
    ends.frombytes(raw)
    if len(ends) != len(literals) or (ends and ends[0] == 0):
        return None
    if not all(map(operator.lt, ends, islice(ends, 1, None))):  # rising (at C speed)
        return None
    return LazyGroups(packed, ends, anywhere)


def _text_lines(value: object) -> tuple[str, ...] | None:
    ok = isinstance(value, tuple) and all(isinstance(line, str) for line in value)
    return value if ok else None  # type: ignore[return-value]


def from_payload(
    payload: bytes,
    load_matcher: Callable[[str, Program, Any], LiteralMatcher | None],
    parse: Callable[[], Sequence[Signature]],
) -> SignatureDatabase | None:
    """The database a payload of ``to_payload`` holds, or None if it cannot be rebuilt (the caller
    then compiles it). ``load_matcher(engine, program, hyperscan)`` gives the literal finder
    (raising if it cannot); ``parse()`` the body signatures, parsed again from the database
    files if they are ever wanted. The payload passed the cache's MAC (``cache.py``)."""
    try:
        entry = pickle.loads(payload)
        if not isinstance(entry, dict) or entry.get("format") != CACHE_FORMAT:
            return None
        scalars, fields = entry["database"], entry["program"]
        literals = fields["literals"]
        if not isinstance(literals, tuple) or not set(map(type, literals)) <= {bytes}:
            return None
        groups = _groups(entry, literals)
        not_applied = _text_lines(entry["not_applied"])
        end_relative = _text_lines(entry["end_relative"])
        count = entry["signature_count"]
        if groups is None or not_applied is None or end_relative is None:
            return None
        if not isinstance(count, int) or count < 0:
            return None
        program = Program(literals, groups, fields["history"], fields["widest"],
                          fields["gap_max"], fields["simple"], fields["logical"])  # fmt: skip
        kept = {name: scalars[name] for name in _SCALARS}
        signatures = LazySignatures(parse, count, not_applied, end_relative)
        matcher = load_matcher(kept["engine"], program, entry["hyperscan"])
        return SignatureDatabase(signatures=signatures, program=program, matcher=matcher,
                                 hashes=scalars["hashes"], **kept)  # fmt: skip
    except Exception:  # an entry this code cannot use is a miss, whatever it holds
        return None
