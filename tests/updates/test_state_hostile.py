"""The state directory against a hostile neighbour: planted symlinks and special files are never
followed, nothing hv-emu did not write is ever deleted, and a failure after the commit point never
costs the guest its answer (issue 12, items 1-3)."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, StorageError
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates.service import UpdateService
from hv_emu.updates.state import STATE_FILE, StateDir
from tests.rigs.netupdate import KEY, NOW, signed, trust_of
from tests.rigs.updates import NEW_BODY, OLD_BODY, Publisher, installed, machine_for, run_update

NEW = installed(NEW_BODY, 4)
OLD = installed(OLD_BODY, 3)
PRECIOUS = b"the user's own file\n"


@pytest.fixture
def old(tmp_path: Path) -> StateDir:
    directory = StateDir(tmp_path / "state")
    directory.save(OLD, OLD_BODY)
    return directory


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the state directory that a planted link points at."""
    path = tmp_path / "victim"
    path.write_bytes(PRECIOUS)
    return path


def snapshot(directory: Path) -> dict[str, tuple[str, bytes | str | None]]:
    """What every entry is, without following anything: kind and content (or link target)."""
    found: dict[str, tuple[str, bytes | str | None]] = {}
    for entry in os.scandir(directory):
        if entry.is_symlink():
            found[entry.name] = ("link", os.readlink(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            found[entry.name] = ("dir", None)
        elif entry.is_file(follow_symlinks=False):
            found[entry.name] = ("file", Path(entry.path).read_bytes())
        else:
            found[entry.name] = ("other", None)
    return found


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ item 1: planted symlinks


@pytest.mark.parametrize("planted", [STATE_FILE + ".tmp", NEW.db_file + ".tmp"])
def test_a_symlink_at_the_old_temporary_name_is_not_written_through(
    old: StateDir, victim: Path, planted: str
) -> None:
    (old.path / planted).symlink_to(victim)
    old.save(NEW, NEW_BODY)
    assert victim.read_bytes() == PRECIOUS
    assert not (old.path / STATE_FILE).is_symlink()
    assert os.readlink(old.path / planted) == str(victim)  # left as it was
    assert old.load() == (NEW, NEW_BODY)


def test_temporaries_have_unpredictable_names(
    old: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[str] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            created.append(os.fsdecode(path))
            assert flags & os.O_EXCL and flags & os.O_NOFOLLOW
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    old.save(NEW, NEW_BODY)
    old.save(installed(OLD_BODY, 5), OLD_BODY)
    # v4's body and state, then v5's state and (the old body was removed at v4) its body again
    assert len(created) == 4 and len(set(created)) == 4
    assert not {STATE_FILE + ".tmp", NEW.db_file + ".tmp"} & set(created)


def test_a_state_file_that_is_a_symlink_is_refused(old: StateDir, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    os.replace(old.path / STATE_FILE, elsewhere)
    (old.path / STATE_FILE).symlink_to(elsewhere)
    with pytest.raises(ConfigError) as info:
        old.load()
    assert "symbolic link" in one_line(info)
    with pytest.raises(StorageError) as saving:
        old.save(NEW, NEW_BODY)
    assert "symbolic link" in one_line(saving)
    assert (old.path / STATE_FILE).is_symlink() and elsewhere.read_text() == OLD.to_json()


def test_a_database_file_that_is_a_symlink_is_refused(old: StateDir, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.ndb"
    os.replace(old.path / OLD.db_file, elsewhere)
    (old.path / OLD.db_file).symlink_to(elsewhere)
    with pytest.raises(ConfigError) as info:
        old.load()
    assert "symbolic link" in one_line(info)


def test_a_planted_link_at_the_new_database_name_is_refused_not_followed(
    old: StateDir, victim: Path
) -> None:
    (old.path / NEW.db_file).symlink_to(victim)
    with pytest.raises(StorageError) as info:
        old.save(NEW, NEW_BODY)
    assert "symbolic link" in one_line(info)
    assert victim.read_bytes() == PRECIOUS
    assert old.load() == (OLD, OLD_BODY)


def load_in_a_thread(directory: StateDir) -> BaseException | None:
    """What ``directory.load()`` raised (``None`` if nothing), failing if it blocks."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            directory.load()
            outcome.append(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # a writer unblocks the reader before the test fails
        os.close(os.open(directory.path / STATE_FILE, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading blocked on a FIFO planted as state.json")
    return outcome[0]


@pytest.mark.parametrize("make", [os.mkdir, os.mkfifo])
def test_a_state_file_that_is_a_directory_or_a_fifo_is_refused_without_blocking(
    old: StateDir, make: Callable[[Path], None]
) -> None:
    (old.path / STATE_FILE).unlink()
    make(old.path / STATE_FILE)
    error = load_in_a_thread(old)
    assert isinstance(error, ConfigError), error
    assert "not a regular file" in str(error) and "\n" not in str(error)


def test_an_oversized_state_file_is_refused_without_reading_it_all(old: StateDir) -> None:
    with open(old.path / STATE_FILE, "ab") as f:
        f.truncate(1 << 30)  # sparse: a gigabyte of nothing
    with pytest.raises(ConfigError) as info:
        old.load()
    assert "larger than" in one_line(info)


def test_an_oversized_database_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    directory = StateDir(tmp_path / "state", max_body=1 << 20)
    directory.save(OLD, OLD_BODY)
    with open(directory.path / OLD.db_file, "ab") as f:
        f.truncate(1 << 30)  # sparse
    with pytest.raises(ConfigError) as info:
        directory.load()
    assert "larger than 1048576 bytes" in one_line(info)


def test_a_state_file_with_a_version_no_update_could_follow_is_refused(old: StateDir) -> None:
    """A version above 2^63 - 1 (the reserved top half) would make every later update stale."""
    text = (old.path / STATE_FILE).read_text()
    (old.path / STATE_FILE).write_text(text.replace('"db_version": 3', f'"db_version": {2**63}'))
    with pytest.raises(ConfigError) as info:
        old.load()
    assert "above the highest version" in one_line(info)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user owns needs root")
def test_a_database_file_another_user_planted_is_not_adopted(old: StateDir) -> None:
    """Even with the right content: adopting it would make it ours to remove later."""
    planted = old.path / NEW.db_file
    planted.write_bytes(NEW_BODY)
    os.chown(planted, 65534, 65534)
    with pytest.raises(StorageError, match="not this user's"):
        old.save(NEW, NEW_BODY)
    assert planted.read_bytes() == NEW_BODY and planted.stat().st_uid == 65534
    loaded = old.load()
    assert loaded is not None and loaded[0] == OLD


# ------------------------------------------------------------------ item 2: files it never wrote


def test_an_update_removes_only_the_superseded_database(old: StateDir) -> None:
    users = {"db-backup.sql": b"-- dump\n", "notes.tmp": b"notes\n",
             "db-" + "0" * 64 + ".ndb": b"Mine:0:*:00\n", STATE_FILE + ".tmp": b"draft\n"}
    for name, data in users.items():
        (old.path / name).write_bytes(data)
    old.save(NEW, NEW_BODY)
    after = snapshot(old.path)
    assert {name: after[name] for name in users} == {n: ("file", d) for n, d in users.items()}
    assert set(after) == set(users) | {STATE_FILE, NEW.db_file}  # the old database went


# ------------------------------------------------------------------ item 3: after the commit


def service_on(directory: StateDir, events: EventLog) -> UpdateService:
    return UpdateService(trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()), events,
                         state=directory, time_floor=NOW - 3600, max_size=1 << 20)


def test_a_directory_named_like_a_temporary_does_not_abort_the_update(tmp_path: Path) -> None:
    directory = StateDir(tmp_path / "state")
    (directory.path / "junk.tmp").mkdir(parents=True)
    events = EventLog()
    service = service_on(directory, events)
    assert service.submit(*signed(2), "vmcall") == Rc.OK
    assert service.wait_active(30) and service.database.current.version == 2
    assert (directory.path / "junk.tmp").is_dir()


def test_a_cleanup_failure_after_the_commit_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = StateDir(tmp_path / "state")
    events = EventLog()
    service = service_on(directory, events)
    assert service.submit(*signed(2), "vmcall") == Rc.OK
    real_unlink = os.unlink

    def refuse(path: str, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    monkeypatch.setattr(os, "unlink", refuse)
    assert service.submit(*signed(3), "network") == Rc.OK
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert service.wait_active(30) and service.database.current.version == 3
    problem, = events.of("state_cleanup_failed")
    assert problem["db_version"] == 3 and "Operation not permitted" in str(problem["problem"])
    loaded = directory.load()
    assert loaded is not None and loaded[0].db_version == 3


def test_a_full_disk_before_the_commit_is_storage_failed_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = StateDir(tmp_path / "state")
    events = EventLog()
    service = service_on(directory, events)
    assert service.submit(*signed(2), "vmcall") == Rc.OK
    assert service.wait_active(30)
    before = snapshot(directory.path)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    assert service.submit(*signed(3), "vmcall") == Rc.STORAGE_FAILED
    monkeypatch.undo()
    assert snapshot(directory.path) == before  # no temporaries left behind either
    assert (service.installed_version, service.accepted, service.rejected) == (2, 1, 1)
    assert service.wait_active(30) and service.database.current.version == 2
    rejected, = events.of("update_rejected")
    assert rejected["error"] == "STORAGE_FAILED" and "No space left" in str(rejected["reason"])
    # The disk has room again: the same update installs.
    assert service.submit(*signed(3), "vmcall") == Rc.OK


def test_a_guest_gets_ok_and_the_update_comes_into_force_despite_junk_tmp(
    tmp_path: Path,
) -> None:
    publisher = Publisher(tmp_path)
    state = tmp_path / "state"
    (state / "junk.tmp").mkdir(parents=True)
    machine = machine_for(publisher, state_dir=state)
    assert run_update(machine, *publisher.sign(version=2)) == "hvupdate: rc=0 (OK)\n"
    assert run_update(machine, *publisher.sign(version=3, body=b"Two:0:*:0102030405\n",
                                               kind="ndb")) == "hvupdate: rc=0 (OK)\n"
    assert machine.database.current.version == 3
    assert (state / "junk.tmp").is_dir()


def test_a_guest_is_told_storage_failed_when_the_state_cannot_be_saved(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    state = tmp_path / "state"
    machine = machine_for(publisher, state_dir=state)
    assert run_update(machine, *publisher.sign(version=2)) == "hvupdate: rc=0 (OK)\n"
    (state / STATE_FILE).unlink()
    (state / STATE_FILE).symlink_to(tmp_path / "elsewhere")
    out = run_update(machine, *publisher.sign(version=3))
    assert out.startswith(f"hvupdate: rc={int(Rc.STORAGE_FAILED)} "), out
    assert machine.database.current.version == 2 and machine.updates.installed_version == 2
    assert not (tmp_path / "elsewhere").exists()
    rejected, = machine.events.of("update_rejected")
    assert "symbolic link" in str(rejected["reason"]) and str(state) in str(rejected["reason"])


def test_the_network_thread_survives_a_state_it_cannot_save(tmp_path: Path) -> None:
    from hv_emu.net.backends import UdpBackend
    from tests.rigs.nic import loopback_machine, send_update, signed_update

    update = signed_update(tmp_path, version=7)
    state = tmp_path / "state"
    (state / STATE_FILE).mkdir(parents=True)  # not a file: every save is refused
    peer = UdpBackend(("127.0.0.1", 0))
    machine = None
    try:
        machine = loopback_machine(peer, trust=[update.trust], state_dir=state)
    except ConfigError as refused:  # the machine refuses to start on this directory
        assert "not a regular file" in str(refused)
    finally:
        if machine is not None:
            machine.close()
    (state / STATE_FILE).rmdir()
    machine = loopback_machine(peer, trust=[update.trust], state_dir=state)
    try:
        assert machine.network is not None and machine.receiver is not None
        (state / STATE_FILE).mkdir()  # planted while running
        machine.network.start()
        send_update(update, peer)
        deadline = time.monotonic() + 20
        while not machine.updates.rejected and time.monotonic() < deadline:
            time.sleep(0.01)
        (state / STATE_FILE).rmdir()
        send_update(update, peer)  # the thread is alive: the same update installs now
        while not machine.updates.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        machine.network.stop()  # raises if the I/O thread died
    finally:
        machine.close()
        peer.close()
    # (each carousel round may complete the update once more: each was refused the same way)
    rejected = {(r["error"], r["source"]) for r in machine.events.of("update_rejected")}
    assert rejected == {("STORAGE_FAILED", "network")}
    assert machine.updates.installed_version == 7
    loaded = StateDir(state).load()
    assert loaded is not None and loaded[0].db_version == 7


# ------------------------------------------------------------------ random junk, any kind

JUNK_NAMES = st.one_of(
    st.sampled_from([STATE_FILE + ".tmp", NEW.db_file + ".tmp", "notes.tmp", "db-backup.sql",
                     "junk.tmp", OLD.db_file + ".tmp"]),
    st.from_regex(r"db-[0-9a-f]{1,64}\.(n?db|tmp)(\.tmp)?", fullmatch=True),
    st.from_regex(r"[a-z]{1,8}\.(tmp|json)", fullmatch=True),
)
JUNK = st.dictionaries(JUNK_NAMES, st.sampled_from(["file", "dir", "link", "dangling", "fifo"]),
                       max_size=6)


def plant(directory: Path, victim: Path, name: str, kind: str) -> None:
    path = directory / name
    if kind == "file":
        path.write_bytes(PRECIOUS)
    elif kind == "dir":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(victim)
    elif kind == "dangling":
        path.symlink_to(directory.parent / "nowhere")
    else:
        os.mkfifo(path)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=JUNK, stateful=st.booleans())
def test_random_junk_is_never_followed_touched_or_deleted(
    tmp_path_factory: pytest.TempPathFactory, junk: dict[str, str], stateful: bool
) -> None:
    base = tmp_path_factory.mktemp("junk")
    victim = base / "victim"
    victim.write_bytes(PRECIOUS)
    directory = StateDir(base / "state")
    if stateful:
        directory.save(OLD, OLD_BODY)
    else:
        directory.path.mkdir()
    junk = {name: kind for name, kind in junk.items()
            if name not in {STATE_FILE, OLD.db_file, NEW.db_file}}
    for name, kind in junk.items():
        plant(directory.path, victim, name, kind)
    planted = {name: entry for name, entry in snapshot(directory.path).items() if name in junk}
    events = EventLog()
    service = service_on(directory, events)
    rc = service.submit(*signed(4, body=NEW_BODY), "vmcall")
    assert rc == Rc.OK
    after = snapshot(directory.path)
    assert {name: after.get(name) for name in planted} == planted
    assert set(after) == set(planted) | {STATE_FILE, NEW.db_file}
    assert victim.read_bytes() == PRECIOUS and not (base / "nowhere").exists()
    loaded = directory.load()
    assert loaded is not None and loaded[0].db_version == 4 and loaded[1] == NEW_BODY
    assert not events.of("state_cleanup_failed")
    assert service.wait_active(30)
