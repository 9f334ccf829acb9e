"""One large file shared with forked children (``hv_emu/cli/scan_shared.py``): the same result as
one whole scan whatever the units' owners, the decision to fork taken from the measured rate, a
child that dies, a file that shrinks, grows or changes while read, and signals that end the scan
leaving no process behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hv_emu.cli import scan_children, scan_files, scan_shared
from hv_emu.scanner.database import SignatureDatabase
from hv_emu.scanner.database_files import compile_files
from tests.rigs.scanner import BODIES, GRID_CHUNK, SPLITTABLE

ROOT = Path(__file__).resolve().parent.parent.parent
CHUNK = GRID_CHUNK


def database(tmp_path: Path, engine: str = "auto") -> SignatureDatabase:
    path = tmp_path / "s.ndb"
    path.write_bytes(SPLITTABLE)
    return compile_files([path], engine=engine)


def planted(rng: random.Random, units: int) -> bytes:
    """Random bytes with bodies across, just before and just after unit cuts, anywhere, and at
    the file's start or end."""
    data = bytearray(rng.randbytes(2 * CHUNK * units + rng.randrange(2 * CHUNK)))
    for _ in range(rng.randint(0, 16)):
        body = rng.choice(BODIES)
        cut = 2 * CHUNK * rng.randint(1, units - 1)
        at = rng.choice([cut + rng.randint(-20, 8), cut - len(body) + rng.randint(-4, 4),
                         rng.randrange(len(data))])
        at = max(0, min(at, len(data) - len(body)))
        data[at : at + len(body)] = body
    if rng.random() < 0.5:  # the file's first or last bytes: a boundary with nothing beyond
        body = rng.choice(BODIES)
        at = rng.choice([0, len(data) - len(body)])
        data[at : at + len(body)] = body
    return bytes(data)


@pytest.mark.parametrize("engine", ["ac", "auto"])
def test_any_sharing_of_the_units_gives_the_whole_scan(
    tmp_path: Path, small_grid: None, engine: str
) -> None:
    """Units dealt at random among three claimers (as the token pipe may deal them), each
    scanning its claims as stretches; joined, the result is the whole file's, at every cut."""
    db = database(tmp_path, engine)
    rng = random.Random(10)
    for trial in range(80):
        target = tmp_path / f"f{trial}"
        target.write_bytes(planted(rng, 12))
        whole = scan_files.scan_file(db, target)
        fd = os.open(target, os.O_RDONLY)
        try:
            plan = scan_shared._Plan(fd, os.fstat(fd).st_size)
            owners = [rng.randrange(3) for _ in range(plan.units)]
            segments = []
            for owner in range(3):
                mine = iter([unit for unit in range(plan.units) if owners[unit] == owner])
                segments += scan_shared._scan_claims(db, plan, lambda mine=mine: next(mine, None))
            result = scan_shared._joined(db, plan, scan_files.FileResult(str(target)), segments,
                                         None)  # fmt: skip
        finally:
            os.close(fd)
        assert (result.names, result.size, result.problem) == (whole.names, whole.size, None)


def slow_parent(delay: float = 0.002):  # type: ignore[no-untyped-def]
    """A progress callback that slows this process, so the children claim units too."""
    return lambda _size: time.sleep(delay)


def test_forked_children_scan_part_of_the_file_and_the_result_is_the_whole(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)
    received: list[int] = []
    real = scan_children.Children.collect

    def counted(self: scan_children.Children) -> list[object]:
        segments = real(self)
        received.append(sum(s.last - s.first + 1 for s in segments))  # type: ignore[attr-defined]
        return segments

    monkeypatch.setattr(scan_children.Children, "collect", counted)
    db = database(tmp_path)
    rng = random.Random(11)
    for trial in range(6):
        target = tmp_path / f"f{trial}"
        target.write_bytes(planted(rng, 24))
        result = scan_shared.shared_result(db, target, 3, slow_parent())
        assert result == scan_files.scan_file(db, target)
    assert len(received) == 6 and sum(received) > 0  # children's units came back


def test_sharing_is_worth_it_from_twice_its_cost() -> None:
    cost = scan_shared.FORK_COST + 0.003  # forking, and waiting for a 3 ms unit at the end
    assert scan_shared.MARGIN == 2.0
    assert scan_shared.worth_sharing(4 * cost, 0.003, 2)  # saves half: 2 x the cost
    assert not scan_shared.worth_sharing(3.99 * cost, 0.003, 2)
    assert scan_shared.worth_sharing(3 * cost, 0.003, 3)  # saves two thirds
    assert not scan_shared.worth_sharing(1000.0, 0.003, 1)  # nobody to share with


@pytest.mark.parametrize(("worth", "cores"), [(False, 8), (True, 8), (False, 2), (True, 2)])
def test_children_are_forked_only_when_the_measured_rate_says_so(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, worth: bool, cores: int
) -> None:
    """The clock says the first PROBE bytes took a second: ``worth_sharing`` is asked about the
    rest at that rate, a unit's time and the processes that can run at once (``-j``'s, at most
    one per core), once."""
    monkeypatch.setattr(scan_shared, "cores", lambda: cores)
    asked: list[tuple[float, float, int]] = []
    started: list[int] = []
    real = scan_children.Children.start

    def spy(self: scan_children.Children, *args: object) -> int:
        started.append(1)
        return real(self, *args)  # type: ignore[arg-type]

    def decide(left: float, unit: float, processes: int) -> bool:
        asked.append((left, unit, processes))
        return worth

    monkeypatch.setattr(scan_children.Children, "start", spy)
    monkeypatch.setattr(scan_shared, "worth_sharing", decide)
    db = database(tmp_path)
    target = tmp_path / "f"
    target.write_bytes(planted(random.Random(12), 20))  # 20 units and a part: PROBE is 2
    rest = os.path.getsize(target) - scan_shared.PROBE
    ticks = iter([0.0, 1.0])
    result = scan_shared.shared_result(db, target, 3, clock=lambda: next(ticks))
    assert result == scan_files.scan_file(db, target)
    per_byte = 1.0 / scan_shared.PROBE
    assert asked == [pytest.approx((rest * per_byte, 2 * CHUNK * per_byte, min(3, cores)))]
    assert started == ([1] if worth else [])
    asked.clear()
    scan_shared.shared_result(db, target, 1, clock=lambda: 0.0)  # -j 1: never asked
    assert asked == [] and started == ([1] if worth else [])


@pytest.mark.parametrize("death", ["exit", "kill", "garbage"])
def test_a_child_that_dies_costs_time_not_the_result(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, death: str
) -> None:
    """Its units are scanned again here: the result is still the whole file's."""
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)
    real = scan_shared._child_segments

    def dying(*args: object) -> object:
        real(*args)  # type: ignore[arg-type]  (scanned, then lost)
        if death == "exit":
            os._exit(3)
        if death == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return {"not": "segments"}

    monkeypatch.setattr(scan_shared, "_child_segments", dying)
    db = database(tmp_path)
    rng = random.Random(13)
    for trial in range(4):
        target = tmp_path / f"f{trial}"
        target.write_bytes(planted(rng, 16))
        assert scan_shared.shared_result(db, target, 3, slow_parent()) == (
            scan_files.scan_file(db, target))


@pytest.mark.parametrize("failing", ["fork", "pipe"])
def test_no_fork_or_no_pipe_means_scanning_here(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Out of processes (fork) or descriptors (pipe): the file is scanned here, the result the
    same, never a read error."""
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)

    def refused(*_args: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(scan_shared.os, failing, refused)
    db = database(tmp_path)
    target = tmp_path / "f"
    target.write_bytes(planted(random.Random(15), 16))
    assert scan_shared.shared_result(db, target, 3) == scan_files.scan_file(db, target)


@pytest.mark.parametrize("change", ["shrink", "grow", "rewrite"])
def test_a_file_that_changes_while_read(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Shrunk after the first chunk: what is left is what a whole scan of it gives. Grown: read
    to the size it had at the start. Rewritten at random meanwhile: no error, every byte of the
    original size read once."""
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)
    db = database(tmp_path)
    rng = random.Random(14)
    for trial in range(4):
        target = tmp_path / f"f{trial}"
        data = planted(rng, 20)
        target.write_bytes(data)
        calls = [0]

        def meddle(_size: int, target: Path = target, data: bytes = data,
                   calls: list[int] = calls) -> None:  # fmt: skip
            calls[0] += 1
            if change == "shrink" and calls[0] == 1:
                os.truncate(target, len(data) // 2 + 7)
            elif change == "grow" and calls[0] == 1:
                with target.open("ab") as handle:
                    handle.write(b"hv-emu-test-body" * 50)
            elif change == "rewrite":
                with target.open("r+b") as handle:
                    handle.seek(rng.randrange(len(data)))
                    handle.write(rng.choice(BODIES))
            time.sleep(0.002)

        result = scan_shared.shared_result(db, target, 3, meddle)
        assert result.problem is None
        if change == "shrink":
            assert result == scan_files.scan_file(db, target)
        elif change == "grow":
            target.write_bytes(data)
            assert result == scan_files.scan_file(db, target)
        else:
            assert result.size == len(data)


def test_a_file_that_cannot_be_read(tmp_path: Path) -> None:
    db = database(tmp_path)
    result = scan_shared.shared_result(db, tmp_path / "missing", 2)
    assert result.problem is not None and result.problem.message.startswith("cannot read:")
    os.mkfifo(tmp_path / "fifo")
    assert scan_shared.shared_result(db, tmp_path / "fifo", 2).problem == scan_files.UNSUPPORTED


#: A scan whose children are slow (two seconds before their first claim), in a process of its
#: own, from this worktree's code, with a small unit and every scan shared.
SLOW_SCAN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from hv_emu.cli import scan_shared
scan_shared.worth_sharing = lambda *_: True
scan_shared.UNIT = scan_shared.PROBE = 1 << 20
real = scan_shared._child_segments
def slow(*args):
    time.sleep(2)
    return real(*args)
scan_shared._child_segments = slow
from hv_emu.cli.main import main
sys.exit(main(["scan", "-j", "3", "--no-cache", "--db", sys.argv[2], sys.argv[3]]))
"""


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


def gone(pids: set[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        alive = set()
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rpartition(")")[2].split()[0] != "Z":
                        alive.add(pid)
            except OSError:
                pass
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "status", "group"), [
    (signal.SIGINT, 130, False), (signal.SIGINT, 130, True), (signal.SIGTERM, -15, False),
    (signal.SIGHUP, -1, False), (signal.SIGKILL, -9, False)])  # fmt: skip
def test_a_signal_ends_the_scan_and_its_children(
    tmp_path: Path, signum: int, status: int, group: bool
) -> None:
    """Ctrl-C (to the process, or to its whole group as a terminal sends it): the one
    ``interrupted`` line, 130, nothing from the children; SIGTERM, SIGHUP: the process ends by the
    signal as it would without children; SIGKILL: the orphans end before their next unit. Either
    way no child is left."""
    db = tmp_path / "s.ndb"
    db.write_bytes(SPLITTABLE)
    target = tmp_path / "big"
    target.write_bytes(os.urandom(16 << 20))
    errors = tmp_path / "stderr"
    with errors.open("wb") as err:  # a file, not a pipe: the children hold it open too
        child = subprocess.Popen([sys.executable, "-c", SLOW_SCAN, str(ROOT), str(db),
                                  str(target)], stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while not workers and time.monotonic() < deadline and child.poll() is None:
            workers = children_of(child.pid)
            time.sleep(0.01)
        assert workers, errors.read_text()
        if group:
            os.killpg(child.pid, signum)
        else:
            child.send_signal(signum)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == status, errors.read_text()
    if signum == signal.SIGINT:
        assert errors.read_text().splitlines() == ["hv-emu: interrupted"]
    # Ended and reaped before the parent ended, but an orphan of SIGKILL, which ends itself.
    assert gone(workers, 10.0 if signum == signal.SIGKILL else 0.0)
