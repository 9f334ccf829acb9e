"""The candidate pool prefers more work (docs/PROTOCOL.md, "Verification budget"): the verifier
draws the candidates whose stamps carry the most leading zero bits first, fairly among equals; a
full pool evicts the least work first (``manifest_outworked``) and refuses less work than every
pending one (``manifest_less_work``); so a genuine manifest stamped above the protocol minimum is
checked first among any number of forgeries stamped at the minimum."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool import encoding
from guest_tool.encoding import stamp
from hv_emu.updates import packets
from hv_emu.updates.admission import LESS_WORK, NOT_SAMPLED, QUEUED, CandidatePool
from hv_emu.updates.packets import digest, rank_of, work_of
from hv_emu.updates.receiver import ReceiverConfig
from tests.rigs import netupdate
from tests.rigs.netupdate import Rig, encoded, rig

V = 5
UPDATE = encoded(V, lines=60)
#: One check a second, none saved up beyond it; a pool of 8.
ONE_CHECK = ReceiverConfig(verify_share=0.025, check_cost_floor=0.025,
                           verify_burst_seconds=0.025, candidate_slots=8, check_batch=1)


def test_work_is_the_leading_zero_bits_of_the_digest() -> None:
    assert work_of(bytes(32)) == 64
    assert work_of(b"\x80" + bytes(31)) == 0
    assert work_of(b"\x00\x01" + bytes(30)) == 15
    assert work_of(b"\x00\x00\x3f" + b"\xff" * 29) == 18
    assert packets.has_work(b"\x00\x00\x3f" + b"\xff" * 29)
    assert not packets.has_work(b"\x00\x00\x40" + bytes(29))  # 17 bits: below the minimum


def test_a_stamp_carries_at_least_the_work_asked() -> None:
    for bits in (18, 20):
        assert work_of(digest(stamp(UPDATE.manifest, bits))) >= bits
    assert work_of(digest(stamp(UPDATE.manifest, 3))) >= packets.WORK_BITS  # never below


def test_the_draw_takes_the_most_work_first() -> None:
    pool: CandidatePool[str] = CandidatePool(10, random.Random(1))
    for name, work in (("a", 18), ("b", 22), ("c", 18), ("d", 20), ("e", 22)):
        assert pool.offer(name, work) == QUEUED
    first = pool.draw(2)
    assert sorted(first) == ["b", "e"]
    assert pool.draw(1) == ["d"]
    assert sorted(pool.draw(5)) == ["a", "c"] and len(pool) == 0


def test_a_full_pool_evicts_the_least_work_and_refuses_less() -> None:
    pool: CandidatePool[int] = CandidatePool(3, random.Random(2))
    for item in range(3):
        assert pool.offer(item, 19) == QUEUED
    assert pool.offer(10, 18) == LESS_WORK  # less than every pending one
    assert pool.offer(11, 22) == QUEUED and pool.evicted == 1
    assert 11 in pool.items and len(pool) == 3
    assert pool.draw(1) == [11]


def test_equals_are_admitted_at_random_whatever_the_timing() -> None:
    """Among equal work, Algorithm R: the first of 1,000 offers and the last are pending equally
    often (10 slots: 1 %), and work below them never is."""
    rng, first, last = random.Random(3), 0, 0
    for _ in range(4000):
        pool: CandidatePool[int] = CandidatePool(10, rng)
        for item in range(1000):
            outcome = pool.offer(item, 20)
            assert outcome in (QUEUED, NOT_SAMPLED)
        assert pool.offer(-1, 19) == LESS_WORK
        first += 0 in pool.items
        last += 999 in pool.items
    assert 20 <= first <= 60 and 20 <= last <= 60  # expected 40 each (sd 6.3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4)), max_size=120),
       st.integers(1, 6), st.integers(0, 2**32))  # fmt: skip
def test_the_pool_keeps_its_bound_and_its_order(ops: list[tuple[int, int]], slots: int,
                                                seed: int) -> None:  # fmt: skip
    """Hostile offers and draws: never more than ``slots`` pending, every item accounted for
    (pending, drawn, refused, evicted by more work or replaced by an equal), and nothing drawn
    while more work waits."""
    pool: CandidatePool[tuple[int, int]] = CandidatePool(slots, random.Random(seed))
    offered = drawn = refused = 0
    for serial, (work, n) in enumerate(ops):
        if n == 0:
            outcome = pool.offer((serial, work), work)
            offered += 1
            refused += outcome != QUEUED
        else:
            taken = pool.draw(n)
            drawn += len(taken)
            if taken and len(pool):
                assert min(w for _, w in taken) >= max(w for _, w in pool.items)
        assert len(pool) <= slots
        assert len(pool) == len(pool.items)
    assert offered == len(pool) + drawn + refused + pool.evicted + pool.replaced


def forgeries(n: int, seed: int = 1) -> list[bytes]:
    """Forgeries of UPDATE's manifest (``tests.rigs.netupdate.forged_manifests``)."""
    return netupdate.forged_manifests(UPDATE.manifest, n, seed)


@pytest.fixture
def cheap_stamps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgeries at a minimum of 4 bits so the test can make hundreds; the genuine manifest
    keeps its 18 or more (encoded before), 14 bits above them."""
    monkeypatch.setattr(packets, "WORK_BITS", 4)


def one_check_rig() -> Rig:
    r = rig(installed=2, config=ONE_CHECK)
    r.receiver.cpu_clock = lambda: 0.0  # every check costs the floor
    return r


@pytest.mark.usefixtures("cheap_stamps")
@pytest.mark.parametrize("seed", range(3))
def test_the_genuine_manifest_is_checked_first_among_minimum_stamps(seed: int) -> None:
    """200 forgeries stamped at the minimum fill the pool before and after the genuine manifest;
    one check a second: the first check after it arrived opens its session."""
    r = one_check_rig()
    # Forgeries lucky enough to reach the rank cap tie with it (RANK_MARGIN): left out here.
    forged = [f for f in forgeries(200, seed) if rank_of(digest(f)) < rank_of(
        digest(UPDATE.manifest))]  # fmt: skip
    r.feed(forged[:100], step=0.0)
    rx = r.receiver
    assert rx.counters["manifest_less_work"] + rx.counters["manifest_not_sampled"] > 0
    r.feed([UPDATE.manifest], step=0.0)
    assert rx.counters["manifest_outworked"] >= 1  # a pending forgery made room for it
    r.feed(forged[100:], step=0.0)
    verified = rx.counters["verifications"]
    r.clock.now += 1.0  # one budget period: one check
    rx.poll()
    assert rx.counters["verifications"] == verified + 1
    assert rx.counters["session_opened"] == 1 and rx.counters["bad_signature"] == verified
    assert rx.memory_in_use() <= rx.memory_bound()


def test_work_ranks_no_higher_than_the_publishers_margin() -> None:
    """A forgery luckier than the publisher's default margin ties with the genuine manifest
    instead of outranking it (packets.RANK_MARGIN); the cap and guest-tool's default are one
    number."""
    cap = packets.WORK_BITS + packets.RANK_MARGIN
    assert encoding.PUBLISHER_WORK_BITS == cap == 24
    assert rank_of(bytes(32)) == cap  # 64 bits of work rank as the cap
    assert rank_of(b"\x00\x00\x3f" + b"\xff" * 29) == 18 == packets.WORK_BITS
    assert rank_of(b"\x00\x00\x01" + b"\xff" * 29) == 23 == cap - 1  # below it: ranks as is
    assert rank_of(b"\x00\x00\x00\xff" + b"\xff" * 28) == cap  # 24 bits: the default
    assert rank_of(b"\x00\x00\x00\x01" + b"\xff" * 28) == cap  # 31 bits: no higher


@pytest.mark.usefixtures("cheap_stamps")
def test_every_candidate_is_counted_once() -> None:
    """Each stamped forgery that passes the pre-filter ends under exactly one of queued, not
    sampled or less work; evictions by more work are counted beside them (replacements among
    equals, Algorithm R's, are the pool's own count)."""
    r = one_check_rig()
    forged = forgeries(120, seed=7)
    r.feed(forged, step=0.0)
    c = r.receiver.counters
    assert c["manifest_queued"] + c["manifest_not_sampled"] + c["manifest_less_work"] == 120
    gone = c["manifest_outworked"] + r.receiver.pool.replaced + c["verifications"]
    assert c["manifest_queued"] - gone == len(r.receiver.pool)
