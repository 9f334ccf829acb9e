"""The hypervisor's update receiver: UDP payloads in, at most one verified install out.

Models: the receiving half of ``docs/PROTOCOL.md``, sans-IO. ``on_datagram`` takes the payload of
one UDP datagram that the switch intercepted for the update port and runs the cheap checks in
order: stateless header checks (``packets.parse_packet``), the stale-version drop (before any
crypto), then per type; versions are judged by the update service's one policy
(``UpdateService.acceptable_versions``), never by a rule of the receiver's own. A MANIFEST that
passes an O(1) pre-filter becomes a *candidate* in a bounded pool, ranked by its work stamp
(more work is checked first, and evicts less) and admitted and drawn at random among equals
(``admission.py``), so a flood of forged manifests cannot starve the real one by timing, nor
with less work than its publisher spent.
``on_datagram`` never verifies: the checks are paid by a budget of CPU time (a share of a core)
and split in three (``take_checks`` under the caller's lock, ``check`` on any thread, then
``finish_checks``), so the network's verifier thread runs the crypto while the I/O thread keeps
reading; ``poll`` runs all three itself when no worker does. A check verifies the manifest
signature, then the bundle header and signature through ``verify.verify_header`` (the VMCALL
path's own checks). Only a manifest that verifies creates a session (at most
``max_sessions``); a failed one is remembered by hash in a bounded LRU (unless it was only
issued ahead of the trusted time, which time lifts). A HASHPAGE or SYMBOL is
accepted only for a live session, only after its own commitment (truncated SHA-256) matched the
verified one, so a forged one is dropped alone; symbols feed their block's RaptorQ decoder
(``session.py``) until every block decoded, then ``verify.check_body`` and
``UpdateService.submit(bundle, signature, "network")``: one code path decides what is installed.
Every drop has a counter.

Follows: ``docs/PROTOCOL.md`` "Check order" (check order, sessions only from verified manifests,
no buffering before authentication), "Verification budget" and "Threats";
RFC 6330 through the ``raptorq`` package.

Leaves out: the group MAC, HEARTBEATs and the freeze alarm, deltas (``base_version``), NACKs, and
per-source packet buckets (sources are spoofable; the global verification budget is what matters).

Network controls: every byte of every payload, their order, timing and rate. It cannot make the
receiver hold more than ``memory_bound()`` bytes, spend more than the budget on signatures, or
install anything ``UpdateService`` would refuse.

Observability: ``stats()`` is a snapshot of the counters (``receiver_stats.py``), logged as the
event ``receiver_stats`` by ``poll``; the reassembly of one update (pages, symbols, decoding) is
``session.py``.
"""

from __future__ import annotations

import collections
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hv_emu.errors import UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.admission import (
    CANDIDATE_BYTES,
    CHECK_BYTES,
    LESS_WORK,
    QUEUED,
    CandidatePool,
    CheckResult,
    CpuBudget,
    ManifestCheck,
    run_check,
)
from hv_emu.updates.failure_memory import BadManifests
from hv_emu.updates.format import HEADER_SIZE
from hv_emu.updates.front import take_payload
from hv_emu.updates.packet_errors import PacketError
from hv_emu.updates.packets import (
    Manifest,
    Packet,
    PacketType,
    digest,
    has_work,
    parse_packet,
    rank_of,
)
from hv_emu.updates.receiver_stats import ReceiverStats, StatsReporter
from hv_emu.updates.service import UpdateService
from hv_emu.updates.session import CORRUPT, Intact, Session, held_symbols, session_bound
from hv_emu.updates.verify import check_body

#: Seconds (of the receiver's clock) after a refused manifest during which ``awaits_verdict`` is
#: False: a caller waits for the verifier only while no forgery was seen for that long.
QUIET_WINDOW = 1.0


@dataclass(frozen=True)
class ReceiverConfig:
    """Every bound of the receiver; ``docs/PROTOCOL.md`` lists the defaults."""

    #: Sessions (verified manifests being received) held at once.
    max_sessions: int = 2
    #: Largest body a manifest may declare, in bytes (the VMCALL path's default limit).
    max_object: int = 16 * 1024 * 1024
    #: Most symbols (N) a manifest may commit to (2K + 1 of a 16 MiB body at T = 1400 fit).
    max_symbols: int = 32768
    #: Most bytes of symbols and decoded blocks one session may hold (``session.held_symbols``:
    #: a 16 MiB body at T = 1400 in blocks of 1,024 symbols needs 17 MB).
    symbol_memory: int = 18 * 1024 * 1024
    #: Share of one core spent on manifest checks (CPU seconds per second), and the most saved
    #: up; each check is charged what it cost on ``UpdateReceiver.cpu_clock``, at least
    #: ``check_cost_floor`` (half of one Ed25519 verification here: a guard, not an estimate).
    #: A quarter of a core pays for about 2,800 checks of forged Ed25519 manifests a second.
    verify_share: float = 0.25
    verify_burst_seconds: float = 0.02
    check_cost_floor: float = 50e-6
    #: Candidates waiting for a check (most work first; random admission among equals once full)
    #: and most checked per batch.
    candidate_slots: int = 256
    check_batch: int = 64
    #: Manifests that failed verification, remembered (by 16 bytes of their SHA-256) so a replay
    #: costs a hash and a lookup: 196,608 in 4.4 MB (``failure_memory.py``).
    bad_manifest_memory: int = 196_608

    @property
    def verify_rate(self) -> float:
        """The most checks a second the budget can ever pay for (every check at the floor)."""
        return self.verify_share / self.check_cost_floor

    @property
    def verify_burst(self) -> int:
        """The most checks the saved-up budget pays for at once (at the floor)."""
        return round(self.verify_burst_seconds / self.check_cost_floor)

    def session_bound(self) -> int:
        """Bytes one session may hold (``session.session_bound``)."""
        return session_bound(self.max_symbols, self.symbol_memory)


@dataclass
class UpdateReceiver:
    """Feed it ``on_datagram``; call ``poll`` periodically; read ``counters``."""

    service: UpdateService
    config: ReceiverConfig = field(default_factory=ReceiverConfig)
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    wall_clock: Callable[[], float] = time.time
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    #: What a check's cost is measured with: the CPU time of the thread that runs it.
    cpu_clock: Callable[[], float] = time.thread_time

    def __post_init__(self) -> None:
        self.sessions: dict[tuple[int, int], Session] = {}
        c = self.config
        self.budget = CpuBudget(c.verify_share, c.verify_burst_seconds, c.check_cost_floor,
                                self.clock)  # fmt: skip
        self._bad = BadManifests(c.bad_manifest_memory)
        #: Candidates (fingerprint, datagram) waiting for a check.
        self.pool: CandidatePool[tuple[bytes, bytes]] = CandidatePool(c.candidate_slots, self.rng)
        #: Fingerprints of candidates handed out by ``take_checks`` and not yet finished.
        self._checking: set[bytes] = set()
        #: True while a worker (``net/attachment.py``) runs the checks: ``poll`` then leaves them.
        self.offloaded = False
        self._refused_at = -math.inf
        self._reporter = StatsReporter(self.service.events, self.clock)

    # ------------------------------------------------------------------------------ stats
    def stats(self) -> ReceiverStats:
        """A snapshot of the counters. Not locked: call it from the thread that feeds the
        receiver, or under the lock that serialises it (``GuestNetwork.under_lock``)."""
        return ReceiverStats.of(self.counters, len(self.sessions))

    # ------------------------------------------------------------------------------ memory
    def memory_bound(self) -> int:
        """The most bytes the receiver holds, whatever arrives (from ``config`` alone):
        sessions, candidates pending and being checked, remembered failures."""
        c = self.config
        return (
            c.max_sessions * c.session_bound()
            + c.candidate_slots * CANDIDATE_BYTES + c.check_batch * CHECK_BYTES
            + BadManifests.footprint(c.bad_manifest_memory)
        )  # fmt: skip

    def memory_in_use(self) -> int:
        """Bytes held now, counted as ``memory_bound`` counts them."""
        held = sum(s.memory() for s in self.sessions.values())
        candidates = len(self.pool) * CANDIDATE_BYTES + len(self._checking) * CHECK_BYTES
        return held + candidates + self._bad.memory()

    # ------------------------------------------------------------------------------ input
    def on_datagram(self, payload: bytes, source: tuple[str, int]) -> None:
        """One UDP payload. ``source`` decides nothing: UDP source addresses are spoofable."""
        self.counters["datagrams"] += 1
        try:
            packet = parse_packet(payload)
        except PacketError as bad:
            self.counters[bad.reason] += 1
            return
        header = packet.header
        if header.db_version < self.service.acceptable_versions.start:
            self.counters["stale"] += 1  # rollback or replay: dropped before any crypto
            return
        if header.type is PacketType.MANIFEST:
            self._on_manifest(packet)
            return
        session = self.sessions.get((header.update_id, header.db_version))
        if session is None:
            self.counters["no_session"] += 1  # nothing is buffered ahead of its manifest
        elif header.type is PacketType.HASHPAGE:
            self.counters[session.take_page(packet)] += 1
        else:
            self._on_symbol(session, packet)

    def on_payload(self, payload: bytes, intact: Intact | None = None) -> bool:
        """``on_datagram`` on the raw front path (``front.py``): the same checks and counters,
        the header read without building objects; ``intact`` (the frame's UDP checksum) is asked
        only before a packet would be taken. False: it failed, and nothing was counted here."""
        return take_payload(self, payload, intact)

    def _on_manifest(self, packet: Packet) -> None:
        """The O(1) pre-filter; a survivor enters the reservoir for ``poll`` to verify (the raw
        front path has its own copy on raw bytes: ``prefilter.py``, tested against this one)."""
        fingerprint = digest(packet.raw)
        if not has_work(fingerprint):  # no work stamp: the one hash above, no more
            self.counters["no_work"] += 1
            return
        if fingerprint in self._bad:  # a replay of bytes that already failed: one hash, no more
            self.counters["known_bad_manifest"] += 1
            return
        try:
            manifest = Manifest.from_payload(packet.header, packet.payload)
        except PacketError as bad:
            self.counters[bad.reason] += 1
            return
        header, c = manifest.header, self.config
        if (packet.header.update_id, header.db_version) in self.sessions:
            self.counters["manifest_known"] += 1  # a repeat of a verified one: nothing to do
        elif fingerprint in self._checking:
            self.counters["manifest_checking"] += 1  # the same bytes are being checked now
        elif header.db_version not in self.service.acceptable_versions:
            self.counters["version_jump"] += 1  # the service's version policy, before any crypto
        elif (header.body_len > c.max_object or manifest.symbol_count > c.max_symbols
              or held_symbols(manifest) > c.symbol_memory):  # fmt: skip
            self.counters["too_large"] += 1
        elif not self._trusted_signer(manifest):
            self.counters["untrusted_key"] += 1
        elif header.expires_at <= self._trusted_now():
            self.counters["expired"] += 1
        else:
            self._offer(fingerprint, packet.raw)

    def _offer(self, fingerprint: bytes, raw: bytes) -> None:
        """A candidate into the pool (``admission.CandidatePool``): ranked by its stamp's work,
        admitted at random among equals once full, whatever its timing. Counted by what the pool
        says of it, and ``manifest_outworked`` for a pending one it evicted with more work."""
        evicted = self.pool.evicted
        outcome = self.pool.offer((fingerprint, raw), rank_of(fingerprint))
        if outcome == QUEUED:
            self.counters["manifest_queued"] += 1
        elif outcome == LESS_WORK:
            self.counters["manifest_less_work"] += 1  # the pool is full of more work
        else:
            self.counters["manifest_not_sampled"] += 1  # the fair draw among equals
        if self.pool.evicted != evicted:  # a pending one with less work made room for it
            self.counters["manifest_outworked"] += self.pool.evicted - evicted

    def _trusted_signer(self, manifest: Manifest) -> bool:
        key = self.service.trust.lookup(manifest.header.key_id)
        return key is not None and key.alg == manifest.header.sig_alg

    def _trusted_now(self) -> int:
        return max(int(self.wall_clock()), self.service.time_floor)

    def _on_symbol(self, session: Session, packet: Packet) -> None:
        h = packet.header
        self._on_symbol_at(session, h.index, h.count, packet.payload, None)

    def _on_symbol_at(self, session: Session, index: int, count: int, payload: bytes,
                      intact: Intact | None) -> bool:  # fmt: skip
        """A SYMBOL for ``session``; False: ``intact`` failed (nothing counted)."""
        decoded = session.decoded
        result = session.take_symbol_at(index, count, payload, intact)
        if result is CORRUPT:
            return False
        self.counters[result] += 1
        self.counters["block_decoded"] += session.decoded - decoded
        if session.body is not None:
            self._complete(session, session.body)
        elif session.exhausted:
            self.counters["decode_failed"] += 1
            self._close(session)
            self._remember_bad_digest(session.manifest_digest)
        return True

    # ------------------------------------------------------------------------------ budget
    def poll(self, *, final: bool = False) -> None:
        """Spend the verification budget on candidate manifests (unless a worker does: see
        ``offloaded``); log ``receiver_stats`` when due. ``final``: the caller stops polling now
        (the network's I/O thread is stopping), so counters not yet logged are logged at once."""
        if not self.offloaded:
            self.finish_checks([self.check(c) for c in self.take_checks()])
        self._reporter.report(self.counters, len(self.sessions), final)

    def take_checks(self) -> list[ManifestCheck]:
        """The candidates the budget pays for now (at most ``check_batch``), drawn at random from
        the pool, each with the state it is judged against; identical ones once. Cheap: no
        crypto. Hand each to ``check`` (any thread), the results to ``finish_checks``."""
        n = self.budget.affordable(min(self.config.check_batch, len(self.pool)))
        if n == 0:
            return []
        versions, now = self.service.acceptable_versions, int(self.wall_clock())
        checks = []
        for fingerprint, raw in self.pool.draw(n):
            if fingerprint in self._checking:
                continue
            packet = parse_packet(raw)  # parsed once already: cannot fail
            checks.append(ManifestCheck(
                packet, Manifest.from_payload(packet.header, packet.payload), fingerprint,
                versions, now, self.service.time_floor, HEADER_SIZE + self.config.max_object,
            ))  # fmt: skip
            self._checking.add(fingerprint)
        return checks

    def check(self, check: ManifestCheck) -> CheckResult:
        """Verify one candidate (``admission.run_check``): touches no state of the receiver, so
        it runs on any thread without the receiver's lock."""
        return run_check(check, self.service.trust, self.cpu_clock)

    def pending_checks(self) -> int:
        """Candidates waiting for a check."""
        return len(self.pool)

    def awaits_verdict(self) -> bool:
        """True when the caller feeding datagrams should let the verifier judge the pending
        candidates before it feeds more: some are pending, the budget pays for them, and no
        manifest was refused for ``QUIET_WINDOW`` (so no flood: under one, the caller never
        waits, and a forger makes it wait for at most one check per ``QUIET_WINDOW``). Then the
        datagrams queued behind a genuine manifest find its session open."""
        return (
            len(self.pool) > 0 and not self._checking
            and self.clock() - self._refused_at >= QUIET_WINDOW
            and self.budget.wait() == 0.0
        )  # fmt: skip

    def check_wait(self) -> float:
        """Seconds of ``clock`` until the budget pays for a check again (0 if it does now)."""
        return self.budget.wait()

    def finish_checks(self, results: list[CheckResult]) -> None:
        """Apply verdicts: charge their cost, remember failures, open sessions."""
        for result in results:
            check = result.check
            self._checking.discard(check.fingerprint)
            self.budget.spend(result.cost)
            self.counters["verifications"] += 1
            if result.refusal is not None:
                self._refused_at = self.clock()
                self.counters[result.refusal] += 1
                if result.final:
                    self._remember_bad_digest(check.fingerprint)
            elif check.manifest.header.db_version not in self.service.acceptable_versions:
                self.counters["stale"] += 1  # something newer was installed meanwhile
            elif (check.packet.header.update_id, check.manifest.header.db_version) in self.sessions:
                self.counters["manifest_known"] += 1
            else:
                self._open(check.packet, check.manifest)

    def verifier_failed(self, problem: str) -> None:
        """The worker running the checks died (``problem``, one line): ``poll`` runs them again
        from now on, and the checks in flight are forgotten (their manifests, when sent again,
        are candidates again rather than dropped as ``manifest_checking``). Logs
        ``verifier_failed``. Call it under the lock that serialises the receiver."""
        abandoned = len(self._checking)
        self._checking.clear()
        self.offloaded = False
        self.service.events.emit("verifier_failed", problem=problem, abandoned=abandoned)

    def _remember_bad_digest(self, manifest_digest: bytes) -> None:
        self._bad.add(manifest_digest)

    # ------------------------------------------------------------------------------ sessions
    def _open(self, packet: Packet, manifest: Manifest) -> None:
        if len(self.sessions) >= self.config.max_sessions:
            oldest = min(self.sessions.values(), key=lambda s: s.db_version)
            if oldest.db_version >= manifest.header.db_version:
                self.counters["sessions_full"] += 1
                return
            self._close(oldest)
            self.counters["session_evicted"] += 1
        key = (packet.header.update_id, manifest.header.db_version)
        self.sessions[key] = Session.open(manifest, digest(packet.raw))
        self.counters["session_opened"] += 1

    def _close(self, session: Session) -> None:
        self.sessions = {k: s for k, s in self.sessions.items() if s is not session}

    def _complete(self, session: Session, body: bytes) -> None:
        """The body decoded: check it against the signed header, then let the service decide."""
        manifest = session.manifest
        self._close(session)
        try:
            check_body(manifest.header, body)
        except UpdateRejected as bad:
            self.counters["object_mismatch"] += 1
            self._remember_bad_digest(session.manifest_digest)
            self.service.reject("network", Rc(bad.code), bad.reason)
            return
        bundle = manifest.bundle_header + body
        rc = self.service.submit(bundle, manifest.bundle_signature, "network")
        self.counters["installed" if rc is Rc.OK else "service_rejected"] += 1
        installed = self.service.installed_version
        self.sessions = {k: s for k, s in self.sessions.items() if s.db_version > installed}
