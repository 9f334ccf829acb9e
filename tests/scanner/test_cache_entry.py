"""The cache entry's payload (``hv_emu/scanner/cache_entry.py``): decoded lazily, never trusted
beyond its layout, and a damaged entry file is rebuilt whatever the damage."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.scanner import database_files
from hv_emu.scanner.cache import SUFFIX, Cache
from hv_emu.scanner.cache_entry import CACHE_FORMAT, LazyGroups, LazySignatures
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase
from hv_emu.scanner.database_files import compile_files

ENGINES = ["ac", "hyperscan"] if HYPERSCAN_AVAILABLE else ["ac"]
#: Plain literals, a verified body, a chain, an absolute and an end-relative offset, and a line
#: accepted but not applied (its warning must survive the cache as text).
NDB = (
    b"Plain:0:*:" + b"hv-emu-entry".hex().encode() + b"\n"
    b"Twice:0:*:" + b"hv-emu-entry".hex().encode() + b"\n"
    b"Wild:0:*:414243??4445(46|47)*484950\n"
    b"At:0:4:61626364\n"
    b"Tail:0:EOF-4:54414c21\n"
    b"Pe:1:EP+0:4d5a9000\n"
)
DATA = b"....abcd hv-emu-entry ABC\x00DEG xx HIP TAL!"
NAMES = {"Plain", "Twice", "Wild", "At", "Tail"}


def load(tmp_path: Path, engine: str = ENGINES[-1]) -> tuple[SignatureDatabase, Cache, Path]:
    """A database compiled into a fresh cache, and read back from it."""
    path = tmp_path / "t.ndb"
    path.write_bytes(NDB)
    cache = Cache(tmp_path / "cache")
    compile_files([path], engine=engine, cache=cache)
    return compile_files([path], engine=engine, cache=cache), cache, path


def names(db: SignatureDatabase) -> set[str]:
    return {match.name for match in db.scan(DATA)}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_clean_scan_decodes_no_pattern_and_a_hit_only_its_own(
    tmp_path: Path, engine: str
) -> None:
    db, _, _ = load(tmp_path, engine)
    groups = db.program.patterns_by_literal
    assert isinstance(groups, LazyGroups) and isinstance(db.signatures, LazySignatures)
    assert db.scan(b"nothing to see here, " * 50) == []
    assert groups._decoded == [None] * len(groups)  # a clean file needed none
    stream = db.open_stream()
    found = stream.feed(b"xx hv-emu-entry xx")
    stream.close()
    assert {m.name for m in found} == {"Plain", "Twice"}
    assert sum(group is not None for group in groups._decoded) == 1
    assert db.signatures._decoded is None  # the signatures are not parsed, even for warnings
    assert len(db.not_applied) == 1 and "Pe" in db.not_applied[0]
    assert len(db.end_relative) == 1 and "Tail" in db.end_relative[0]
    assert db.signatures._decoded is None


@pytest.mark.parametrize("engine", ENGINES)
def test_the_lazy_database_is_the_compiled_one(tmp_path: Path, engine: str) -> None:
    db, _, path = load(tmp_path, engine)
    fresh = compile_files([path], engine=engine)
    assert names(db) == names(fresh) == NAMES
    assert db == fresh and db.signatures == fresh.signatures == tuple(fresh.signatures)
    assert len(db.signatures) == len(fresh.signatures) and db.signatures[0] == fresh.signatures[0]
    assert db.not_applied == fresh.not_applied and db.end_relative == fresh.end_relative
    groups, expected = db.program.patterns_by_literal, fresh.program.patterns_by_literal
    assert len(groups) == len(expected) and groups[-1] is groups[len(groups) - 1]  # kept
    assert [[p.name for p in g] for g in groups[:]] == [[p.name for p in g] for g in expected]
    with pytest.raises(IndexError):
        groups[len(groups)]


def test_splitting_is_decided_without_decoding_a_pattern(tmp_path: Path) -> None:
    from hv_emu.cli.scan_parallel import splittable

    db, _, _ = load(tmp_path)  # "At" and "Tail" are not at '*': not splittable
    assert splittable(db) is False and db.program.patterns_by_literal._decoded[0] is None
    anywhere = tmp_path / "anywhere.ndb"
    anywhere.write_bytes(b"A:0:*:616263\nB:0:*:646566\n")
    cache = Cache(tmp_path / "cache2")
    compiled = compile_files([anywhere], cache=cache)
    warm = compile_files([anywhere], cache=cache)
    assert splittable(warm) is True is splittable(compiled)
    assert isinstance(warm.program.patterns_by_literal, LazyGroups)
    assert warm.program.patterns_by_literal._decoded == [None, None]


def entry_dict(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    _, cache, path = load(tmp_path)
    key = database_files.cache_key([(str(path), NDB, "ndb")], ENGINES[-1])
    payload = cache.get(key)
    assert payload is not None
    entry = pickle.loads(payload)
    assert entry["format"] == CACHE_FORMAT
    return entry, path


def rebuilt(entry: dict[str, Any], path: Path) -> SignatureDatabase | None:
    return database_files._from_payload(pickle.dumps(entry), [(str(path), NDB, "ndb")])


def test_a_payload_whose_layout_is_wrong_is_refused(tmp_path: Path) -> None:
    """Past the MAC, the layout is still checked: each of these is a miss, not a crash."""
    entry, path = entry_dict(tmp_path)
    assert rebuilt(entry, path) is not None
    ends = entry["ends"]
    bad: list[tuple[str, object]] = [
        ("format", CACHE_FORMAT - 1),
        ("ends", ends[:-8]),  # one group fewer than literals
        ("ends", ends + ends[-8:]),  # one more
        ("ends", ends[:-1]),  # not whole numbers
        ("ends", ends[8:16] + ends[:8] + ends[16:]),  # out of order
        ("groups", "not bytes"),
        ("ends", bytes(8) + ends[8:]),  # a first group of no bytes
        ("offsets_anywhere", 1),
        ("signature_count", "6"),
        ("signature_count", -1),
        ("not_applied", ("ok", 3)),
        ("end_relative", "a string, not lines"),
        ("hyperscan", [b"not a database"]),
        ("program", {}),
        ("database", None),
    ]
    for name, value in bad:
        assert rebuilt(entry | {name: value}, path) is None, name
    assert rebuilt({k: v for k, v in entry.items() if k != "ends"}, path) is None
    late = rebuilt(entry | {"groups": b"not zlib"}, path)  # checked on the first hit
    assert late is not None and late.scan(b"nothing") == []
    with pytest.raises(ValueError, match="do not decompress"):
        late.scan(DATA)
    for junk in (b"", b"\x80\x05N.", pickle.dumps([1, 2, 3]), b"\x80\x05"):  # not even a dict
        assert database_files._from_payload(junk, []) is None


VALUES = st.one_of(st.none(), st.integers(), st.binary(max_size=64), st.text(max_size=8),
                   st.lists(st.binary(max_size=8), max_size=4).map(tuple))  # fmt: skip


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(field=st.sampled_from(["format", "database", "program", "groups", "ends", "offsets_anywhere",
                              "signature_count", "not_applied", "end_relative", "hyperscan"]),
       value=VALUES)  # fmt: skip
def test_any_field_replaced_by_anything_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, field: str, value: object
) -> None:
    if "entry" not in ENTRY:
        ENTRY["entry"] = entry_dict(tmp_path_factory.mktemp("entry"))
    entry, path = ENTRY["entry"]
    db = rebuilt(entry | {field: value}, path)
    if db is None:
        return
    # Only lines of text can be swapped for other lines; a count for another count, and the
    # compressed patterns for other bytes, are checked as they are decoded.
    assert field in ("not_applied", "end_relative", "signature_count", "groups")
    if field == "groups":
        with pytest.raises(ValueError, match="patterns"):  # on the first hit
            names(db)
        return
    assert names(db) == NAMES
    if field == "signature_count" and value != len(NDB.splitlines()):
        with pytest.raises(ValueError, match="not what its header says"):
            tuple(db.signatures)


ENTRY: dict[str, tuple[dict[str, Any], Path]] = {}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_a_damaged_entry_file_is_rebuilt_never_trusted(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Truncated, bit-flipped, overwritten or extended: the scan gives the compiled answer and
    the entry is written again whole."""
    tmp_path = tmp_path_factory.mktemp("damaged")
    _, cache, path = load(tmp_path)
    (entry,) = sorted(cache.path.glob("*" + SUFFIX))
    good = entry.read_bytes()
    how = data.draw(st.sampled_from(["truncate", "flip", "overwrite", "extend"]))
    # A place as a fraction: the entry's length varies with the temporary directory's name.
    at = data.draw(st.integers(0, 2**20 - 1)) * len(good) >> 20
    if how == "truncate":
        damaged = good[:at]
    elif how == "flip":
        damaged = bytearray(good)
        damaged[at] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "overwrite":
        junk = data.draw(st.binary(min_size=1, max_size=64))
        damaged = bytearray(good)
        damaged[at : at + len(junk)] = junk
        if bytes(damaged) == good:
            return
    else:
        damaged = good + data.draw(st.binary(min_size=1, max_size=64))
    entry.write_bytes(bytes(damaged))
    db = compile_files([path], cache=cache)
    assert names(db) == NAMES and db.count == 6
    assert not isinstance(db.signatures, LazySignatures), "a damaged entry was used"
    assert entry.read_bytes() == good
