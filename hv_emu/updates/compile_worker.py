"""The compile worker: an accepted database, from its checked text to the database in force.

Models: the half of the update service (``service.py``) that runs off the caller's path, on one
compile worker thread: read the text's plain lines into the program's input (``scanner.bulk``: a
name and bytes per line), compile the literal finder (``scanner.database.compile_signatures``)
and swap the result in atomically, logging ``database_active``. A large database
(``FIRST_STAGE_FROM`` signatures) comes into force first with pyahocorasick's automaton (built in
about a second for 100,000 literals, where Hyperscan takes about four), then is recompiled with
Hyperscan and swapped in under the running streams (``database_recompiled``): both find exactly
the same matches, so every signature of the new database applies from the first swap.

One compile at a time (docs/SIGNATURES.md, "Updates: acceptance, then activation"): an accepted
database waits in a one-entry slot for the worker; a newer acceptance replaces the one waiting
(dropped before it starts, ``database_superseded``) and cuts the second stage of the one running.
A compile that has finished a stage is still put in force when it is newer than the database in
force: so every compile the worker starts ends with progress, and a stream of updates cannot keep
the database in force from ever moving. Memory and the guest's pause stay those of one compile,
however many updates arrive back to back. ``wait_active`` and ``wait_done`` wait for it.

Follows: clamd's reload model (build the new engine beside the old, then switch).

Leaves out: interrupting a compile inside a stage (Hyperscan's compiler cannot be stopped; the
worker checks between stages); acceptance itself (verify, check, persist, answer: ``service.py``,
whose ``UpdateService`` is this worker).

Guest controls: nothing directly: the worker compiles only a text that acceptance verified and
checked to parse, of a bounded size (a parse error here, a bug, is ``database_failed``). Any
failure of the host (an exception, ``MemoryError``) is ``database_failed`` and the worker goes on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

from hv_emu.errors import DatabaseError
from hv_emu.events import EventLog, JsonValue
from hv_emu.scanner.bulk import entries_of, gc_paused
from hv_emu.scanner.database import (
    HYPERSCAN_AVAILABLE,
    ActiveDatabase,
    SignatureDatabase,
    compile_signatures,
    recompile,
)
from hv_emu.scanner.database_check import Step

#: From this many signatures (when Hyperscan is there), an update is activated in two stages:
#: first with the pyahocorasick automaton of its literals (100,000: about 1 s to build, against
#: about 4 s for Hyperscan on one core, 1.7 s in two shards on two free cores; it scans at tens of
#: MB/s), then recompiled with Hyperscan as one database and swapped in under the running streams
#: (docs/SIGNATURES.md). Below it Hyperscan compiles in under a second (5,000 signatures: 0.3 s).
FIRST_STAGE_FROM = 20_000
#: The literal finder of a first stage (``scanner.database.ENGINES``).
FIRST_STAGE_ENGINE = "ac"


@dataclass(frozen=True)
class CompileJob:
    """An accepted database (its text, checked to parse) waiting for (or in) the compile worker,
    which parses it into signatures and compiles them."""

    body: bytes
    count: int  # the signatures it parses to
    kind: str
    version: int
    source: str
    sha256: str
    steps: list[Step]  # the check's walk: its runs, and the Signature of every other line


class CompileWorker:
    """The compile worker thread of an update service, and the versions it got to."""

    def __init__(self, database: ActiveDatabase, events: EventLog) -> None:
        self.database = database
        self.events = events
        initial = database.current
        self._failed_version = -1  # the newest version whose compile was refused
        self._done_version = initial.version  # the newest version the worker is done with
        self._staged_version = -1  # the newest version put in force by a first stage
        self._swap_lock = threading.Lock()  # orders "is it newer?" with the swap
        # The compile worker: one thread at most, started when a database is accepted and gone
        # when nothing waits; ``_waiting`` is the one-entry slot it takes the next job from.
        # ``_jobs`` also guards the acceptance's fields that ``status`` reads together.
        self._jobs = threading.Condition()
        self._waiting: CompileJob | None = None
        self._worker: threading.Thread | None = None

    def _schedule(self, job: CompileJob) -> None:
        """Put ``job`` in the slot (dropping the one waiting there) and make sure a worker runs."""
        with self._jobs:
            dropped, self._waiting = self._waiting, job
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="compile-db",
                    # Not a daemon: the interpreter waits for it at exit rather than tearing down
                    # Python under a thread that is inside Hyperscan's compiler (a crash at exit).
                    daemon=False,
                )  # fmt: skip
                self._worker.start()
        if dropped is not None:
            self.events.emit("database_superseded", db_version=dropped.version,
                             by_version=job.version, stage="queued")  # fmt: skip

    def _take(self) -> CompileJob | None:
        """The next job for the worker; None (and the worker is gone) when nothing waits."""
        with self._jobs:
            job, self._waiting = self._waiting, None
            if job is None:
                self._worker = None
                self._jobs.notify_all()
            return job

    def _newer_waiting(self) -> int | None:
        """The version waiting for the worker, if any (it is always newer than the running one)."""
        with self._jobs:
            return None if self._waiting is None else self._waiting.version

    def _work(self) -> None:
        """The worker thread: compile what waits in the slot, one job after the other.

        Nothing a job does can end the thread with the service thinking it still runs: every job
        moves ``_done_version`` (so ``wait_done`` returns), and however the thread ends it clears
        ``_worker`` and wakes the waiters (so ``_schedule`` starts a new one and ``wait_active``
        returns)."""
        me = threading.current_thread()
        try:
            job = self._take()
            while job is not None:
                try:
                    self._activate(job)
                except Exception as error:  # a host failure (e.g. MemoryError) must not stop it
                    self._failed(job.version, f"compile failed on the host: {error!r}")
                finally:
                    with self._jobs:  # the worker is done with it (and with every older version)
                        self._done_version = max(self._done_version, job.version)
                        self._jobs.notify_all()
                job = self._take()
        finally:
            with self._jobs:  # an ending _take did this already; anything else did not
                if self._worker is me:
                    self._worker = None
                self._jobs.notify_all()

    def _emit(self, event: str, **fields: JsonValue) -> None:
        """An event from the compile worker: a failure to log it (a bug of a sink the event log
        did not absorb) is not allowed to end the worker, which would leave every later update
        ``compiling``."""
        with contextlib.suppress(Exception):  # the event is lost; the worker goes on
            self.events.emit(event, **fields)

    def _failed(self, version: int, reason: str) -> None:
        """An accepted version's compile was refused: it never comes into force."""
        with self._jobs:
            self._failed_version = max(self._failed_version, version)
        self._emit("database_failed", db_version=version, reason=reason,
                   active_version=self.database.current.version)  # fmt: skip

    def _activate(self, job: CompileJob) -> None:
        """Compile one accepted database, then put it in force (unless something newer is)."""
        started = time.perf_counter()
        version = job.version
        first = self._first_engine(job.count)
        try:
            # The text was checked at acceptance, and its other lines parsed: the runs' lines are
            # read from the text, and with the others they make ``job.count`` entries.
            with gc_paused():  # 3/4 of the build's CPU time otherwise (scanner/bulk.py)
                entries = entries_of(job.body, job.kind, job.steps, job.source)
                args = (entries, job.kind, version, job.source, job.sha256)
                if first is None:
                    db = compile_signatures(*args)
                else:
                    db = compile_signatures(*args, first)
        except DatabaseError as refused:  # the literal finder refused a parsed set
            self._failed(version, str(refused))
            return
        seconds = time.perf_counter() - started
        with self._swap_lock:
            if version <= self.database.current.version:
                return  # never an older database over a newer one
            old = self.database.swap(db)
            if first is not None:
                with self._jobs:
                    self._staged_version = version
        # A stage boundary: this build is in force (it is newer than what scanned until now).
        self._announce(db, old, seconds)
        if first is not None:
            newer = self._newer_waiting()
            if newer is not None:  # the worker's time goes to the newer database instead
                self._emit("database_superseded", db_version=version, by_version=newer,
                           stage="recompile")  # fmt: skip
                return
            self._recompile(db)

    @staticmethod
    def _first_engine(signatures: int) -> str | None:
        """The literal finder of a first stage for a database of ``signatures``: the automaton,
        for a large database when Hyperscan is there to recompile it; None: one stage."""
        if signatures < FIRST_STAGE_FROM or not HYPERSCAN_AVAILABLE:
            return None
        return FIRST_STAGE_ENGINE

    def _recompile(self, first: SignatureDatabase) -> None:
        """Second stage: the database in force, compiled as one Hyperscan database (full scan
        speed), swapped in unless a newer version came into force meanwhile. Streams go on across
        the swap (``ScanStream.switch_literals``); if it fails, the first stage stays."""
        started = time.perf_counter()
        try:
            whole = recompile(first)
        except DatabaseError as refused:
            self._emit("database_failed", db_version=first.version,
                       reason=f"{refused} (single-database recompile; the first stage "
                              "stays in force)",
                       active_version=self.database.current.version)  # fmt: skip
            return
        with self._swap_lock:
            if self.database.current is not first:
                return  # a newer version is in force
            self.database.swap(whole)
        self._emit("database_recompiled", db_version=whole.version, engine=whole.engine,
                   shards=whole.shards,
                   compile_seconds=round(time.perf_counter() - started, 6))  # fmt: skip

    def _announce(self, db: SignatureDatabase, old: SignatureDatabase, seconds: float) -> None:
        self._emit(
            "database_active",
            db_version=db.version,
            previous_version=old.version,
            signatures=db.count,
            literals=len(db.program.literals),
            engine=db.engine,
            shards=db.shards,
            compile_seconds=round(seconds, 6),
        )

    def wait_active(self, timeout: float | None = None) -> bool:
        """Wait until the compile worker is idle: the newest accepted update is active (unless its
        compile was refused); False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._jobs:
                worker = self._worker
            if worker is None:
                return True
            # Joined, not waited for on the condition: a worker thread that is gone without
            # saying so (which ``_work`` rules out) cannot hang the end of a run either.
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                return False
            with self._jobs:
                if self._worker is worker:
                    self._worker = None
                    self._jobs.notify_all()

    def wait_done(self, version: int, timeout: float | None = None) -> bool:
        """Wait until the compile worker is done with ``version``: it is active at full speed
        (both stages of a large database), or its compile was refused, or a newer version was
        compiled in its place. Unlike ``wait_active``, updates accepted later (from the network)
        do not prolong the wait. False if ``timeout`` seconds passed first."""
        with self._jobs:
            return self._jobs.wait_for(
                lambda: self._done_version >= version or self._worker is None, timeout)
