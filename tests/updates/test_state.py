"""Persisted installed state: round trips, strict loading, and crash safety at every step."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, HostError, StorageError
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.state import STATE_FILE, InstalledState, StateDir
from tests.rigs.updates import NEW_BODY, OLD_BODY, installed, update


@pytest.fixture
def with_old(tmp_path: Path) -> StateDir:
    """A state directory holding version 3 (``OLD_BODY``)."""
    directory = StateDir(tmp_path / "state")
    directory.save(installed(OLD_BODY, 3), OLD_BODY)
    return directory


def files_in(directory: StateDir) -> set[str]:
    return {entry.name for entry in directory.path.iterdir()}


# --------------------------------------------------------------------------- normal operation


def test_fresh_directory_has_no_state(tmp_path: Path) -> None:
    assert StateDir(tmp_path / "does-not-exist").load() is None
    assert StateDir(tmp_path).load() is None


def test_save_creates_the_directory_and_round_trips(with_old: StateDir) -> None:
    loaded = with_old.load()
    assert loaded == (installed(OLD_BODY, 3), OLD_BODY)
    state = loaded[0]
    assert state.kind == "ndb" and state.key_id == "0102030405060708"
    assert files_in(with_old) == {STATE_FILE, state.db_file}
    assert state.db_file == f"db-{hashlib.sha256(OLD_BODY).hexdigest()}.ndb"


def test_new_state_replaces_the_old_and_its_body(with_old: StateDir) -> None:
    new = installed(NEW_BODY, 4)
    with_old.save(new, NEW_BODY)
    assert with_old.load() == (new, NEW_BODY)
    assert files_in(with_old) == {STATE_FILE, new.db_file}


def test_same_body_under_a_new_version_keeps_its_file(with_old: StateDir) -> None:
    again = installed(OLD_BODY, 4)
    with_old.save(again, OLD_BODY)
    assert with_old.load() == (again, OLD_BODY)
    assert files_in(with_old) == {STATE_FILE, again.db_file}


def test_time_floor_never_goes_down() -> None:
    first = InstalledState.record(update(OLD_BODY, 3, 5000), now=6000, time_floor=0)
    assert first.time_floor == 5000
    earlier_issued = InstalledState.record(update(NEW_BODY, 4, 4000), now=7000,
                                            time_floor=first.time_floor)
    assert earlier_issued.time_floor == 5000
    later = InstalledState.record(update(NEW_BODY, 5, 8000), now=8000,
                                   time_floor=earlier_issued.time_floor)
    assert later.time_floor == 8000
    assert later.installed_at == 8000


def test_save_refuses_a_body_that_is_not_the_state(tmp_path: Path) -> None:
    with pytest.raises(HostError):
        StateDir(tmp_path).save(installed(OLD_BODY, 3), NEW_BODY)
    assert StateDir(tmp_path).load() is None


def test_json_round_trip() -> None:
    state = installed(NEW_BODY, 9)
    assert InstalledState.from_json(state.to_json()) == state


# --------------------------------------------------------------------------- strict loading


def rewrite_state(directory: StateDir, **changes: object) -> None:
    path = directory.path / STATE_FILE
    data = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(data))


def load_error(directory: StateDir) -> str:
    with pytest.raises(ConfigError) as info:
        directory.load()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_json_is_an_error_not_a_fresh_start(with_old: StateDir) -> None:
    (with_old.path / STATE_FILE).write_text("{ not json")
    assert "not valid JSON" in load_error(with_old)


def test_missing_database_is_an_error(with_old: StateDir) -> None:
    state, _ = with_old.load() or pytest.fail("no state")
    (with_old.path / state.db_file).unlink()
    assert "refusing to forget the installed version" in load_error(with_old)


def test_altered_database_is_an_error(with_old: StateDir) -> None:
    state, _ = with_old.load() or pytest.fail("no state")
    (with_old.path / state.db_file).write_bytes(OLD_BODY + b"X")
    assert "SHA-256 does not match" in load_error(with_old)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"db_version": -1}, "db_version must be a non-negative integer"),
        ({"issued_at": "5000"}, "issued_at must be a non-negative integer"),
        ({"time_floor": True}, "time_floor must be a non-negative integer"),
        ({"kind": "../../etc"}, "kind must be one of db, ndb"),
        ({"db_sha256": "../" + "a" * 61}, "db_sha256 must be 64 lowercase hex digits"),
        ({"key_id": "XYZ"}, "key_id must be 16 lowercase hex digits"),
        ({"extra": 1}, "expected exactly the keys"),
    ],
)
def test_inconsistent_fields_are_errors(
    with_old: StateDir, changes: dict[str, object], message: str
) -> None:
    rewrite_state(with_old, **changes)
    assert message in load_error(with_old)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=70),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=12,
    )
)
def test_from_json_only_raises_config_error(value: object) -> None:
    try:
        InstalledState.from_json(json.dumps(value))
    except ConfigError:
        return
    pytest.fail(f"accepted {value!r}")


# --------------------------------------------------------------------------- failing steps
# A step that raises (a full disk, an I/O error) before the commit leaves the old state and none
# of this save's files; after it, the new state with a problem reported. Power cuts, where nothing
# gets to clean up, are tests/updates/test_state_power.py.


class Crash(OSError):
    """A step of the save fails."""


def crash_when(monkeypatch: pytest.MonkeyPatch, name: str, predicate: Callable[..., bool]) -> None:
    """Make ``os.<name>`` raise ``Crash`` whenever ``predicate(*args)`` is true."""
    real = getattr(os, name)

    def maybe_crash(*args: object, **kwargs: object) -> object:
        if predicate(*args):
            raise Crash(f"simulated failure in os.{name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, maybe_crash)


def assert_old_state(directory: StateDir) -> None:
    assert directory.load() == (installed(OLD_BODY, 3), OLD_BODY)
    assert files_in(directory) == {STATE_FILE, installed(OLD_BODY, 3).db_file}


def assert_new_state(directory: StateDir) -> None:
    assert directory.load() == (installed(NEW_BODY, 4), NEW_BODY)


def test_failure_while_storing_the_new_body(
    with_old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_when(monkeypatch, "replace", lambda src, dst: Path(dst).name.startswith("db-"))
    with pytest.raises(StorageError, match=r"cannot save .*nothing changed"):
        with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    assert_old_state(with_old)


def test_failure_of_the_commit_rename(
    with_old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_when(monkeypatch, "replace", lambda src, dst: Path(dst).name == STATE_FILE)
    with pytest.raises(StorageError):
        with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    # The new body and the state draft were written, the commit did not happen: both are gone.
    assert_old_state(with_old)
    monkeypatch.undo()
    with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    assert_new_state(with_old)
    assert files_in(with_old) == {STATE_FILE, installed(NEW_BODY, 4).db_file}


def test_failure_while_fsyncing_the_state_draft(
    with_old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The body is written and renamed (its fsync and the directory's pass), then the fsync of
    # the state draft fails: nothing has been committed.
    calls: list[int] = []

    def third_fsync(fd: int) -> bool:
        calls.append(fd)
        return len(calls) == 3

    crash_when(monkeypatch, "fsync", third_fsync)
    with pytest.raises(StorageError):
        with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    assert_old_state(with_old)


def test_failure_after_the_commit_is_reported_not_raised(
    with_old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Committed, but the old body could not be removed: the new state is whole.
    crash_when(monkeypatch, "unlink", lambda name: True)
    problems = with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    assert_new_state(with_old)
    assert installed(OLD_BODY, 3).db_file in files_in(with_old)
    assert len(problems) == 1 and "cannot remove" in problems[0] and "\n" not in problems[0]


def test_state_file_is_never_half_written(
    with_old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At the moment of the commit rename, the file it replaces is still the complete old one.
    seen: list[object] = []
    real_replace = os.replace

    def spying_replace(src: str, dst: str, **kwargs: int) -> None:
        if Path(dst).name == STATE_FILE:
            seen.append(InstalledState.from_json((with_old.path / dst).read_text()))
            seen.append(InstalledState.from_json((with_old.path / src).read_text()))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", spying_replace)
    with_old.save(installed(NEW_BODY, 4), NEW_BODY)
    assert seen == [installed(OLD_BODY, 3), installed(NEW_BODY, 4)]


def test_record_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        installed(OLD_BODY, 3).db_version = 4  # type: ignore[misc]


def test_an_update_the_state_directory_could_not_save_changes_nothing_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hv_emu.events import EventLog
    from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
    from hv_emu.updates.service import UpdateService
    from tests.rigs.netupdate import KEY, NOW, signed, trust_of

    service = UpdateService(trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()), EventLog(),
                            state=StateDir(tmp_path), time_floor=NOW - 3600, max_size=1 << 20)
    bundle, signature = signed(2, issued_at=NOW - 60)
    crash_when(monkeypatch, "replace", lambda src, dst: Path(dst).name == STATE_FILE)
    assert service.submit(bundle, signature, "vmcall") == Rc.STORAGE_FAILED
    # Not accepted: neither the version nor the trusted time floor moved.
    assert (service.installed_version, service.time_floor, service.accepted) == (0, NOW - 3600, 0)
    assert StateDir(tmp_path).load() is None


def test_run_says_when_the_state_directory_overrides_db(
    with_old: StateDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--db`` seeds an empty state directory only: once a signed update is installed there,
    the run says so instead of dropping the option silently, and the installed version runs."""
    from hv_emu import SAMPLE_DB
    from hv_emu.cli.main import main

    image = tmp_path / "halt.bin"
    image.write_bytes(b"\xf4")
    assert main(["run", "--mode", "16", "--state", str(with_old.path), "--db", str(SAMPLE_DB),
                 str(image)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert f"--db {SAMPLE_DB} is not loaded: {with_old.path} holds database v3" in err
    assert "database v3" in err.splitlines()[-1]
    # Without --db there is nothing to say.
    assert main(["run", "--mode", "16", "--state", str(with_old.path), str(image)]) == 0
    assert "is not loaded" not in capsys.readouterr().err
