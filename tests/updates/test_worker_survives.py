"""The compile worker and ``submit`` under failures that are not the guest's: an event log that
cannot be written, a worker thread that ends abnormally, a parser bug, and the moment between
``wait_done`` returning and the worker thread being gone. Deterministic: failures are injected by
replacing functions, every wait on the other thread is bounded and nothing measures time."""

from __future__ import annotations

import threading

import pytest

from hv_emu.errors import DatabaseError
from hv_emu.events import EventLog, JsonValue
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, ActiveDatabase, SignatureDatabase
from hv_emu.updates import compile_worker, service
from hv_emu.updates.service import UpdateService
from tests.rigs.netupdate import KEY, signed, trust_of

WAIT = 10  # seconds: a bound on waiting for the worker thread, never a measurement


class FailingLog(EventLog):
    """An event log whose sink write fails (ENOSPC) for the kinds named: ``emit`` raises."""

    def __init__(self, *kinds: str) -> None:
        super().__init__()
        self.failing = set(kinds)

    def emit(self, event: str, **fields: JsonValue) -> dict[str, JsonValue]:
        if event in self.failing:
            raise OSError(28, "No space left on device")
        return super().emit(event, **fields)


def new_service(events: EventLog | None = None) -> UpdateService:
    return UpdateService(trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()),
                         events or EventLog(), max_size=16 << 20)  # fmt: skip


def test_an_event_that_cannot_be_written_does_not_kill_the_compile_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """v1's compile fails on the host and its ``database_failed`` cannot be logged: the worker is
    still done with v1 (``wait_done`` returns), goes idle (``wait_active``: the end of a run does
    not hang) and the next update is compiled and put in force."""
    real = compile_worker.compile_signatures

    def crash_on_v1(signatures, kind, version, *rest, **kw):  # type: ignore[no-untyped-def]
        if version == 1:
            raise RuntimeError("simulated host failure")
        return real(signatures, kind, version, *rest, **kw)

    monkeypatch.setattr(compile_worker, "compile_signatures", crash_on_v1)
    updates = new_service(FailingLog("database_failed", "database_active"))
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert updates.wait_done(1, WAIT)
    assert updates.wait_active(WAIT)
    assert updates.status().state == "failed"
    assert updates.submit(*signed(2), "vmcall") == Rc.OK  # a new worker (its event fails too)
    assert updates.wait_done(2, WAIT)
    assert updates.wait_active(WAIT)
    assert updates.database.current.version == 2
    assert updates.status().state == "active"


class Killed(BaseException):
    """Ends a thread the way nothing in ``_work`` catches (as a ``SystemExit`` would)."""


def test_a_worker_thread_that_ends_abnormally_is_not_waited_for_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = compile_worker.compile_signatures

    def kill_on_v1(signatures, kind, version, *rest, **kw):  # type: ignore[no-untyped-def]
        if version == 1:
            raise Killed
        return real(signatures, kind, version, *rest, **kw)

    monkeypatch.setattr(compile_worker, "compile_signatures", kill_on_v1)
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # expected: not a report
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.OK
    assert updates.wait_done(1, WAIT)  # the version moved although the thread ended
    assert updates.wait_active(WAIT)  # Machine.finish's wait: the thread is gone, so is the wait
    assert updates.submit(*signed(2), "vmcall", wait=True) == Rc.OK  # a new worker starts
    assert updates.database.current.version == 2
    assert updates.status().state == "active"


def test_a_parser_bug_is_answered_malformed_and_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(*args: object, **kw: object) -> object:
        raise ValueError("simulated parser bug")

    monkeypatch.setattr(service, "check_steps", buggy)  # the check on the caller's path
    updates = new_service()
    assert updates.submit(*signed(1), "vmcall") == Rc.MALFORMED
    rejected, = updates.events.of("update_rejected")
    assert rejected["error"] == "MALFORMED" and "ValueError" in str(rejected["reason"])
    assert (updates.installed_version, updates.rejected, updates.accepted) == (0, 1, 0)
    assert not updates.events.of("update_accepted")


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")
def test_status_after_a_sync_update_whose_recompile_failed_reads_active(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/ABI.md: after a ``--sync-updates`` OK the next get_status reads ``active`` (or
    ``failed``), also while the worker thread, done with the version, has not yet gone."""
    monkeypatch.setattr(compile_worker, "FIRST_STAGE_FROM", 0)  # this small database is large

    def refuse(db: SignatureDatabase, *rest: object) -> SignatureDatabase:
        raise DatabaseError(f"update v{db.version}", 0, 0, "Hyperscan cannot compile it")

    monkeypatch.setattr(compile_worker, "recompile", refuse)
    updates = new_service()
    release, calls = threading.Event(), [0]
    real_take = updates._take

    def held_take() -> object:
        calls[0] += 1
        if calls[0] == 2:  # the worker is done with v1: hold it before it looks for more
            assert release.wait(WAIT)
        return real_take()

    monkeypatch.setattr(updates, "_take", held_take)
    try:
        assert updates.submit(*signed(1), "vmcall", wait=True) == Rc.OK
        assert updates.database.current.engine == "ac"  # the first stage stays in force
        status = updates.status()
        assert (status.version, status.active_version, status.state) == (1, 1, "active")
    finally:
        release.set()
    assert updates.wait_active(WAIT)
    assert updates.status().state == "active"
