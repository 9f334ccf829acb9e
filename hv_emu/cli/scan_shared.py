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
``scan_parallel.scan_piece`` does; each stream is told the length to the file's end, so a right
boundary (``(B)``, ``(L)``) with no byte after it is decided there as in a whole scan.
Children send their stretches' results back through a pipe of their own when they have no unit
left (``scan_children.py``: the forks, the pipes, the signals); the results are joined in the
file's order, so the output is the same as ``-j 1``'s, line for line.

Follows: docs/SIGNATURES.md, "Start-up, the cache and -j" (the decision, its numbers and why),
docs/PERFORMANCE.md (the measurements behind ``FORK_COST``).

Leaves out: several files (``scan_parallel.parallel_results``'s pool) and databases that cannot
be split (``scan_parallel.splittable``): those never come here.

User controls: the file (its bytes, its size, and changing or shrinking while it is read: every
read is a ``pread`` at a fixed offset of the one descriptor opened at the start, up to the size
it had then; one that returns fewer bytes is read on until they come or one returns none, and
then the file ends there, later units ignored, as for a whole scan); ``-j`` caps the
processes (this one included). A child that dies or sends what does not decode is ignored and
the units it claimed are scanned here; Ctrl-C, SIGTERM and SIGHUP end the children before this
process ends as the signal says (``children_end_with_us``), and a child whose parent is gone
(``SIGKILL``) ends before its next unit.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hv_emu.cli.scan_children import Children, children_end_with_us, token_claim
from hv_emu.cli.scan_files import CHUNK, UNSUPPORTED, FileResult, Problem
from hv_emu.cli.scan_parallel import MAX_JOBS_PER_CORE, cores
from hv_emu.scanner.database import SignatureDatabase

#: A claim: this many bytes of the file (a multiple of ``CHUNK``), so a process that lost the
#: race for a core makes the others wait for one unit at most (about 2-6 ms on one core).
UNIT = 4 * CHUNK
#: At most this many units (their tokens, ``TOKEN`` bytes each, are written before any process
#: reads them: 4,096 bytes fit the one page a pipe may be cut to, pipe(7)); a larger file has
#: larger units.
MAX_UNITS = 1024
#: Bytes scanned here before the rate is trusted (the first two units).
PROBE = 2 * UNIT
#: What starting children costs, in seconds: ``os.fork`` of a scanning process took 1.3-3.9 ms
#: (measured, docs/PERFORMANCE.md), and each child then touches its copied pages.
FORK_COST = 0.005
#: Children are forked only if sharing saves at least this many times its cost.
MARGIN = 2.0


class Segment:
    """What one stretch of consecutive units found: units ``[first, last]``, the bytes read, the
    names in the order the stream reported them, the read error that ended it, if any, and
    whether the file ended inside it (a short read: it shrank), which ends the file there."""

    __slots__ = ("first", "last", "size", "names", "problem", "ended")  # noqa: RUF023

    def __init__(self, first: int, last: int, size: int, names: list[str],
                 problem: str | None, ended: bool = False) -> None:  # fmt: skip
        self.first = first
        self.last = last
        self.size = size
        self.names = names
        self.problem = problem
        self.ended = ended

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return Segment, (self.first, self.last, self.size, self.names, self.problem, self.ended)


class _Plan:
    """The file's one descriptor, its size at open and its unit size."""

    __slots__ = ("fd", "limit", "unit", "units")

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        unit = max(UNIT, -(-limit // MAX_UNITS))
        self.unit = -(-unit // CHUNK) * CHUNK
        self.units = -(-limit // self.unit)


def _read(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset``, or fewer only where the file ends (a ``pread`` may return
    fewer on FUSE or NFS: read on until all came or one returned nothing)."""
    data = os.pread(fd, size, offset)
    while 0 < len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


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
    # The length to the file's end (its size at open, as a whole scan's stream has it): a
    # right boundary, (B) or (L), with no byte after it is decided there. No signature has an
    # EOF-n or absolute offset (scan_parallel.splittable), so nothing else depends on it.
    stream = db.open_stream(plan.limit - origin)
    try:
        position = origin
        if origin < start:
            lead = _read(plan.fd, start - origin, origin)
            stream.feed(lead)  # every match it reports ends at or before start: not ours
            position += len(lead)
        segment.ended = position < start  # the file shrank before this unit
        while not segment.ended:
            while position < stop:
                want = min(CHUNK, stop - position)
                chunk = _read(plan.fd, want, position)
                segment.size += len(chunk)
                for match in stream.feed(chunk):
                    if origin + match.end > start and match.name not in names:
                        names.append(match.name)
                position += len(chunk)
                if on_chunk is not None and chunk:
                    on_chunk(len(chunk))
                if len(chunk) < want:  # shrank meanwhile: the file ends here, as a whole scan's
                    segment.ended = True
                    break
            if segment.ended or stop >= plan.limit:
                break
            following = claim()
            if following != segment.last + 1:
                break
            segment.last = following
            following = None
            stop = min(stop + plan.unit, plan.limit)
        if not segment.ended and stop < plan.limit and program.history:
            # Decides right-anchored bytes; never past the size at open, as a whole scan.
            tail = _read(plan.fd, min(program.history, plan.limit - stop), stop)
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
    """Every unit ``claim`` gives, as stretches; a read error or the file's end (it shrank) ends
    this process's share."""
    segments = []
    unit = claim()
    while unit is not None:
        segment, unit = _stretch(db, plan, unit, claim, on_chunk)
        segments.append(segment)
        if segment.problem is not None or segment.ended:
            break
    return segments


def _child_segments(db: SignatureDatabase, plan: _Plan, tokens: int, parent: int
                    ) -> list[Segment]:  # fmt: skip
    """A child's work: every unit it claims, as stretches (``scan_children.Children.start``)."""
    return _scan_claims(db, plan, token_claim(tokens, parent))


def _work(db: SignatureDatabase, plan: _Plan, tokens: int, parent: int) -> list[Segment]:
    return _child_segments(db, plan, tokens, parent)  # looked up when the child runs


def worth_sharing(left: float, unit: float, processes: int) -> bool:
    """Whether ``left`` seconds of scanning (at the rate measured) shared among ``processes``
    (this one included) save ``MARGIN`` times what it costs: ``FORK_COST`` and, at the end, the
    wait for the unit another process took last (``unit`` seconds at that rate). On a busy
    machine the children may get no core: they then claim little, and the loss is that cost.
    ``processes`` is what can run at once (``shared_result`` gives at most ``cores()``)."""
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
    children = Children()
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
                if worth_sharing(left, plan.unit * per_byte, min(count + 1, cores())):
                    # Fork: they claim what is left, and so does this process.
                    tokens = range(next_unit, plan.units)
                    try:
                        shared = token_claim(children.start(tokens, count, partial(
                            _work, db, plan)))  # fmt: skip
                    except OSError:  # no pipe for the claims, or it is full: scanned here
                        children.end()
                    else:
                        return shared()
            next_unit += 1
            return next_unit - 1

        with children_end_with_us(children):
            segments = _scan_claims(db, plan, claim, on_chunk)
            theirs = [s for s in children.collect() if isinstance(s, Segment)]
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
    that died) are scanned here first. A read error, or the file's end met early (it shrank: a
    short read), ends the file there, as it would end a whole scan."""
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
        if segment.ended:
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
