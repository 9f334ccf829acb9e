"""``hv-emu scan -j``'s one large file: scanned by this process, shared with forked children only
when the file's own first megabytes say it pays.

Models: what a scanner does with one large file and spare cores, decided from evidence: the file is
``UNIT``-sized units on the ``CHUNK`` read grid; this process scans them in order from the start,
timing itself, and once it has scanned ``PROBE`` bytes it knows the rate of this database on this
content (``shared_result``). Only if sharing the rest among the processes ``-j`` allows would save
at least ``MARGIN`` times what it costs (``worth_sharing``: ``FORK_COST``, and waiting for the last
unit, whose time the rate gives) does it fork children (plain ``os.fork``, with the compiled
database already loaded: no ``multiprocessing``), and hand the remaining units out through a pipe
of claim tokens (each a unit's number; a read of 4 bytes from a pipe is one claim, never split or
given twice), taking them itself as they do: a process that gets no CPU claims nothing, so a busy
machine costs the fork and at most one unit's wait, not half the file. A process scans consecutive
units it claims as one stream (``_stretch``); a stretch that starts after the file's start begins
its stream ``history + widest`` bytes early and one that ends before the file's end runs
``history`` bytes on, keeping exactly the matches that end inside it, as
``scan_parallel.scan_piece`` does. Children send their stretches' results back through a pipe of
their own when they have no unit left; the results are joined in the file's order, so the output is
the same as ``-j 1``'s, line for line.

Follows: docs/SIGNATURES.md, "Start-up, the cache and -j" (the decision, its numbers and why),
docs/PERFORMANCE.md (the measurements behind ``FORK_COST``).

Leaves out: several files (``scan_parallel.parallel_results``'s pool) and databases that cannot
be split (``scan_parallel.splittable``): those never come here.

User controls: the file (its bytes, its size, and changing or shrinking while it is read: every
read is a ``pread`` at a fixed offset of the one descriptor opened at the start, up to the size
it had then, and a short read ends the file there, as for a whole scan); ``-j`` caps the
processes (this one included). A child that dies or sends what does not decode is ignored and
the units it claimed are scanned here; Ctrl-C, SIGTERM and SIGHUP end the children before this
process ends as the signal says (``children_end_with_us``), and a child whose parent is gone
(``SIGKILL``) ends before its next unit.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from hv_emu.cli.scan_files import CHUNK, UNSUPPORTED, FileResult, Problem
from hv_emu.cli.scan_parallel import MAX_JOBS_PER_CORE, cores
from hv_emu.scanner.database import SignatureDatabase

#: A claim: this many bytes of the file (a multiple of ``CHUNK``), so a process that lost the
#: race for a core makes the others wait for one unit at most (about 2-6 ms on one core).
UNIT = 4 * CHUNK
#: At most this many units (their tokens must fit a pipe's 64 KiB at once): a larger file has
#: larger units.
MAX_UNITS = 4096
#: Bytes scanned here before the rate is trusted (the first two units).
PROBE = 2 * UNIT
#: What starting children costs, in seconds: ``os.fork`` of a scanning process took 1.3-3.9 ms
#: (measured, docs/PERFORMANCE.md), and each child then touches its copied pages.
FORK_COST = 0.005
#: Children are forked only if sharing saves at least this many times its cost.
MARGIN = 2.0
_TOKEN = 4  # bytes of one claim token (a unit's number, little-endian)


class Segment:
    """What one stretch of consecutive units found: units ``[first, last]``, the bytes read, the
    names in the order the stream reported them, and the read error that ended it, if any."""

    __slots__ = ("first", "last", "size", "names", "problem")  # noqa: RUF023 (__init__'s order)

    def __init__(self, first: int, last: int, size: int, names: list[str],
                 problem: str | None) -> None:  # fmt: skip
        self.first = first
        self.last = last
        self.size = size
        self.names = names
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return Segment, (self.first, self.last, self.size, self.names, self.problem)


class _Plan:
    """The file's one descriptor, its size at open and its unit size."""

    __slots__ = ("fd", "limit", "unit", "units")

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        unit = max(UNIT, -(-limit // MAX_UNITS))
        self.unit = -(-unit // CHUNK) * CHUNK
        self.units = -(-limit // self.unit)


def _stretch(
    db: SignatureDatabase, plan: _Plan, first: int, claim: Callable[[], int | None],
    on_chunk: Callable[[int], None] | None = None,
) -> tuple[Segment, int | None]:  # fmt: skip
    """Scan unit ``first`` and the consecutive units ``claim`` gives after it as one stream; return
    what it found and the first claim that did not follow on (None: no unit left)."""
    program = db.program
    start = first * plan.unit
    stop = min(start + plan.unit, plan.limit)
    origin = max(0, start - program.history - program.widest)
    segment = Segment(first, first, 0, [], None)
    names = segment.names
    following: int | None = None
    stream = db.open_stream(None)  # no EOF-n or absolute offsets: see scan_parallel.splittable
    try:
        position = origin
        if origin < start:
            lead = os.pread(plan.fd, start - origin, origin)
            stream.feed(lead)  # every match it reports ends at or before start: not ours
            position += len(lead)
        ended = position < start  # the file shrank before this unit
        while not ended:
            while position < stop:
                chunk = os.pread(plan.fd, min(CHUNK, stop - position), position)
                if not chunk:  # shrank meanwhile: the file ends here, as a whole scan's read
                    ended = True
                    break
                segment.size += len(chunk)
                for match in stream.feed(chunk):
                    if origin + match.end > start and match.name not in names:
                        names.append(match.name)
                position += len(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            if ended or stop >= plan.limit:
                break
            following = claim()
            if following != segment.last + 1:
                break
            segment.last = following
            following = None
            stop = min(stop + plan.unit, plan.limit)
        if not ended and stop < plan.limit and program.history:
            tail = os.pread(plan.fd, program.history, stop)  # decides right-anchored bytes
            for match in stream.feed(tail):
                if start < origin + match.end <= stop and match.name not in names:
                    names.append(match.name)
    except OSError as error:
        segment.problem = f"cannot read: {error.strerror}"
    finally:
        stream.close()
    return segment, following


def _scan_claims(
    db: SignatureDatabase, plan: _Plan, claim: Callable[[], int | None],
    on_chunk: Callable[[int], None] | None = None,
) -> list[Segment]:  # fmt: skip
    """Every unit ``claim`` gives, as stretches; a read error ends this process's share."""
    segments = []
    unit = claim()
    while unit is not None:
        segment, unit = _stretch(db, plan, unit, claim, on_chunk)
        segments.append(segment)
        if segment.problem is not None:
            break
    return segments


def _token_claim(tokens: int, parent: int | None = None) -> Callable[[], int | None]:
    """Claims read from the token pipe; a child (``parent`` given) ends if its parent is gone."""

    def claim() -> int | None:
        if parent is not None and os.getppid() != parent:
            os._exit(1)  # an orphan: the parent was killed, nobody wants its result
        token = os.read(tokens, _TOKEN)
        return int.from_bytes(token, "little") if len(token) == _TOKEN else None

    return claim


def _child(db: SignatureDatabase, plan: _Plan, tokens: int, results: int, parent: int) -> None:
    """A forked child's whole life: claim, scan, send the segments, end (never returns)."""
    status = 1
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) != signal.SIG_IGN:  # an ignored one stays ignored
                signal.signal(signum, signal.SIG_DFL)  # ended by the parent or the terminal
        data = pickle.dumps(_child_segments(db, plan, tokens, parent))
        view = memoryview(data)
        while view:
            view = view[os.write(results, view) :]
        status = 0
    finally:
        os._exit(status)  # never the parent's cleanup, nor its buffered output


def _child_segments(db: SignatureDatabase, plan: _Plan, tokens: int, parent: int
                    ) -> list[Segment]:  # fmt: skip
    return _scan_claims(db, plan, _token_claim(tokens, parent))


class _Children:
    """The forked children and the pipes they read claims from and send results through."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.results: list[int] = []
        self.tokens: int | None = None

    def start(self, db: SignatureDatabase, plan: _Plan, first: int, count: int) -> int:
        """Put units ``first`` onwards up for claims and fork ``count`` children; the token
        pipe's read end."""
        read, write = os.pipe()
        self.tokens = read
        try:
            os.write(write, b"".join(unit.to_bytes(_TOKEN, "little")
                                     for unit in range(first, plan.units)))  # fmt: skip
        finally:
            os.close(write)  # before any fork: the last claim then reads end of file
        parent = os.getpid()
        for _ in range(count):
            try:
                result_read, result_write = os.pipe()
            except OSError:  # out of descriptors: fewer children, the claims still work
                break
            try:
                pid = os.fork()
            except OSError:  # out of processes or memory: likewise
                os.close(result_read)
                os.close(result_write)
                break
            if pid == 0:
                os.close(result_read)
                for fd in self.results:
                    os.close(fd)
                _child(db, plan, read, result_write, parent)
            os.close(result_write)
            self.pids.append(pid)
            self.results.append(result_read)
        return read

    def collect(self) -> list[Segment]:
        """Each child's segments, once it has ended; a child that died or sent what does not
        decode gives none (its units are scanned again)."""
        segments: list[Segment] = []
        while self.pids:
            pid, fd = self.pids[0], self.results[0]
            parts = []
            while chunk := os.read(fd, 1 << 16):
                parts.append(chunk)
            os.close(fd)
            del self.results[0]
            _, status = os.waitpid(pid, 0)
            del self.pids[0]
            if os.waitstatus_to_exitcode(status) != 0:
                continue
            try:
                received = pickle.loads(b"".join(parts))
            except Exception:  # a child's bytes cut short: ignored
                continue
            if isinstance(received, list):
                segments += [s for s in received if isinstance(s, Segment)]
        return segments

    def end(self) -> None:
        """Kill and reap every child still there, close every pipe (idempotent)."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for fd in [*self.results, *([] if self.tokens is None else [self.tokens])]:
            os.close(fd)
        self.pids, self.results, self.tokens = [], [], None


def worth_sharing(left: float, unit: float, processes: int) -> bool:
    """Whether ``left`` seconds of scanning (at the rate measured) shared among ``processes``
    (this one included) save ``MARGIN`` times what it costs: ``FORK_COST`` and, at the end, the
    wait for the unit another process took last (``unit`` seconds at that rate). On a busy
    machine the children may get no core: they then claim little, and the loss is that cost."""
    saved = left * (1 - 1 / processes)
    return processes > 1 and saved >= MARGIN * (FORK_COST + unit)


def shared_result(
    db: SignatureDatabase, path: Path, jobs: int,
    on_chunk: Callable[[int], None] | None = None, clock: Callable[[], float] = time.perf_counter,
) -> FileResult:  # fmt: skip
    """``scan_file``'s result for one file of a ``splittable`` database, scanned here and, when
    the rate measured on its first ``PROBE`` bytes says sharing the rest is worth it
    (``worth_sharing``), by up to ``jobs - 1`` forked children as well."""
    result = FileResult(str(path))
    jobs = min(jobs, MAX_JOBS_PER_CORE * cores())  # as scan_parallel caps -j
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        result.problem = Problem(f"cannot read: {error.strerror}")
        return result
    children = _Children()
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            result.problem = UNSUPPORTED
            return result
        plan = _Plan(fd, info.st_size)
        started = clock()
        next_unit = 0
        decided = jobs <= 1
        shared: Callable[[], int | None] | None = None

        def claim() -> int | None:
            nonlocal next_unit, decided, shared
            if shared is not None:
                return shared()
            if next_unit >= plan.units:
                return None
            scanned = next_unit * plan.unit
            if not decided and scanned >= PROBE:
                decided = True  # once: the rest is either shared or scanned here
                per_byte = (clock() - started) / scanned
                count = min(jobs - 1, plan.units - next_unit - 1)
                left = (plan.limit - scanned) * per_byte
                if worth_sharing(left, plan.unit * per_byte, count + 1):
                    # Fork: they claim what is left, and so does this process.
                    try:
                        shared = _token_claim(children.start(db, plan, next_unit, count))
                    except OSError:  # no pipe for the claims: scanned here alone
                        children.end()
                    else:
                        return shared()
            next_unit += 1
            return next_unit - 1

        with children_end_with_us(children):
            segments = _scan_claims(db, plan, claim, on_chunk)
            theirs = children.collect()
            if on_chunk is not None:
                on_chunk(sum(segment.size for segment in theirs))
            return _joined(db, plan, result, segments + theirs, on_chunk)
    except OSError as error:
        result.problem = Problem(f"cannot read: {error.strerror}")
        return result
    finally:
        children.end()
        os.close(fd)


def _joined(db: SignatureDatabase, plan: _Plan, result: FileResult, segments: list[Segment],
            on_chunk: Callable[[int], None] | None) -> FileResult:  # fmt: skip
    """The file's result from its segments in the file's order; units nobody reported (a child
    that died) are scanned here first. A read error ends the file there, as it would end a whole
    scan."""
    # Only segments that lie in the file count (a bounded walk whatever a child sent).
    by_first = {s.first: s for s in segments if 0 <= s.first <= s.last < plan.units}
    unit = 0
    while unit < plan.units:
        segment = by_first.get(unit)
        if segment is None:  # claimed by a child that died: scanned again, here
            segment, _ = _stretch(db, plan, unit, _missing_after(unit, by_first), on_chunk)
        result.size += segment.size
        result.names += [name for name in segment.names if name not in result.names]
        if segment.problem is not None:
            result.problem = Problem(segment.problem)
            break
        unit = segment.last + 1
    return result


def _missing_after(unit: int, by_first: dict[int, Segment]) -> Callable[[], int | None]:
    """Claims of the units after ``unit`` that no segment starts, while they follow on."""
    last = [unit]

    def claim() -> int | None:
        following = last[0] + 1
        if following in by_first:
            return None
        last[0] = following
        return following

    return claim


@contextlib.contextmanager
def children_end_with_us(children: _Children) -> Iterator[None]:
    """While children may run: SIGTERM and SIGHUP (when they would end the process, their default)
    raise ``KeyboardInterrupt`` here, as Ctrl-C does, so the children are killed and reaped
    (``_Children.end``) before this process ends: by the signal, as it would have without
    children, or for Ctrl-C with ``cli/main.py``'s one line and status 130."""
    caught: list[int] = []

    def raised(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, raised)
    try:
        yield
    except KeyboardInterrupt:
        children.end()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous = {}
        if caught:
            os.kill(os.getpid(), caught[0])  # its default: this process ends as it would have
        raise  # Ctrl-C (or something else meanwhile took the signal)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
