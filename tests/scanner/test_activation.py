"""Two-stage activation of a large database: a first stage sooner in force (the pyahocorasick
automaton, as the update service does it, or Hyperscan compiled in shards), then recompiled as one
Hyperscan database and swapped in under running streams, which must lose nothing: not a literal
straddling the swap, not a chain of parts begun before it, not a disk run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hv_emu.devices.storage.disk import MemoryDisk
from hv_emu.devices.storage.observer import SECTOR_SIZE, StorageWrite
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.inspection import Inspector
from hv_emu.scanner.database import (
    HYPERSCAN_AVAILABLE,
    ActiveDatabase,
    SignatureDatabase,
    compile_signatures,
    recompile,
)
from hv_emu.scanner.program import LARGE_SET, LARGE_SET_ANCHOR, build_program
from hv_emu.scanner.signatures import parse_database
from hv_emu.updates import compile_worker
from tests.rigs.updates import Publisher, machine_for

pytestmark = pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")

NDB = b"""\
Two.Literal:0:*:6869766520656d75206c69746572616c
Two.Chain:0:*:636861696e2d6f6e65*636861696e2d74776f{-40}656e64
Two.Nul:0:*:00000041424300
Two.Anchor:0:*:4a[0-8]4b4c4d4e
"""
DATA = (b"." * 50 + b"hive emu literal" + b"." * 7 + b"chain-one" + b"." * 300 + b"chain-two"
        + b"." * 12 + b"end" + b"." * 9 + b"\x00\x00\x00ABC\x00" + b".." + b"J...KLMN" + b"." * 5)
EXPECTED = {"Two.Literal", "Two.Chain", "Two.Nul", "Two.Anchor"}


def sharded(shards: int) -> SignatureDatabase:
    signatures = parse_database(NDB, kind="ndb", source="two.ndb")
    return compile_signatures(signatures, "ndb", 1, "two.ndb", "0" * 64, shards=shards)


def first_stage(stage: str) -> SignatureDatabase:
    """The update service's first stage (``ac``: the automaton) or two Hyperscan shards."""
    if stage == "shards":
        return sharded(2)
    signatures = parse_database(NDB, kind="ndb", source="two.ndb")
    return compile_signatures(signatures, "ndb", 1, "two.ndb", "0" * 64, stage)


@pytest.mark.parametrize("stage", ["ac", "shards"])
def test_a_first_stage_finds_what_one_database_finds(stage: str) -> None:
    db = first_stage(stage)
    whole = recompile(db)
    assert (whole.engine, whole.shards, whole.program) == ("hyperscan", 1, db.program)
    assert db.scan(DATA) == whole.scan(DATA)


@pytest.mark.parametrize("shards", [2, 3])
def test_a_sharded_database_finds_what_one_database_finds(shards: int) -> None:
    db = sharded(shards)
    assert db.shards == shards
    whole = recompile(db)
    assert (whole.shards, whole.program, whole.version) == (1, db.program, db.version)
    for candidate in (db, whole):
        found = [(m.name, m.start, m.end) for m in candidate.scan(DATA)]
        assert {name for name, _, _ in found} == EXPECTED
        assert found == [(m.name, m.start, m.end) for m in whole.scan(DATA)]


@pytest.mark.parametrize("stage", ["ac", "shards"])
def test_the_finder_switched_at_every_point_of_a_stream_loses_nothing(stage: str) -> None:
    first = first_stage(stage)
    second = recompile(first)
    reference = [(m.name, m.start, m.end) for m in second.scan(DATA)]
    widest = first.program.widest
    for cut in range(1, len(DATA)):
        stream = first.open_stream()
        found = stream.feed(DATA[:cut])
        stream.switch_literals(second.matcher.open(), DATA[max(0, cut - widest + 1) : cut])
        found += stream.feed(DATA[cut:])
        stream.close()
        assert [(m.name, m.start, m.end) for m in found] == reference, cut


@pytest.mark.parametrize("stage", ["ac", "shards"])
def test_a_disk_run_goes_on_across_the_recompile(stage: str) -> None:
    """The first part of a chain is written under the first stage, the rest after the swap."""
    first = first_stage(stage)
    active = ActiveDatabase(first)
    inspector = Inspector(active, MemoryDisk(16), EventLog(), actions=("warn",))
    data = (b"." * (SECTOR_SIZE - 380) + DATA).ljust(2 * SECTOR_SIZE, b".")
    assert data.index(b"chain-one") < SECTOR_SIZE < data.index(b"chain-two")
    inspector.on_write(StorageWrite(3, data[:SECTOR_SIZE], "pio", 0x30))  # type: ignore[arg-type]
    inspector.disk.write_sectors(3, data[:SECTOR_SIZE])
    active.swap(recompile(first))
    inspector.on_write(StorageWrite(4, data[SECTOR_SIZE:], "pio", 0x30))  # type: ignore[arg-type]
    assert {e["signature"] for e in inspector.events.of("detection")} == EXPECTED


def test_large_sets_get_short_anchors_and_small_ones_whole_ones() -> None:
    rng = random.Random(5)
    lines = b"".join(b"L%d:0:*:%s\n" % (i, rng.randbytes(24).hex().encode())
                     for i in range(LARGE_SET))  # fmt: skip
    large = build_program(parse_database(lines, kind="ndb", source="large.ndb"))
    assert {len(literal) for literal in large.literals} == {LARGE_SET_ANCHOR}
    small = build_program(parse_database(lines[: lines.index(b"L100:")], kind="ndb", source="s"))
    assert {len(literal) for literal in small.literals} == {24}


def test_an_update_activates_the_automaton_then_hyperscan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compile_worker, "FIRST_STAGE_FROM", 2)  # this small database is large
    publisher = Publisher(tmp_path)
    machine = machine_for(publisher)
    assert machine.updates.submit(*publisher.sign(NDB, version=2, kind="ndb"), source="t") == Rc.OK
    assert machine.updates.wait_active(60)
    active, = machine.events.of("database_active")
    assert (active["db_version"], active["engine"], active["signatures"]) == (2, "ac", 4)
    recompiled, = machine.events.of("database_recompiled")
    assert (recompiled["db_version"], recompiled["shards"], recompiled["engine"]) == (
        2, 1, "hyperscan")
    events = [r["event"] for r in machine.events.records]
    assert events.index("database_active") < events.index("database_recompiled")
    current = machine.database.current
    assert (current.version, current.engine) == (2, "hyperscan")
    assert {m.name for m in current.scan(DATA)} == EXPECTED


def test_a_shard_that_fails_to_compile_refuses_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shard's compiler thread failing in any way (here out of memory) must refuse the whole
    database, never put it in force with that shard's literals silently missing."""
    from hv_emu.errors import DatabaseError
    from hv_emu.scanner.engines import hyperscan_stream as engine_hs

    real = engine_hs._compile

    def second_shard_runs_out_of_memory(literals: list[bytes], ids: range) -> object:
        if ids.start == 1:
            raise MemoryError("simulated")
        return real(literals, ids)

    monkeypatch.setattr(engine_hs, "_compile", second_shard_runs_out_of_memory)
    with pytest.raises(DatabaseError, match="MemoryError"):
        sharded(2)
