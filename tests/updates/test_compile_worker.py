"""One compile at a time: accepted updates queue for a single compile worker, a newer one
supersedes the one waiting (dropped before it starts) and cuts a running one's second stage, and
the newest accepted database is the one that ends in force. Deterministic: the compile function
is replaced by one the test opens and closes, and nothing depends on timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from hv_emu.errors import DatabaseError
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, ActiveDatabase, SignatureDatabase
from hv_emu.updates import compile_worker
from hv_emu.updates.service import UpdateService
from tests.rigs.netupdate import KEY, signed, trust_of

WAIT = 30  # seconds: a bound on waiting for the other thread, never a measurement


@dataclass
class GatedCompiler:
    """Stands in for ``compile_signatures``: every compile says it started, then waits until the
    test opens its version's gate; the peak number of compiles running at once is recorded."""

    real: object
    started: list[int] = field(default_factory=list)
    running: int = 0
    peak: int = 0
    gates: dict[int, threading.Event] = field(default_factory=dict)
    began: dict[int, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gate(self, version: int) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(version, threading.Event())

    def has_begun(self, version: int) -> threading.Event:
        with self.lock:
            return self.began.setdefault(version, threading.Event())

    def __call__(self, signatures, kind, version, *rest, **kw):  # type: ignore[no-untyped-def]
        with self.lock:
            self.started.append(version)
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.has_begun(version).set()
        try:
            assert self.gate(version).wait(WAIT), f"the test never opened v{version}'s gate"
            return self.real(signatures, kind, version, *rest, **kw)  # type: ignore[operator]
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def compiler(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedCompiler]:
    gated = GatedCompiler(compile_worker.compile_signatures)
    monkeypatch.setattr(compile_worker, "compile_signatures", gated)
    yield gated
    for gate in list(gated.gates.values()):  # never leave a compile blocked behind a failed test
        gate.set()


def new_service() -> UpdateService:
    return UpdateService(trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()), EventLog(),
                         max_size=16 << 20)  # fmt: skip


def test_back_to_back_updates_compile_one_at_a_time_and_the_newest_wins(
    compiler: GatedCompiler,
) -> None:
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert compiler.has_begun(1).wait(WAIT)  # v1 is compiling (held at its gate)
    for version in (2, 3, 4):  # accepted back to back while v1 compiles
        assert updates.submit(*signed(version), "vmcall") == Rc.OK
    assert updates.installed_version == 4  # all four accepted and persisted at once
    assert compiler.started == [1]  # nothing else started beside the running compile
    for version in (1, 2, 3, 4):
        compiler.gate(version).set()
    assert updates.wait_active(WAIT)
    assert compiler.started == [1, 4]  # 2 and 3 were dropped before they started
    assert compiler.peak == 1
    assert updates.database.current.version == 4
    events = updates.events
    assert [e["db_version"] for e in events.of("database_active")] == [1, 4]
    superseded = [(e["db_version"], e["by_version"], e["stage"])
                  for e in events.of("database_superseded")]  # fmt: skip
    assert superseded == [(2, 3, "queued"), (3, 4, "queued")]


def test_a_compile_is_never_swapped_in_over_a_newer_database(compiler: GatedCompiler) -> None:
    """Whatever order the gates open in, versions only ever go up, and the last is the newest."""
    updates = new_service()
    swaps: list[int] = []
    real_swap = updates.database.swap

    def watched(new: SignatureDatabase) -> SignatureDatabase:
        swaps.append(new.version)
        return real_swap(new)

    updates.database.swap = watched  # type: ignore[method-assign]
    for version in (1, 2, 3):
        assert updates.submit(*signed(version), "network") == Rc.OK
    for version in (3, 2, 1):
        compiler.gate(version).set()
    assert updates.wait_active(WAIT)
    assert swaps == sorted(swaps) and swaps[-1] == 3
    assert updates.database.current.version == 3


def test_wait_active_reports_a_compile_still_running(compiler: GatedCompiler) -> None:
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert compiler.has_begun(1).wait(WAIT)
    assert not updates.wait_active(0.01)
    compiler.gate(1).set()
    assert updates.wait_active(WAIT)
    assert updates.database.current.version == 1
    # The worker is gone once idle, and a later update starts a new one.
    compiler.gate(2).set()
    assert updates.submit(*signed(2), "vmcall") == Rc.OK
    assert updates.wait_active(WAIT)
    assert updates.database.current.version == 2


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")
def test_a_newer_update_cuts_the_second_stage_of_a_large_one(
    compiler: GatedCompiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 (large: two stages) is compiling its first stage when v2 is accepted: v1 goes in force
    (it is newer than what scans now), but its recompile is skipped for v2's compile."""
    monkeypatch.setattr(compile_worker, "FIRST_STAGE_FROM", 0)  # this small database is large
    recompiled: list[int] = []
    real_recompile = compile_worker.recompile

    def counted(db: SignatureDatabase, *rest: object) -> SignatureDatabase:
        recompiled.append(db.version)
        return real_recompile(db)

    monkeypatch.setattr(compile_worker, "recompile", counted)
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert compiler.has_begun(1).wait(WAIT)
    assert updates.submit(*signed(2), "vmcall") == Rc.OK
    compiler.gate(1).set()
    compiler.gate(2).set()
    assert updates.wait_active(WAIT)
    assert recompiled == [2]
    events = updates.events
    active = [(e["db_version"], e["engine"]) for e in events.of("database_active")]
    assert active == [(1, "ac"), (2, "ac")]  # the automaton: the first stage
    superseded, = events.of("database_superseded")
    assert (superseded["db_version"], superseded["by_version"], superseded["stage"]) == (
        1, 2, "recompile")
    assert [e["db_version"] for e in events.of("database_recompiled")] == [2]
    assert (updates.database.current.version, updates.database.current.engine) == (2, "hyperscan")


def test_a_compile_that_crashes_on_the_host_does_not_stop_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = compile_worker.compile_signatures

    def crash_on_v1(signatures, kind, version, *rest, **kw):  # type: ignore[no-untyped-def]
        if version == 1:
            raise MemoryError("simulated")
        return real(signatures, kind, version, *rest, **kw)

    monkeypatch.setattr(compile_worker, "compile_signatures", crash_on_v1)
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert updates.wait_active(WAIT)
    failed, = updates.events.of("database_failed")
    assert failed["db_version"] == 1 and "MemoryError" in str(failed["reason"])
    assert updates.database.current.version == 0
    assert updates.submit(*signed(2), "vmcall") == Rc.OK
    assert updates.wait_active(WAIT)
    assert updates.database.current.version == 2


def state(updates: UpdateService) -> tuple[int, int, str]:
    status = updates.status()
    return status.version, status.active_version, status.state


def test_status_follows_an_update_from_acceptance_to_activation(compiler: GatedCompiler) -> None:
    """``get_status``'s database lines (issue 12, item 6): accepted and active are told apart."""
    updates = new_service()
    assert state(updates) == (0, 0, "active")
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert compiler.has_begun(1).wait(WAIT)
    status = updates.status()
    assert (status.version, status.active_version, status.state) == (1, 0, "compiling")
    assert status.signatures == 40 and status.sha256 != updates.database.current.sha256
    compiler.gate(1).set()
    assert updates.wait_active(WAIT)
    assert state(updates) == (1, 1, "active")
    assert updates.status().sha256 == updates.database.current.sha256


def test_wait_done_is_not_prolonged_by_a_later_update(compiler: GatedCompiler) -> None:
    """``--sync-updates`` waits for its own version, not for updates accepted after it."""
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert compiler.has_begun(1).wait(WAIT)
    assert updates.submit(*signed(2), "network") == Rc.OK  # waits for the worker behind v1
    assert not updates.wait_done(1, 0.01)
    compiler.gate(1).set()
    assert updates.wait_done(1, WAIT)
    assert state(updates) == (2, 1, "compiling")  # v2 is held at its gate
    assert not updates.wait_active(0.01)
    compiler.gate(2).set()
    assert updates.wait_done(2, WAIT)
    assert state(updates) == (2, 2, "active")


def test_status_says_failed_when_the_accepted_compile_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(signatures, kind, version, *rest, **kw):  # type: ignore[no-untyped-def]
        raise DatabaseError(f"update v{version}", 0, 0, "Hyperscan cannot compile it")

    monkeypatch.setattr(compile_worker, "compile_signatures", refuse)
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall", wait=True) == Rc.OK  # accepted and persisted
    assert state(updates) == (1, 0, "failed")


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")
def test_status_says_recompiling_while_a_large_database_scans_in_its_first_stage(
    compiler: GatedCompiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compile_worker, "FIRST_STAGE_FROM", 0)  # this small database is large
    began, release = threading.Event(), threading.Event()
    real_recompile = compile_worker.recompile

    def held(db: SignatureDatabase, *rest: object) -> SignatureDatabase:
        began.set()
        assert release.wait(WAIT)
        return real_recompile(db)

    monkeypatch.setattr(compile_worker, "recompile", held)
    updates = new_service()
    compiler.gate(1).set()
    try:
        assert updates.submit(*signed(1), "vmcall") == Rc.OK
        assert began.wait(WAIT)
        assert state(updates) == (1, 1, "recompiling")  # active (the automaton), recompiling
        assert updates.database.current.engine == "ac"
    finally:
        release.set()
    assert updates.wait_active(WAIT)
    assert state(updates) == (1, 1, "active")
