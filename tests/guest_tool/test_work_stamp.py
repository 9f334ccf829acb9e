"""The publisher's work stamp (guest_tool/work_stamp.py): on one core or several, the lowest nonce
that carries the work, checked before it is returned."""

from __future__ import annotations

import pytest

from guest_tool import work_stamp
from hv_emu.errors import ConfigError
from hv_emu.updates import packets
from tests.rigs.netupdate import encoded

MANIFEST = encoded(3, lines=20).manifest


def lowest_nonce(datagram: bytes, bits: int) -> int:
    """The reference: the first nonce, counting from 0, whose datagram has ``bits`` zero bits."""
    body = datagram[:-packets.WORK_SIZE]
    nonce = 0
    while packets.work_of(packets.digest(body + nonce.to_bytes(packets.WORK_SIZE, "big"))) < bits:
        nonce += 1
    return nonce


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_core_count_finds_the_lowest_nonce(workers: int) -> None:
    bits = 18  # above a chunk's 16 bits on average, so several chunks and rounds are searched
    stamped = work_stamp.stamp(MANIFEST, bits, workers=workers)
    assert stamped[:-packets.WORK_SIZE] == MANIFEST[:-packets.WORK_SIZE]
    assert packets.work_of(packets.digest(stamped)) >= bits
    nonce = int.from_bytes(stamped[-packets.WORK_SIZE:], "big")
    assert nonce == lowest_nonce(MANIFEST, bits)


def test_the_default_searches_on_every_core_only_for_a_large_stamp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    real = work_stamp._search

    def spy(body: bytes, want: int, workers: int) -> int:
        seen.append(workers)
        return real(body, want, 1)

    monkeypatch.setattr(work_stamp, "_search", spy)
    monkeypatch.setattr(work_stamp, "cores", lambda: 7)
    work_stamp.stamp(MANIFEST, packets.WORK_BITS)
    monkeypatch.setattr(work_stamp, "PARALLEL_BITS", packets.WORK_BITS)
    work_stamp.stamp(MANIFEST, packets.WORK_BITS)
    assert seen == [1, 7]


def test_a_stamp_without_the_work_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = next(n for n in range(64) if packets.work_of(packets.digest(
        MANIFEST[:-packets.WORK_SIZE] + n.to_bytes(packets.WORK_SIZE, "big"))) < 18)
    monkeypatch.setattr(work_stamp, "_search", lambda body, want, workers: wrong)
    with pytest.raises(ConfigError, match="does not carry the work"):
        work_stamp.stamp(MANIFEST, 18)


def test_the_stamp_cost_rows_run() -> None:
    """docs/PERFORMANCE.md's ``--stamp-cost`` rows, one small round: a time for each side."""
    from benchmarks.network_overhead import stamp_cost_rows

    (row,) = stamp_cost_rows(rounds=1, chunks=2)
    assert row.peer == "one core" and row.peer_value is not None
    assert row.value > 0 and row.peer_value > 0 and "-bit work stamp" in row.name
