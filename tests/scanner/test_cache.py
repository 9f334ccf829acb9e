"""The compiled-database cache: hits give the same database, keys name what they must, and a
corrupt, truncated, forged or planted entry is a silent miss (docs/SIGNATURES.md, "The cache")."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from hv_emu.scanner import cache as cache_module
from hv_emu.scanner import database_files as database
from hv_emu.scanner.cache import MAGIC, SECRET, SUFFIX, Cache, default_path
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase
from hv_emu.scanner.database_files import compile_files

ENGINES = ["ac"] + (["hyperscan"] if HYPERSCAN_AVAILABLE else [])
#: Every kind of line the engine treats differently: a plain literal, wildcards and alternatives
#: (verified), a multi-part chain, anchored bytes, an absolute and an end-relative offset, and a
#: line that is accepted but never applied.
NDB = (
    b"Plain:0:*:" + b"hv-emu-test-body".hex().encode() + b"\n"
    b"Wild:0:*:414243??4445(46|47)*484950\n"
    b"Anchored:0:*:5a[1-3]4b4c4d\n"
    b"At:0:4:61626364\n"
    b"Tail:0:EOF-4:54414c21\n"
    b"Pe:1:EP+0:4d5a9000\n"
)
DATA = (b"....abcd hv-emu-test-body ABC\x00DEG xx HIP Z.KLM " * 3) + b"TAL!"


def write_db(tmp_path: Path, data: bytes = NDB, name: str = "t.ndb") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def entries(cache: Cache) -> list[Path]:
    return sorted(cache.path.glob("*" + SUFFIX))


def same(a: SignatureDatabase, b: SignatureDatabase) -> None:
    assert (a.count, a.kind, a.source, a.sha256, a.engine) == (
        b.count, b.kind, b.source, b.sha256, b.engine)  # fmt: skip
    assert a.signatures == b.signatures
    assert a.not_applied == b.not_applied
    assert a.program.literals == b.program.literals
    for cut in (1, 7, len(DATA)):  # every match, across chunk boundaries too
        found = []
        for db in (a, b):
            stream = db.open_stream(len(DATA))
            chunks = [DATA[i : i + cut] for i in range(0, len(DATA), cut)]
            found.append([match for chunk in chunks for match in stream.feed(chunk)])
            stream.close()
        assert found[0] == found[1]
    assert {m.name for m in a.scan(DATA)} == {"Plain", "Wild", "Anchored", "At", "Tail"}


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the parses from here on (a hit parses nothing)."""
    calls: list[str] = []
    real = database.parse_database

    def counting(data: bytes, *, kind: str, source: str) -> object:
        calls.append(source)
        return real(data, kind=kind, source=source)

    monkeypatch.setattr(database, "parse_database", counting)
    return calls


@pytest.mark.parametrize("engine", ENGINES)
def test_a_hit_is_the_same_database_without_parsing(
    tmp_path: Path, engine: str, no_parse: list[str]
) -> None:
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    first = compile_files([path], engine=engine, cache=cache)
    assert len(no_parse) == 1 and len(entries(cache)) == 1
    second = compile_files([path], engine=engine, cache=cache)
    assert len(no_parse) == 1, "the second load parsed again: the entry was not used"
    same(second, first)
    same(second, compile_files([path], engine=engine))


def test_the_directory_and_files_are_private(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "parent" / "hv-emu")
    compile_files([write_db(tmp_path)], cache=cache)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o700
    for path in [*entries(cache), cache.path / SECRET]:
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert not [p for p in cache.path.iterdir() if p.name.endswith(".tmp")]


def test_the_default_place_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "hv-emu"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the spec says: ignore it
    assert default_path() == Path.home() / ".cache" / "hv-emu"


def test_the_key_names_content_kind_name_engine_code_and_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [("t.ndb", NDB, "ndb")]
    key = database.cache_key(files, "hyperscan")
    assert key != database.cache_key([("t.ndb", NDB + b"X:0:*:414243\n", "ndb")], "hyperscan")
    assert key != database.cache_key([("u.ndb", NDB, "ndb")], "hyperscan")  # names are in it
    assert key != database.cache_key([("t.ndb", NDB, "db")], "hyperscan")
    assert key != database.cache_key(files * 2, "hyperscan")
    assert key != database.cache_key(files, "ac")
    monkeypatch.setattr(database, "_cpu_features", lambda: "sse2")
    assert key != database.cache_key(files, "hyperscan")
    monkeypatch.undo()
    monkeypatch.setattr(database, "_code_digest", lambda: "other code")
    assert key != database.cache_key(files, "hyperscan")
    monkeypatch.undo()
    monkeypatch.setattr(database, "__version__", "9.9")
    assert key != database.cache_key(files, "hyperscan")


def test_a_changed_database_is_rebuilt(tmp_path: Path, no_parse: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    compile_files([path], cache=cache)
    path.write_bytes(NDB.replace(b"Plain", b"Other"))
    db = compile_files([path], cache=cache)
    assert len(no_parse) == 2 and "Other" in {s.name for s in db.signatures}


def damage_each_way(entry: Path) -> list[bytes]:
    good = entry.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    return [
        bytes(flipped),  # one bit of the payload
        good[: len(good) // 2],  # truncated
        good[: len(MAGIC) + 10],  # inside the MAC
        b"",  # empty
        b"HVEMUDB0" + good[len(MAGIC):],  # another layout's magic
        good[:len(MAGIC)] + bytes(32) + good[len(MAGIC) + 32:],  # MAC zeroed
        good + b"\0",  # one byte more
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_damaged_entry_is_rebuilt_silently(
    tmp_path: Path, engine: str, no_parse: list[str]
) -> None:
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    reference = compile_files([path], engine=engine, cache=cache)
    (entry,) = entries(cache)
    good = entry.read_bytes()
    for count, damaged in enumerate(damage_each_way(entry), start=2):
        entry.write_bytes(damaged)
        same(compile_files([path], engine=engine, cache=cache), reference)
        assert len(no_parse) == count, "a damaged entry was used"
        assert entry.read_bytes() == good  # rewritten whole
    compile_files([path], engine=engine, cache=cache)
    assert len(no_parse) == count  # and used again


def test_an_entry_under_another_secret_is_never_unpickled(tmp_path: Path) -> None:
    """A planted entry (right layout, a pickle that would run code) fails the MAC unread."""
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    compile_files([path], cache=cache)
    (entry,) = entries(cache)
    witness = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (exec, (f"open({str(witness)!r}, 'w').close()",))

    payload = pickle.dumps(Evil())
    forged = cache_module._mac(os.urandom(32), entry.name[: -len(SUFFIX)], payload)
    entry.write_bytes(MAGIC + forged + payload)
    assert compile_files([path], cache=cache).count == 6
    assert not witness.exists()


def test_an_entry_copied_under_another_key_is_a_miss(tmp_path: Path, no_parse: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    one, two = write_db(tmp_path, name="one.ndb"), write_db(tmp_path, b"B:0:*:414243\n", "two.ndb")
    compile_files([one], cache=cache)
    compile_files([two], cache=cache)
    first, second = entries(cache)
    second.write_bytes(first.read_bytes())  # a valid entry, for another key
    assert len(no_parse) == 2
    for path in (one, two):
        db = compile_files([path], cache=cache)
        assert db.source == str(path)
    assert len(no_parse) == 3  # the swapped one was rebuilt, the other used


def test_an_unloadable_hyperscan_database_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_parse: list[str]
) -> None:
    if not HYPERSCAN_AVAILABLE:
        pytest.skip("hyperscan is not installed")
    from hv_emu.scanner.engines import hyperscan_stream

    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    reference = compile_files([path], cache=cache)

    def refuse(blobs: object) -> object:
        raise hyperscan_stream.HyperscanCompileError("another CPU")

    monkeypatch.setattr(hyperscan_stream.HyperscanMatcher, "load", refuse)
    same(compile_files([path], cache=cache), reference)
    assert len(no_parse) == 2
    with pytest.raises(hyperscan_stream.HyperscanCompileError):
        monkeypatch.undo()
        hyperscan_stream.HyperscanMatcher.load([b"not a database"])


def test_planted_links_are_never_followed(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    compile_files([path], cache=cache)
    (entry,) = entries(cache)
    good = entry.read_bytes()
    target = tmp_path / "target"
    target.write_bytes(good)  # a valid entry, behind a link
    entry.unlink()
    entry.symlink_to(target)
    assert cache.get(entry.name[: -len(SUFFIX)]) is None
    compile_files([path], cache=cache)
    assert not entry.is_symlink() and entry.read_bytes() == good  # the link was replaced
    assert target.read_bytes() == good  # and what it pointed to never written
    secret = cache.path / SECRET
    key = secret.read_bytes()
    outside = tmp_path / "outside-secret"
    outside.write_bytes(key)
    outside.chmod(0o600)
    secret.unlink()
    secret.symlink_to(outside)
    assert cache.get(entry.name[: -len(SUFFIX)]) is None  # a linked secret is no secret
    compile_files([path], cache=cache)
    assert not secret.is_symlink() and outside.read_bytes() == key


def test_a_secret_others_can_read_is_replaced(tmp_path: Path, no_parse: list[str]) -> None:
    cache = Cache(tmp_path / "cache")
    path = write_db(tmp_path)
    compile_files([path], cache=cache)
    secret = cache.path / SECRET
    old = secret.read_bytes()
    secret.chmod(0o644)
    compile_files([path], cache=cache)  # miss: the entry's MAC is under a secret that leaked
    assert len(no_parse) == 2
    assert secret.read_bytes() != old and stat.S_IMODE(secret.stat().st_mode) == 0o600
    compile_files([path], cache=cache)
    assert len(no_parse) == 2


@pytest.mark.parametrize("how", ["link", "group-writable", "file"])
def test_an_unsafe_directory_is_not_used(tmp_path: Path, how: str, no_parse: list[str]) -> None:
    place = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if how == "link":
        place.symlink_to(elsewhere)
    elif how == "group-writable":
        place.mkdir()
        place.chmod(0o770)
    else:
        place.write_bytes(b"not a directory")
    cache = Cache(place)
    path = write_db(tmp_path)
    for _ in range(2):
        assert compile_files([path], cache=cache).count == 6
    assert len(no_parse) == 2  # no cache, no error
    assert list(elsewhere.iterdir()) == []
    if how == "group-writable":
        assert list(place.iterdir()) == []


def test_old_entries_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_ENTRIES", 2)
    cache = Cache(tmp_path / "cache")
    for key in ("a" * 64, "b" * 64, "c" * 64):
        assert cache.put(key, key.encode())
        os.utime(cache.path / (key + SUFFIX), ns=(ord(key[0]) * 10**9,) * 2)
    cache.put("d" * 64, b"d")
    assert [p.name[0] for p in entries(cache)] == ["c", "d"]
    assert cache.get("c" * 64) == b"c" * 64


def test_an_unwritable_cache_still_compiles(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        cache = Cache(parent / "hv-emu")
        assert compile_files([write_db(tmp_path)], cache=cache).count == 6
    finally:
        parent.chmod(0o700)
