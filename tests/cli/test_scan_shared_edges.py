"""The shared scan of one large file (``hv_emu/cli/scan_shared.py``, ``scan_children.py``) at its
edges: boundaries, (B) and (L), with no byte beyond the file's end or start (a differential,
Hypothesis-driven, against the whole scan and ``-j 1``); reads that return less than asked or
nothing; a token pipe cut to one page or already full; a signal between ``fork`` and the
bookkeeping after it; a result descriptor never closed twice; and the smallest file worth a fork.
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.cli import scan as scan_command
from hv_emu.cli import scan_children, scan_files, scan_parallel, scan_shared
from hv_emu.cli.main import main
from hv_emu.scanner.database import SignatureDatabase
from hv_emu.scanner.database_files import compile_files
from tests.rigs.scanner import GRID_CHUNK

CHUNK = GRID_CHUNK
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's fcntl(2) command number
#: Right and left boundaries of both kinds: at the file's end (or start) each holds with no byte
#: beyond it, as ClamAV's do.
BOUNDARIES = (
    b"EndB:0:*:" + b"hv-emu-end".hex().encode() + b"(B)\n"
    b"EndL:0:*:" + b"line-end".hex().encode() + b"(L)\n"
    b"StartB:0:*:(B)" + b"word-start".hex().encode() + b"\n"
    b"StartL:0:*:(L)" + b"line-start".hex().encode() + b"\n"
    b"Late:0:*:" + b"late-body-here".hex().encode() + b"\n"
)
BODIES = [b"hv-emu-end", b"line-end", b"word-start", b"line-start", b"late-body-here"]


def boundary_db(directory: Path, engine: str = "auto") -> SignatureDatabase:
    path = directory / "b.ndb"
    path.write_bytes(BOUNDARIES)
    db = compile_files([path], engine=engine)
    assert scan_parallel.splittable(db)  # boundaries are no reason to scan a file whole
    return db


def dealt(db: SignatureDatabase, target: Path, owners: list[int]) -> scan_files.FileResult:
    """The shared scan's result with unit ``u`` scanned by claimer ``owners[u % len(owners)]``."""
    fd = os.open(target, os.O_RDONLY)
    try:
        plan = scan_shared._Plan(fd, os.fstat(fd).st_size)
        segments = []
        for owner in set(owners):
            mine = iter([u for u in range(plan.units) if owners[u % len(owners)] == owner])

            def claim(mine: Iterator[int] = mine) -> int | None:
                return next(mine, None)

            segments += scan_shared._scan_claims(db, plan, claim)
        return scan_shared._joined(db, plan, scan_files.FileResult(str(target)), segments, None)
    finally:
        os.close(fd)


@pytest.mark.parametrize("engine", ["ac", "auto"])
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    units=st.integers(min_value=1, max_value=9),
    extra=st.integers(min_value=0, max_value=2 * CHUNK - 1),
    filler=st.sampled_from([b" ", b"\n", b"a", b"\x00", b"-"]),
    plants=st.lists(st.tuples(st.sampled_from(BODIES), st.sampled_from(["end", "start", "cut"]),
                              st.integers(min_value=-12, max_value=12)), max_size=4),
    owners=st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=5),
)  # fmt: skip
def test_boundaries_at_the_ends_and_cuts_are_the_whole_scans(
    tmp_path: Path, small_grid: None, engine: str, units: int, extra: int, filler: bytes,
    plants: list[tuple[bytes, str, int]], owners: list[int],
) -> None:  # fmt: skip
    """Bodies at the file's last bytes, its first bytes and around unit cuts, units dealt to
    claimers in any pattern: joined, the same names and size as one whole scan (``-j 1``)."""
    db = boundary_db(tmp_path, engine)
    data = bytearray(filler * (2 * CHUNK * units + extra))
    for body, where, shift in plants:
        at = {"end": len(data) - len(body), "start": 0,
              "cut": 2 * CHUNK * (units // 2) + shift}[where]  # fmt: skip
        at = max(0, min(at, len(data) - len(body)))
        data[at : at + len(body)] = body
    target = tmp_path / "f"
    target.write_bytes(data)
    whole = scan_files.scan_file(db, target)
    assert dealt(db, target, owners) == whole
    first = 2 * CHUNK * (units // 2)  # the last piece, alone, as the pool's -j cuts a file
    stream = db.open_stream(len(data))
    ending_in_it: list[str] = []
    for at in range(0, len(data), CHUNK):
        for match in stream.feed(bytes(data[at : at + CHUNK])):
            if match.end > first and match.name not in ending_in_it:
                ending_in_it.append(match.name)
    stream.close()
    assert scan_parallel.scan_piece(db, target, first, len(data)).names == ending_in_it


def test_the_reviewers_case_a_boundary_at_the_end_of_a_24_mib_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``EndB`` at the very end of a 24 MiB file: ``-j 2`` (shared with a child, at the real
    grid) prints what ``-j 1`` prints, FOUND."""
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)
    db = tmp_path / "b.ndb"
    db.write_bytes(BOUNDARIES)
    target = tmp_path / "big"
    target.write_bytes(bytes(24 * 1024 * 1024 - 10) + b"hv-emu-end")
    outputs = []
    for jobs in ("1", "2"):
        status = main(["scan", "--no-cache", "--db", str(db), "-j", jobs, str(target)])
        outputs.append((status, capsys.readouterr().out))
    assert outputs == [(1, f"{target}: EndB FOUND\n")] * 2


def short_reads(monkeypatch: pytest.MonkeyPatch, shorten: object) -> None:
    real = os.pread

    def pread(fd: int, size: int, offset: int) -> bytes:
        return shorten(real, fd, size, offset)  # type: ignore[operator,no-any-return]

    monkeypatch.setattr(os, "pread", pread)


@pytest.mark.parametrize("owners", [[0], [0, 1], [0, 1, 2, 2]])
def test_a_read_that_returns_nothing_ends_the_file_there(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, owners: list[int]
) -> None:
    """The read of unit 5's first chunk returns nothing (the file truncated there at that moment,
    then written again): the result stops there, as a whole scan's does at its first empty read:
    no later unit, no late match, whoever scans the units."""
    db = boundary_db(tmp_path)
    data = bytearray(random.Random(20).randbytes(CHUNK * 40))
    data[99:110] = b"\nline-start"  # before the gap: found
    data[-30:-16] = b"late-body-here"  # after it: never read
    target = tmp_path / "f"
    target.write_bytes(data)
    gap = 5 * 2 * CHUNK
    seen = [False]

    def once_empty(real: object, fd: int, size: int, offset: int) -> bytes:
        if offset == gap and size == CHUNK and not seen[0]:
            seen[0] = True
            return b""
        return real(fd, size, offset)  # type: ignore[operator,no-any-return]

    short_reads(monkeypatch, once_empty)
    result = dealt(db, target, owners)
    assert seen[0]
    assert (result.size, result.problem) == (gap, None)
    assert "StartL" in result.names and "Late" not in result.names
    target.write_bytes(data[:gap])
    assert result.names == scan_files.scan_file(db, target).names


@pytest.mark.parametrize("owners", [[0], [0, 1, 2]])
def test_reads_that_return_less_than_asked_are_read_on(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, owners: list[int]
) -> None:
    """Every ``pread`` returns at most 7 bytes (FUSE, NFS): no unit, lead or tail is lost; the
    result is the whole scan's."""
    db = boundary_db(tmp_path)
    rng = random.Random(21)
    short_reads(monkeypatch, lambda real, fd, size, offset: real(fd, min(size, 7), offset))
    for trial in range(6):
        data = bytearray(rng.randbytes(CHUNK * 30 + rng.randrange(CHUNK)))
        for _ in range(4):
            body = rng.choice(BODIES)
            at = rng.choice([len(data) - len(body), 0, 2 * CHUNK * rng.randrange(1, 15) - 5])
            data[at : at + len(body)] = body
        target = tmp_path / f"f{trial}"
        target.write_bytes(data)
        assert dealt(db, target, owners) == scan_files.scan_file(db, target)


def test_the_tokens_fit_one_page_and_pipe_buf() -> None:
    tokens = scan_shared.MAX_UNITS * scan_children.TOKEN
    assert tokens <= select.PIPE_BUF and tokens <= 4096


@pytest.mark.parametrize("room", ["one page", "full"])
def test_a_small_or_full_token_pipe_never_blocks(
    tmp_path: Path, small_grid: None, monkeypatch: pytest.MonkeyPatch, room: str
) -> None:
    """Pipes cut to one page (a user over ``pipe-user-pages-soft``) take the most tokens there can
    be; a pipe that cannot take them at once means scanning here. Either way the whole scan's
    result, never a wait (an alarm ends the test if it ever blocks)."""
    monkeypatch.setattr(scan_shared, "worth_sharing", lambda *_: True)
    real = os.pipe

    def small_pipe() -> tuple[int, int]:
        read, write = real()
        fcntl.fcntl(write, F_SETPIPE_SZ, 4096)
        if room == "full":
            os.write(write, bytes(4096 - 8))  # two tokens' room left
        return read, write

    monkeypatch.setattr(os, "pipe", small_pipe)
    db = boundary_db(tmp_path)
    target = tmp_path / "f"
    data = bytearray(random.Random(22).randbytes(2 * CHUNK * scan_shared.MAX_UNITS))
    data[-10:] = b"hv-emu-end"
    target.write_bytes(data)
    fd = os.open(target, os.O_RDONLY)
    assert scan_shared._Plan(fd, len(data)).units == scan_shared.MAX_UNITS  # every token
    os.close(fd)

    def blocked(_signum: int, _frame: FrameType | None) -> None:
        raise AssertionError("the token pipe blocked")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(60)
    try:
        result = scan_shared.shared_result(db, target, 3)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result == scan_files.scan_file(db, target) and "EndB" in result.names


def test_a_signal_between_fork_and_the_bookkeeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C lands in both processes right after ``fork`` returns: the child never runs the
    parent's handler (it ends by the signal), and the parent's KeyboardInterrupt comes only once
    the child is noted, so ``end`` reaps it."""
    marks = tmp_path / "handled"
    test_pid = os.getpid()
    forked: list[int] = []
    real_fork = os.fork

    def handler(_signum: int, _frame: FrameType | None) -> None:
        with marks.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        if os.getpid() != test_pid:
            os._exit(7)  # the bug: a child running the parent's handler (never pytest's code)
        raise KeyboardInterrupt

    def fork_then_interrupted() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        os.kill(os.getpid(), signal.SIGINT)
        return pid

    previous = signal.signal(signal.SIGINT, handler)
    monkeypatch.setattr(os, "fork", fork_then_interrupted)
    children = scan_children.Children()
    try:
        with pytest.raises(KeyboardInterrupt):
            children.start(range(3), 1, lambda _tokens, _parent: [])
        assert children.pids == forked and len(forked) == 1
    finally:
        signal.signal(signal.SIGINT, previous)
        children.end()
    assert marks.read_text() == f"{test_pid}\n"
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0], os.WNOHANG)  # reaped: nothing left behind


def test_a_result_pipe_is_closed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C right after ``collect`` closed a child's result pipe: ``end`` does not close that
    descriptor again (by then another file may have its number) and raises nothing."""
    children = scan_children.Children()
    children.start(range(2), 1, lambda tokens, _parent: [os.read(tokens, 8)])
    closed = children.results[0]
    real_close = os.close

    def interrupted(fd: int) -> None:
        real_close(fd)
        if fd == closed:
            raise KeyboardInterrupt  # as a signal handled just after close returned

    monkeypatch.setattr(os, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        children.collect()
    monkeypatch.setattr(os, "close", real_close)
    reused = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT)
    try:
        assert reused == closed  # the lowest free number: the one collect closed
        children.end()
        os.fstat(reused)  # still open: end() left it alone
    finally:
        os.close(reused)
    assert children.pids == [] and children.results == []


def test_no_file_below_shared_from_is_ever_worth_a_fork() -> None:
    """Whatever the rate and the processes, the rest of a ``SHARED_FROM``-byte file after the
    probe saves less than ``MARGIN`` units' wait; one unit more, at a slow rate, is worth it."""
    rest = scan_command.SHARED_FROM - scan_shared.PROBE
    for per_byte in (1e-12, 1e-9, 1e-6, 1e-3):
        for processes in (2, 3, 4, 64, 10**6):
            assert not scan_shared.worth_sharing(rest * per_byte, scan_shared.UNIT * per_byte,
                                                 processes)  # fmt: skip
    assert scan_shared.worth_sharing((rest + scan_shared.UNIT) * 1e-6,
                                     scan_shared.UNIT * 1e-6, 64)  # fmt: skip


def test_a_piece_that_ends_short_ends_the_file_for_the_pool(
    tmp_path: Path, small_grid: None
) -> None:
    """The pool's pieces (several files, ``-j``): a piece that read fewer bytes than it spans
    (the file shrank while it was read, then grew again before the next piece) ends the file
    there, as a whole scan stops at its first short read: no later piece's match."""
    db = boundary_db(tmp_path)
    data = bytearray(random.Random(23).randbytes(CHUNK * 12))
    data[-30:-16] = b"late-body-here"
    target = tmp_path / "f"
    cuts = [(0, 4 * CHUNK), (4 * CHUNK, 8 * CHUNK), (8 * CHUNK, len(data))]
    pieces = [scan_parallel.Piece(target, first, stop) for first, stop in cuts]
    target.write_bytes(data[: 5 * CHUNK])  # shrunk while the first two pieces are read
    parts = [scan_parallel.scan_piece(db, target, first, stop) for first, stop in cuts[:2]]
    target.write_bytes(data)  # and whole again for the last
    parts.append(scan_parallel.scan_piece(db, target, *cuts[2]))
    assert "Late" in parts[2].names
    joined = scan_parallel._joined(target, parts, pieces)
    assert (joined.size, joined.names, joined.problem) == (5 * CHUNK, [], None)
