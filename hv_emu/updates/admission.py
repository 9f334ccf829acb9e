"""Admission to the manifest verifier: a share of a core, a fair sample, a memory of failures.

Models: the defence of ``docs/PROTOCOL.md`` ("Verification budget") against floods of forged
MANIFESTs. Signatures are the only costly step of the receiver (one Ed25519 verification is
about 0.1 ms, a forged manifest costs its sender a few microseconds), so three things bound it:

- ``CpuBudget``: a token bucket of CPU *seconds*, refilled at ``share`` seconds per second (a
  quarter of one core by default), debited by what each check really cost (never less than a
  floor, so a coarse or fake clock cannot make checks free). The rate in checks per second
  follows the machine: about 2,800/s for forged Ed25519 manifests at a quarter of a core here.
- ``CandidatePool``: the manifests that passed the O(1) pre-filter and wait for a check, at most
  ``slots`` of them, ranked by the work of their stamp (``packets.work_of``, leading zero bits):
  the draw takes the most work first and a full pool evicts the least work first, so a forgery
  competes with the genuine manifest only if it carries as much work as the publisher chose to
  spend on it. Among equals admission is random (Vitter's Algorithm R within the level: once
  the pool is full, the n-th arrival of the level since the last draw replaces a random one of
  it with probability held/n), and so is the draw, so an attacker who controls timing and
  volume gets only his share of the checks, never the genuine manifest's (FIFO or first-come
  admission would let him). Below ``slots`` pending, every candidate is checked: within
  ceil(pending / checks per period) budget periods.
(The memory of manifests that failed, so a replay of one costs a hash and a lookup, is
``failure_memory.py``.)

``run_check`` is the check itself, a pure function of a ``ManifestCheck`` (everything it needs,
copied from the receiver under its lock), so it can run on a worker thread
(``net/attachment.py``) while the I/O thread keeps draining the socket: ``cryptography`` releases
the GIL while it verifies.

Follows: ``docs/PROTOCOL.md`` ("Check order", "Verification budget"), Vitter 1985 (reservoir
sampling, Algorithm R).

Leaves out: batch verification of Ed25519 (``cryptography`` has none; a batch here is several
checks per lock acquisition and per wake-up of the worker).

Network controls: which manifests are offered, how many and when. It cannot make the checks
cost more than the budget (over any interval: at most ``burst`` plus ``share`` of it plus one
batch), grow the pool past ``slots``, or the memory of failures past its capacity.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hv_emu.errors import UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.packets import MAX_DATAGRAM, Manifest, Packet, manifest_message
from hv_emu.updates.verify import CLOCK_SKEW, TrustStore, verify_header

#: Bytes one pending candidate holds: its datagram (at most ``MAX_DATAGRAM``) as a ``bytes``
#: object, its 32-byte fingerprint and the tuple and list slot holding them, rounded up.
CANDIDATE_BYTES = MAX_DATAGRAM + 256
#: Bytes one candidate holds while it is being checked: parsed, its payload and page hashes are
#: copies (8.9 KB measured with ``tracemalloc`` for the largest manifest, 76 page commitments),
#: rounded up.
CHECK_BYTES = 10240

_T = TypeVar("_T")

#: What ``CandidatePool.offer`` says of an item: pending now; left out by the fair draw among
#: equals; refused because every pending one has more work.
QUEUED, NOT_SAMPLED, LESS_WORK = "manifest_queued", "manifest_not_sampled", "manifest_less_work"


class CpuBudget:
    """CPU seconds for checks: ``share`` of a second per second of ``clock``, at most ``burst``
    saved up (starts full); ``spend`` debits a check's cost, at least ``floor``."""

    def __init__(self, share: float, burst: float, floor: float,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.share, self.burst, self.floor, self.clock = share, burst, floor, clock
        self.tokens = burst
        self.stamp = clock()
        #: What one check costs, a moving average of the last ones (sizes the next batch).
        self.estimate = floor

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.share)
        self.stamp = now

    def affordable(self, most: int) -> int:
        """How many checks (at most ``most``) the saved-up seconds pay for now (0 when in debt)."""
        self._refill()
        if self.tokens <= 0.0 or most <= 0:
            return 0
        return min(most, math.ceil(self.tokens / self.estimate))

    def spend(self, cost: float) -> None:
        charged = max(cost, self.floor)
        self.tokens -= charged
        self.estimate += (charged - self.estimate) / 8

    def wait(self) -> float:
        """Seconds of ``clock`` until a check is affordable again (0 if it is now)."""
        self._refill()
        return 0.0 if self.tokens > 0.0 else (self.floor - self.tokens) / self.share


class CandidatePool(Generic[_T]):
    """At most ``slots`` items, each with its work; more work first, fair among equals.

    An offer with more work than the least pending evicts a random one of the least (``evicted``
    counts them); one with less is refused (``offer`` returns ``LESS_WORK``); among equals it is
    Algorithm R within the level (the n-th offer of that level since the last draw replaces a
    random one of it with probability held / n). ``draw`` takes the most work first, at random
    among equals."""

    def __init__(self, slots: int, rng: random.Random) -> None:
        self.slots, self.rng = slots, rng
        #: Pending items by work level.
        self.levels: dict[int, list[_T]] = {}
        #: Items offered at each level since the last draw, plus those that survived it.
        self.seen: dict[int, int] = {}
        #: Pending items evicted by an offer with more work (since the pool was made).
        self.evicted = 0
        #: Pending items replaced by an equal that won the random draw (Algorithm R).
        self.replaced = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def items(self) -> list[_T]:
        """Every pending item, most work first."""
        return [item for work in sorted(self.levels, reverse=True) for item in self.levels[work]]

    def offer(self, item: _T, work: int = 0) -> str:
        """``QUEUED``, ``NOT_SAMPLED`` (an equal lost the random draw) or ``LESS_WORK`` (the pool
        is full of candidates with more work)."""
        if self.slots <= 0:
            return NOT_SAMPLED
        seen = self.seen[work] = self.seen.get(work, 0) + 1
        if self._size < self.slots:
            self.levels.setdefault(work, []).append(item)
            self._size += 1
            return QUEUED
        least = min(self.levels)
        if work < least:
            return LESS_WORK
        if work > least:
            self._remove_random(least)
            self.evicted += 1
            self.levels.setdefault(work, []).append(item)
            self._size += 1
            return QUEUED
        level = self.levels[least]
        slot = self.rng.randrange(seen)
        if slot < len(level):
            level[slot] = item
            self.replaced += 1
            return QUEUED
        return NOT_SAMPLED

    def _remove_random(self, work: int) -> None:
        level = self.levels[work]
        slot = self.rng.randrange(len(level))
        level[slot] = level[-1]
        level.pop()
        self._size -= 1
        if not level:
            del self.levels[work]

    def draw(self, n: int) -> list[_T]:
        """Take ``n`` items (all if fewer): the most work first, chosen at random among equals;
        the rest stay pending and count as just offered, so they compete on equal terms with the
        next arrivals of their level."""
        drawn: list[_T] = []
        for work in sorted(self.levels, reverse=True):
            if len(drawn) >= n:
                break
            level = self.levels[work]
            want = n - len(drawn)
            if want < len(level):
                self.rng.shuffle(level)
                drawn += level[:want]
                del level[:want]
            else:
                drawn += level
                del self.levels[work]
        self._size -= len(drawn)
        self.seen = {work: len(level) for work, level in self.levels.items()}
        return drawn


@dataclass(frozen=True)
class ManifestCheck:
    """One candidate and the receiver's state it is judged against, copied under its lock."""

    packet: Packet
    manifest: Manifest
    #: SHA-256 of the datagram: the key of ``failure_memory.BadManifests``.
    fingerprint: bytes
    versions: range
    now: int
    time_floor: int
    max_size: int


@dataclass(frozen=True)
class CheckResult:
    check: ManifestCheck
    #: The counter of the refusal, or None: both signatures verified.
    refusal: str | None
    #: The refusal is final (the fingerprint is remembered): all but "issued ahead of our clock".
    final: bool
    #: CPU seconds the check took (``cpu_clock`` of ``run_check``).
    cost: float


def run_check(check: ManifestCheck, trust: TrustStore,
              cpu_clock: Callable[[], float]) -> CheckResult:  # fmt: skip
    """Verify a candidate: the manifest signature first (it covers every byte, so any forgery,
    bit flip or spliced field costs exactly one verification), then ``verify.verify_header`` on
    the bundle header and bundle signature (the VMCALL path's checks)."""
    start = cpu_clock()
    refusal, final = _judge(check, trust)
    return CheckResult(check, refusal, final, cpu_clock() - start)


def _judge(check: ManifestCheck, trust: TrustStore) -> tuple[str | None, bool]:
    packet, manifest = check.packet, check.manifest
    key = trust.lookup(manifest.header.key_id)
    message = manifest_message(packet.header, manifest.signed_part())
    if key is None or not key.verifies(message, manifest.manifest_signature):
        return "bad_signature", True
    try:
        verify_header(
            manifest.bundle_header, manifest.bundle_signature, trust, versions=check.versions,
            now=check.now, time_floor=check.time_floor, max_size=check.max_size,
        )  # fmt: skip
    except UpdateRejected as bad:
        # Every refusal is final but one: issued ahead of our clock, which time lifts (a genuine
        # manifest met by a slow host clock must get another check later).
        ahead = manifest.header.issued_at > max(check.now, check.time_floor) + CLOCK_SKEW
        return Rc(bad.code).name.lower(), not ahead
    return None, False
