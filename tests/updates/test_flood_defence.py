"""The defence against floods of forged manifests, sized to the machine (docs/PROTOCOL.md,
"Verification budget"): checks happen off the packet path, a share of a core pays for them, a
genuine manifest among forged ones is checked within a bounded number of budget periods, and the
memory of failures is bounded and least-recently-used. Deterministic: a fake clock for time and
a fake CPU clock for the cost of checks (each check is then charged the configured floor)."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator

import pytest

from hv_emu.updates import packets
from hv_emu.updates.admission import (
    CandidatePool,
    CpuBudget,
)
from hv_emu.updates.failure_memory import BadManifests
from hv_emu.updates.packets import Packet, PacketType, parse_packet
from hv_emu.updates.receiver import QUIET_WINDOW, ReceiverConfig
from hv_emu.updates.verify import TrustedKey
from tests.rigs import netupdate
from tests.rigs.netupdate import Rig, encoded, rig, stamp

V = 5
UPDATE = encoded(V, lines=60)
#: Ten checks a second, at most ten saved up: a budget period of a second pays for ten checks.
SLOW = ReceiverConfig(verify_share=0.25, check_cost_floor=0.025, verify_burst_seconds=0.25,
                      candidate_slots=64, check_batch=16)


def forged_manifests(n: int, seed: int = 1) -> list[bytes]:
    """Forgeries of UPDATE's manifest (``tests.rigs.netupdate.forged_manifests``)."""
    return netupdate.forged_manifests(UPDATE.manifest, n, seed)


@pytest.fixture(autouse=True)
def cheap_stamps(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about forgeries that carry a work stamp: here a stamp costs 2^4 hashes
    instead of 2^18 (the receiver's rule is the same, only cheaper to meet)."""
    monkeypatch.setattr(packets, "WORK_BITS", 4)


def slow_rig(config: ReceiverConfig = SLOW) -> Rig:
    r = rig(installed=2, config=config)
    r.receiver.cpu_clock = lambda: 0.0  # every check costs the floor
    return r


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every signature verification, by the name of the thread that ran it."""
    import threading

    seen: list[str] = []
    real = TrustedKey.verifies

    def counting(self: TrustedKey, message: bytes, signature: bytes) -> bool:
        seen.append(threading.current_thread().name)
        return real(self, message, signature)

    monkeypatch.setattr(TrustedKey, "verifies", counting)
    yield seen


def test_the_packet_handler_returns_without_verifying(verifications: list[str]) -> None:
    r = slow_rig()
    r.receiver.offloaded = True  # a worker runs the checks
    verifications.clear()  # the rig installed version 2 through the VMCALL path
    r.feed([*forged_manifests(10), UPDATE.manifest], step=1.0)
    assert verifications == [] and r.receiver.counters["verifications"] == 0
    assert r.receiver.pending_checks() == 11 and r.receiver.sessions == {}
    # What the worker does: take (under the lock), check (anywhere), finish (under the lock).
    while r.receiver.pending_checks():
        r.clock.now += 1.0
        checks = r.receiver.take_checks()
        r.receiver.finish_checks([r.receiver.check(c) for c in checks])
    assert len(r.receiver.sessions) == 1 and r.receiver.counters["bad_signature"] == 10
    assert len(verifications) == 12  # one per forgery, two for the genuine manifest


@pytest.mark.parametrize("seed", range(5))
def test_a_genuine_manifest_among_forged_ones_is_checked_within_bounded_periods(
    seed: int,
) -> None:
    """N forged manifests and the genuine one wait in a pool of N + 1 slots; a budget period
    pays for ten checks: the genuine one is checked within ceil((N + 1) / 10) periods, wherever
    it arrived and whatever the draw."""
    r = slow_rig()
    r.receiver.rng.seed(seed)
    forged = forged_manifests(SLOW.candidate_slots - 1, seed)
    r.receiver.budget.tokens = 0.0  # the flood already spent the savings
    stream = list(forged)
    stream.insert(random.Random(seed).randrange(len(stream) + 1), UPDATE.manifest)
    r.receiver.offloaded = True
    r.feed(stream, step=0.0)
    r.receiver.offloaded = False
    per_period = round(SLOW.verify_share / SLOW.check_cost_floor)
    bound = -(-len(stream) // per_period)
    periods = 0
    while not r.receiver.sessions:
        periods += 1
        assert periods <= bound
        r.clock.now += 1.0
        r.receiver.poll()
    assert r.receiver.counters["verifications"] <= periods * per_period + 1


def test_the_budget_bounds_the_checks_of_a_flood() -> None:
    r = slow_rig()
    start = r.clock.now
    r.feed(forged_manifests(400), step=0.05)  # 20 forgeries a second, 10 checks a second
    elapsed = r.clock.now - start
    c = r.receiver.config
    assert r.receiver.counters["verifications"] <= c.verify_burst + c.verify_rate * elapsed + 1
    assert r.receiver.counters["bad_signature"] == r.receiver.counters["verifications"]


def test_the_budget_charges_what_a_check_cost() -> None:
    now = [0.0]
    budget = CpuBudget(share=0.25, burst=0.01, floor=0.001, clock=lambda: now[0])
    assert budget.affordable(100) == 10  # 10 ms saved, 1 ms a check (the estimate: the floor)
    budget.spend(0.004)  # a check that took 4 ms is charged 4 ms
    budget.spend(0.0)  # one that took nothing is charged the floor
    assert budget.tokens == pytest.approx(0.005)
    budget.spend(0.01)
    assert budget.affordable(100) == 0 and budget.wait() == pytest.approx(0.024)
    now[0] += 0.024
    assert budget.affordable(100) >= 1


def test_the_pool_admits_at_random_whatever_the_timing() -> None:
    """The first of 1,000 offers and the last are pending equally often (10 slots: 1 %)."""
    rng, first, last = random.Random(3), 0, 0
    for _ in range(4000):
        pool: CandidatePool[int] = CandidatePool(10, rng)
        for item in range(1000):
            pool.offer(item)
        first += 0 in pool.items
        last += 999 in pool.items
    assert 20 <= first <= 60 and 20 <= last <= 60  # expected 40 each (sd 6.3)


def test_bad_manifest_memory_is_bounded_and_least_recently_used() -> None:
    bad = BadManifests(3)
    a, b, c, d = (bytes([i]) * 32 for i in range(4))
    for f in (a, b, c):
        bad.add(f)
    assert a in bad  # a replay is a use: b is now the least recently used
    bad.add(d)
    assert len(bad) == 3 and b not in bad and all(f in bad for f in (a, c, d))


def test_the_receiver_forgets_the_oldest_failure_first(verifications: list[str]) -> None:
    r = slow_rig(ReceiverConfig(bad_manifest_memory=8, check_cost_floor=0.001))
    verifications.clear()  # the rig installed version 2 through the VMCALL path
    forged = forged_manifests(20)
    r.feed(forged, step=1.0)
    assert r.receiver.counters["bad_signature"] == 20 and len(r.receiver._bad) == 8
    assert r.receiver.memory_in_use() <= r.receiver.memory_bound()
    checked = len(verifications)
    r.feed(forged[-8:], step=1.0)  # remembered: a hash each, no verification
    assert r.receiver.counters["known_bad_manifest"] == 8 and len(verifications) == checked
    r.feed(forged[:1], step=1.0)  # forgotten: checked again
    assert len(verifications) == checked + 1


def test_memory_bound_counts_the_failures_as_python_holds_them() -> None:
    rng = random.Random(2)
    fingerprints = [rng.randbytes(32) for _ in range(30000)]
    tracemalloc.start()
    try:
        bad = BadManifests(20000)
        for fingerprint in fingerprints:  # full, then evicting
            bad.add(fingerprint)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(bad) == 20000
    assert held <= bad.memory() == BadManifests.footprint(20000) <= 20000 * 24


def test_a_caller_waits_for_a_verdict_only_while_no_forgery_was_seen() -> None:
    r = slow_rig()
    r.receiver.offloaded = True
    r.feed(forged_manifests(1), step=0.0)
    assert r.receiver.awaits_verdict()  # quiet: let the verifier judge it first
    r.receiver.finish_checks([r.receiver.check(c) for c in r.receiver.take_checks()])
    r.clock.now += 0.1  # the budget refilled (one check)
    r.feed([UPDATE.manifest], step=0.0)
    assert not r.receiver.awaits_verdict()  # a forgery was just refused: never wait
    r.clock.now += QUIET_WINDOW
    assert r.receiver.awaits_verdict()


def test_memory_bound_counts_the_candidates_as_python_holds_them() -> None:
    """The largest manifests (75 page commitments: 1,432 bytes), read from a socket (fresh objects):
    what the pool and a batch being checked hold stays within what ``memory_in_use`` counts."""
    # K = 860 symbols, N = 3,256: 37 hash pages, 75 page symbols, the most commitments a
    # MANIFEST carries
    big = encoded(V, lines=100, width=6000, symbol_count=3256)
    assert len(big.pages) == 75 and len(parse_packet(big.manifest).payload) == 1432
    rng, genuine = random.Random(4), parse_packet(big.manifest)
    forged = []
    for _ in range(64):
        payload = bytearray(genuine.payload)
        payload[-72:-8] = rng.randbytes(64)
        forged.append(stamp(Packet.build(PacketType.MANIFEST, rng.getrandbits(32), V, 0, 1,
                                         bytes(payload)).raw))
    r = slow_rig(ReceiverConfig(candidate_slots=64, check_batch=64))
    r.receiver.offloaded = True
    tracemalloc.start()
    try:
        for raw in forged:
            r.receiver.on_datagram(bytearray(raw), ("10.0.2.2", 1))  # a fresh copy
        pooled, _ = tracemalloc.get_traced_memory()
        assert pooled <= r.receiver.memory_in_use()
        checks = r.receiver.take_checks()
        checking, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(checks) == 64 and checking <= r.receiver.memory_in_use()
