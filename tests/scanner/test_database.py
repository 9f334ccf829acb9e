"""The database object: identity, counts, engine choice, the empty boot database, atomic swap."""

from __future__ import annotations

import hashlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.database import (
    HYPERSCAN_AVAILABLE,
    ActiveDatabase,
    SignatureDatabase,
    compile_database,
)
from hv_emu.scanner.engine import Match
from tests.conftest import RFXN

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SAMPLE_DB = (
    b"Aircop=32e4cd16cd1233c0cd130e07b80002b9\n"
    b"Burghofer=8e06120033ff8bf30e1fb90d02f3a4\n"
    b"Burglar=03042e8ba4050433c033db2effac09045081c70304b90a00b87677902e31054790e2f958c3\n"
    b"Carnage=e8050502002ea3b5022ec706b3029f00b440b99f02ba1000cd21b8004233c999cd21b440b91a00\n"
    b"EICAR=" + EICAR.hex().encode() + b"\n"
)


def sample(version: int = 1, engine: str = "auto") -> SignatureDatabase:
    return compile_database(SAMPLE_DB, kind="db", version=version, source="sample.db",
                            engine=engine)


def test_identity_and_counts() -> None:
    db = sample(version=7, engine="ac")
    assert (db.version, db.kind, db.source, db.count) == (7, "db", "sample.db", 5)
    assert db.sha256 == hashlib.sha256(SAMPLE_DB).hexdigest()
    assert db.engine == "ac"
    assert db.describe().startswith("sample.db v7 (db, 5 signatures, 5 literals, engine ac")


def test_the_sample_database_finds_eicar_and_the_dos_viruses() -> None:
    db = sample()
    data = b"\x00" * 100 + EICAR + bytes.fromhex("8e06120033ff8bf30e1fb90d02f3a4")
    assert db.scan(data) == [Match("EICAR", 100, 168), Match("Burghofer", 168, 183)]


def test_count_is_signatures_not_expanded_literals() -> None:
    data = b"A:0:*:4142(43|4445)4647\nB:0:*:41424344\nC:0:*:41424344\n"
    db = compile_database(data, kind="ndb", version=1, source="t.ndb", engine="ac")
    assert db.count == 3
    assert len(db.program.literals) == 3  # ABC, AB (the generic variant's anchor), ABCD


def test_auto_picks_hyperscan_when_it_imports() -> None:
    assert sample().engine == ("hyperscan" if HYPERSCAN_AVAILABLE else "ac")


def test_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown scanner engine"):
        sample(engine="grep")


def test_bad_data_is_a_database_error() -> None:
    with pytest.raises(DatabaseError) as caught:
        compile_database(b"Foo=41zz42\n", kind="db", version=2, source="update#2")
    assert (caught.value.source, caught.value.line) == ("update#2", 1)


def test_empty_database_for_boot() -> None:
    db = SignatureDatabase.empty()
    assert (db.version, db.count, db.engine) == (0, 0, "none")
    assert db.sha256 == hashlib.sha256(b"").hexdigest()
    assert db.scan(EICAR) == []
    assert "0 signatures" in db.describe()


def test_a_database_of_only_unapplied_lines_compiles_and_matches_nothing() -> None:
    db = compile_database(b"Pe:1:*:41424344\n", kind="ndb", version=1, source="pe.ndb")
    assert (db.count, db.engine, db.scan(b"ABCD")) == (1, "none", [])
    assert "(1 not applied)" in db.describe()


def test_swap_returns_the_old_database_and_streams_keep_theirs() -> None:
    first = SignatureDatabase.empty()
    active = ActiveDatabase(first)
    stream = active.current.open_stream()
    second = sample(version=2)
    assert active.swap(second) is first
    assert active.current is second
    # A stream opened before the swap scans on with the database it was opened on.
    assert stream.feed(EICAR) == []
    assert active.current.scan(EICAR) == [Match("EICAR", 0, 68)]


def test_swaps_from_many_threads_lose_no_database() -> None:
    databases = [sample(version=n, engine="ac") for n in range(1, 9)]
    active = ActiveDatabase(SignatureDatabase.empty())
    returned: list[SignatureDatabase] = []
    lock = threading.Lock()

    def swap_in(db: SignatureDatabase) -> None:
        old = active.swap(db)
        with lock:
            returned.append(old)

    threads = [threading.Thread(target=swap_in, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    versions = sorted(db.version for db in [*returned, active.current])
    assert versions == list(range(0, 9))


@pytest.mark.skipif(not RFXN.exists(), reason=f"{RFXN} (rfxn.ndb) is absent")
def test_rfxn_database() -> None:
    db = compile_database(RFXN.read_bytes(), kind="ndb", version=2013090421650, source="rfxn.ndb")
    assert db.count == 1869
    assert db.sha256 == "2c2e4ef4774778c6d6e125e6cfa57a0f65ec77d58a5eda4aa4adeda20f466f29"
    assert db.not_applied == ()


_TOKENS = st.sampled_from(
    ["41", "42", "4142", "4?", "??", "(41|42)", "!(4142|4344)", "(41|4243)", "{3}", "{-2}",
     "{1-}", "*", "{130}", ":", "0", "*", "EOF-2", "|", ")", "\n"]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_TOKENS, max_size=12).map("".join), max_size=4))
def test_compiling_guest_data_only_raises_database_error(bodies: list[str]) -> None:
    data = "".join(f"Sig{n}:0:*:{body}\n" for n, body in enumerate(bodies)).encode()
    try:
        db = compile_database(data, kind="ndb", version=1, source="guest")
    except DatabaseError:
        return
    db.scan(b"AABBABCD" * 40)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(b"ABCD\x00\x01\x02"), max_size=600).map(bytes),
    st.lists(st.integers(1, 80), min_size=1, max_size=20),
)
def test_any_chunking_finds_what_one_shot_finds(data: bytes, sizes: list[int]) -> None:
    db = compile_database(
        b"A:0:*:4142*4344\nB:0:*:4142??43\nC:0:*:0000(01|02)\nD:0:*:414141\n",
        kind="ndb", version=1, source="t.ndb",
    )
    stream = db.open_stream()
    found, at, turn = [], 0, 0
    while at < len(data):
        size = sizes[turn % len(sizes)]
        found += stream.feed(data[at : at + size])
        at, turn = at + size, turn + 1
    assert found == db.scan(data)
