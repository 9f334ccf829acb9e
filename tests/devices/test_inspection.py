"""The inspection policy on its own: streams over runs of consecutive LBAs, the four actions, and
a database that comes into force in the middle of a run. The device is played by ``commit``:
what the ATA channel does with a verdict (``observer.resolve``, then the disk)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.devices.storage.disk import MemoryDisk
from hv_emu.devices.storage.observer import SECTOR_SIZE, Action, StorageWrite, resolve
from hv_emu.devices.vga import VgaText
from hv_emu.errors import ConfigError
from hv_emu.events import EventLog
from hv_emu.inspection import (
    ACTIONS,
    DEFAULT_ACTIONS,
    MAX_DETECTION_EVENTS,
    MAX_REPRIME,
    Inspector,
    parse_actions,
)
from hv_emu.memory.guest import GuestMemory
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase, compile_database

SIG = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")  # 17 bytes, three of them zero
OTHER = b"HV-EMU-OTHER-SIGNATURE"
NDB = f"Test.Sig:0:*:{SIG.hex()}\nTest.Other:0:*:{OTHER.hex()}\n".encode()


def database(version: int = 1) -> SignatureDatabase:
    return compile_database(NDB, kind="ndb", version=version, source="test.ndb")


def rig(actions: tuple[str, ...] = DEFAULT_ACTIONS, db: SignatureDatabase | None = None,
        sectors: int = 64) -> tuple[Inspector, MemoryDisk, list[str]]:  # fmt: skip
    disk = MemoryDisk(sectors)
    cuts: list[str] = []
    inspector = Inspector(ActiveDatabase(db or database()), disk, EventLog(), actions=actions,
                          cut_network=cuts.append)  # fmt: skip
    return inspector, disk, cuts


def commit(inspector: Inspector, disk: MemoryDisk, lba: int, data: bytes,
           transport: str = "pio") -> bool:  # fmt: skip
    """What the ATA channel does: publish, resolve the verdict, write what it says."""
    verdict = inspector.on_write(StorageWrite(lba, data, transport, 0x30))  # type: ignore[arg-type]
    accepted = resolve(verdict, data)
    if accepted is None:
        return False
    disk.write_sectors(lba, accepted)
    return True


def image(disk: MemoryDisk) -> bytes:
    return disk.read_sectors(0, disk.sector_count)


def planted(at: int, size: int, sig: bytes = SIG) -> bytearray:
    data = bytearray(b"\xaa" * size)
    data[at : at + len(sig)] = sig
    return data


def zeroed(data: bytes | bytearray, *spans: tuple[int, int]) -> bytes:
    out = bytearray(data)
    for start, end in spans:
        out[start:end] = bytes(end - start)
    return bytes(out)


def test_parse_actions_orders_and_refuses() -> None:
    assert parse_actions("zero-fill, warn") == ("warn", "zero-fill")
    assert parse_actions(",".join(reversed(ACTIONS))) == ACTIONS
    with pytest.raises(ConfigError, match="unknown action 'shred'"):
        parse_actions("warn,shred")
    with pytest.raises(ConfigError, match="no action given"):
        parse_actions(" , ")


def test_a_signature_split_across_two_sector_writes_is_found_and_zero_filled() -> None:
    inspector, disk, cuts = rig()
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)  # 5 bytes in LBA 7, 12 in LBA 8
    assert commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    assert inspector.detections == 0
    assert commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]))
    [event] = inspector.events.of("detection")
    assert {k: event[k] for k in ("signature", "lba", "offset", "length", "actions")} == {
        "signature": "Test.Sig", "lba": 7, "offset": SECTOR_SIZE - 5, "length": len(SIG),
        "actions": list(DEFAULT_ACTIONS),
    }  # fmt: skip
    expected = bytearray(64 * SECTOR_SIZE)
    expected[7 * SECTOR_SIZE : 9 * SECTOR_SIZE] = zeroed(data, (SECTOR_SIZE - 5, SECTOR_SIZE + 12))
    assert image(disk) == expected  # the part in LBA 7, already committed, was zeroed too
    assert cuts == ["Test.Sig written at LBA 7"]


def test_a_write_elsewhere_starts_a_new_run() -> None:
    inspector, disk, _ = rig()
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)
    commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    commit(inspector, disk, 30, bytes(SECTOR_SIZE))  # the run is broken here
    commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]))
    assert inspector.detections == 0  # a file fragmented across a foreign write is not found


def test_a_rewrite_of_the_same_lba_starts_a_new_run() -> None:
    inspector, disk, _ = rig()
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)
    commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    assert inspector.detections == 0
    commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]))
    assert inspector.detections == 1


def test_block_refuses_the_write_and_ends_the_run() -> None:
    inspector, disk, _ = rig(("warn", "block"))
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)
    assert commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    assert not commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]))
    expected = bytearray(64 * SECTOR_SIZE)
    expected[7 * SECTOR_SIZE : 8 * SECTOR_SIZE] = data[:SECTOR_SIZE]  # committed before the find
    assert image(disk) == expected
    # The refused write never landed: a retry at LBA 8 starts a new run (nothing to find alone).
    assert commit(inspector, disk, 8, bytes(SECTOR_SIZE))
    assert inspector.detections == 1


def test_warn_only_commits_the_data_unchanged_and_draws_the_box() -> None:
    mem = GuestMemory(1 << 20)
    screen = VgaText(mem, 0xB8000)
    inspector = Inspector(ActiveDatabase(database()), MemoryDisk(8), EventLog(),
                          actions=("warn",), screen=screen)  # fmt: skip
    data = bytes(planted(100, SECTOR_SIZE))
    verdict = inspector.on_write(StorageWrite(3, data, "dma", 0xCA))
    assert verdict.action is Action.COMMIT
    text = "\n".join(screen.read_screen())
    for part in ("MALWARE SIGNATURE", "signature: Test.Sig", "LBA 3, byte 100, 17 bytes",
                 "WRITE DMA (DMA)", "actions:   warn"):
        assert part in text


def test_every_match_of_one_write_is_zero_filled_and_counted() -> None:
    inspector, disk, _ = rig(("zero-fill",))
    data = planted(10, 4 * SECTOR_SIZE)
    data[700 : 700 + len(OTHER)] = OTHER
    data[1500 : 1500 + len(SIG)] = SIG
    assert commit(inspector, disk, 0, bytes(data), "dma")
    assert inspector.detections == 3
    spans = ((10, 10 + len(SIG)), (700, 700 + len(OTHER)), (1500, 1500 + len(SIG)))
    assert image(disk)[: 4 * SECTOR_SIZE] == zeroed(data, *spans)


def test_a_write_full_of_signatures_is_all_zero_filled_but_logs_a_bounded_number_of_events(
) -> None:
    """A guest can fill a 32 MiB write with copies of a signature: every copy is counted and
    zero-filled, but the event log gets at most ``MAX_DETECTION_EVENTS`` of them per write."""
    inspector, disk, _ = rig(("zero-fill",))
    copies = 2 * SECTOR_SIZE * 8 // len(SIG)  # 8 KiB of back-to-back signatures
    data = (SIG * copies).ljust(16 * SECTOR_SIZE, b"\xaa")
    assert copies > MAX_DETECTION_EVENTS
    assert commit(inspector, disk, 0, data)
    assert inspector.detections == copies
    assert image(disk)[: 16 * SECTOR_SIZE] == bytes(copies * len(SIG)).ljust(16 * SECTOR_SIZE,
                                                                           b"\xaa")
    events = inspector.events.of("detection")
    assert len(events) == MAX_DETECTION_EVENTS
    assert {e["in_write"] for e in events} == {copies}
    assert [e["offset"] for e in events[:2]] == [0, len(SIG)]


def test_a_database_installed_mid_run_sees_the_start_of_the_signature() -> None:
    active = ActiveDatabase(SignatureDatabase.empty())
    disk = MemoryDisk(64)
    inspector = Inspector(active, disk, EventLog(), actions=("zero-fill",))
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)
    whole = bytes(planted(40, SECTOR_SIZE))  # a whole signature written before the update
    commit(inspector, disk, 6, whole)
    commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    active.swap(database())  # the update lands between two writes of the run
    commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]))
    # Found through the re-primed stream; the earlier, complete one predates the database.
    assert [e["lba"] for e in inspector.events.of("detection")] == [7]
    expected = bytearray(64 * SECTOR_SIZE)
    expected[6 * SECTOR_SIZE : 7 * SECTOR_SIZE] = whole
    expected[7 * SECTOR_SIZE : 9 * SECTOR_SIZE] = zeroed(data, (SECTOR_SIZE - 5, SECTOR_SIZE + 12))
    assert image(disk) == expected


def test_the_re_prime_window_is_bounded_by_the_database_and_the_run() -> None:
    wide = compile_database(b"Test.Wide:0:*:" + (b"ab" * 15000) + b"\n", kind="ndb", version=2,
                            source="wide.ndb")  # fmt: skip
    active = ActiveDatabase(SignatureDatabase.empty())
    disk = MemoryDisk(512)
    inspector = Inspector(active, disk, EventLog())
    reads: list[tuple[int, int]] = []
    original = disk.read_sectors

    def spy(lba: int, count: int) -> bytes:
        reads.append((lba, count))
        return original(lba, count)

    disk.read_sectors = spy  # type: ignore[method-assign]
    commit(inspector, disk, 0, bytes(300 * SECTOR_SIZE), "dma")
    active.swap(wide)
    commit(inspector, disk, 300, bytes(SECTOR_SIZE))
    [(lba, count)] = reads  # the sectors holding the run's last widest - 1 bytes, no more
    assert lba + count == 300
    assert 15000 - 1 <= count * SECTOR_SIZE < 15000 - 1 + SECTOR_SIZE <= MAX_REPRIME
    active.swap(database(3))
    commit(inspector, disk, 10, bytes(SECTOR_SIZE))  # a new run: nothing to carry
    commit(inspector, disk, 11, bytes(SECTOR_SIZE))
    assert len(reads) == 1


def test_reads_are_counted_not_scanned_and_do_not_break_a_run() -> None:
    from hv_emu.devices.storage.observer import StorageRead

    inspector, disk, _ = rig()
    inspector.on_read(StorageRead(0, bytes(planted(0, 2 * SECTOR_SIZE)), "pio", 0x20))
    assert (inspector.sectors_read, inspector.detections) == (2, 0)
    data = planted(SECTOR_SIZE - 5, 2 * SECTOR_SIZE)
    commit(inspector, disk, 7, bytes(data[:SECTOR_SIZE]))
    inspector.on_read(StorageRead(30, bytes(SECTOR_SIZE), "dma", 0xC8))
    commit(inspector, disk, 8, bytes(data[SECTOR_SIZE:]), "dma")
    assert inspector.detections == 1


@settings(max_examples=40, deadline=None)
@given(
    chunks=st.lists(st.integers(1, 4), min_size=1, max_size=8),
    positions=st.lists(st.integers(0, 31 * SECTOR_SIZE), max_size=4),
    seed=st.binary(min_size=32, max_size=32),
)
def test_zero_fill_is_exact_however_the_run_is_cut(
    chunks: list[int], positions: list[int], seed: bytes
) -> None:
    """One run of writes of 1-4 sectors: the image ends up as the data with exactly the planted
    signatures zeroed, wherever the write boundaries cut them."""
    total = sum(chunks) * SECTOR_SIZE
    data = bytearray((seed * (total // len(seed) + 1))[:total])
    spans: list[tuple[int, int]] = []
    for at in sorted(p for p in positions if p + len(SIG) <= total):
        if spans and at < spans[-1][1]:
            continue  # planted signatures do not overlap
        data[at : at + len(SIG)] = SIG
        spans.append((at, at + len(SIG)))
    if SIG in zeroed(data, *spans) or OTHER in data:
        return  # the random filler made a signature of its own
    inspector, disk, _ = rig(("zero-fill",), sectors=40)
    lba = 0
    for n in chunks:
        chunk = bytes(data[lba * SECTOR_SIZE : (lba + n) * SECTOR_SIZE])
        assert commit(inspector, disk, lba, chunk)
        lba += n
    assert image(disk)[:total] == zeroed(data, *spans)
    assert inspector.detections == len(spans)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.integers(1, 3), st.integers(0, 1600),
                          st.booleans()), min_size=1, max_size=12))  # fmt: skip
def test_random_writes_and_updates_never_raise_and_only_zero_bytes(
    writes: list[tuple[int, int, int, bool]],
) -> None:
    """Writes anywhere, signatures anywhere, database swaps between writes: no exception, every
    verdict keeps the length, and the image holds what was written or zeros, nothing else."""
    active = ActiveDatabase(SignatureDatabase.empty())
    disk = MemoryDisk(16)
    inspector = Inspector(active, disk, EventLog(), actions=("warn", "zero-fill"),
                          screen=VgaText(GuestMemory(1 << 20), 0xB8000))  # fmt: skip
    shadow = bytearray(16 * SECTOR_SIZE)  # what the guest wrote, last write wins
    for number, (lba, count, at, swap) in enumerate(writes):
        if swap:
            active.swap(database(number + 1))
        data = planted(min(at, count * SECTOR_SIZE - len(SIG)), count * SECTOR_SIZE)
        assert commit(inspector, disk, lba, bytes(data))
        shadow[lba * SECTOR_SIZE : (lba + count) * SECTOR_SIZE] = data
    held = image(disk)
    assert all(h in (s, 0) for h, s in zip(held, shadow, strict=True))
    if inspector.detections == 0:
        assert held == bytes(shadow)
