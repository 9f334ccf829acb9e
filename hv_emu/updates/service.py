"""The update service: one pipeline from signed bytes to the signature database in force.

Models: what the hypervisor does with an update, whichever way it arrived (a guest's VMCALL or the
network), in two halves. On the caller's path (the vCPU thread, for a VMCALL): verify
(``verify.py``), check that the database text parses (``scanner.database_check``: the answer
and the count, without building a Python object per plain line; the lines with wildcards are
parsed, and kept for the worker), persist it with its version counter (``state.py``), answer
``OK``. Off that path, on one compile worker thread: read the text's plain lines into the
program's input (``scanner.bulk``: a name and bytes per line), compile the literal finder
(``scanner.database.compile_signatures``) and swap the result in atomically, logging
``database_active``. A large database (``FIRST_STAGE_FROM`` signatures) comes into force first
with pyahocorasick's automaton (built in about a second for 100,000 literals, where Hyperscan
takes about four), then is recompiled with Hyperscan and swapped in under the running streams
(``database_recompiled``): both find exactly the same matches, so every signature of the new
database applies from the first swap. Between acceptance and activation the database in force
keeps scanning every write: the guest is never unguarded and never paused for a compile. Any
failure before acceptance leaves the database in force in force and is answered with a return
code from ``abi.Rc``.

One compile at a time (docs/SIGNATURES.md, "Updates: acceptance, then activation"): an accepted
database waits in a one-entry slot for the worker; a newer acceptance replaces the one waiting
(dropped before it starts, ``database_superseded``) and cuts the second stage of the one running.
A compile that has finished a stage is still put in force when it is newer than the database in
force: so every compile the worker starts ends with progress, and a stream of updates cannot keep
the database in force from ever moving. Memory and the guest's pause stay those of one compile,
however many updates arrive back to back.

Accepted is not active: ``status`` reports both (``get_status``'s ``db_version``,
``db_active_version`` and ``db_state``), and ``submit(..., wait=True)`` (the VMCALL under
``--sync-updates``) answers only once the worker is done with the version it accepted.

Follows: ``docs/UPDATE-FORMAT.md`` (acceptance and activation), clamd's reload model (build the new
engine beside the old, then switch), and the usual install order ("write new -> verify ->
switch pointer -> persist counter") with persisting moved to acceptance, before the switch:
once the guest was told ``OK`` a restart can never roll back.

Leaves out: interrupting a compile inside a stage (Hyperscan's compiler cannot be stopped; the
worker checks between stages), deltas against the installed version, rate limiting.

The version policy lives here too, one for every path (docs/UPDATE-FORMAT.md, "Versions"): an
update must be newer than the newest accepted version, at most ``MAX_VERSION_JUMP`` newer, and not
above ``MAX_DB_VERSION``. ``acceptable_versions`` is that window; the verifier refuses a version
outside it as ``STALE_VERSION`` before any crypto, and the network receiver drops packets outside
it with the same window, so the two paths cannot disagree.

Failures of the host: an update the state directory cannot take (a full disk, a refused entry) is
answered ``STORAGE_FAILED`` with nothing changed; a problem after ``state.json`` was committed (a
superseded file that cannot be removed) is the event ``state_cleanup_failed`` and the update goes
on to activation: the guest's answer and the running database always agree with the disk.

Guest controls: the bundle and signature bytes, and ``source`` only as far as the caller says.
Parse errors (the only errors the database text can cause) are found synchronously, so the guest
still gets ``MALFORMED``; the parse and compile that follow work on an already-checked, bounded
text (a parse error there, a bug, would be ``database_failed``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.errors import DatabaseError, StorageError, UpdateRejected
from hv_emu.events import EventLog, JsonValue
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.bulk import entries_of, gc_paused
from hv_emu.scanner.database import (
    HYPERSCAN_AVAILABLE,
    ActiveDatabase,
    SignatureDatabase,
    compile_signatures,
    recompile,
)
from hv_emu.scanner.database_check import Step, check_steps
from hv_emu.updates.format import MAX_DB_VERSION
from hv_emu.updates.state import InstalledState, StateDir
from hv_emu.updates.verify import TrustStore, verify_bundle

#: The largest step forward one update may take over the newest accepted version: a signed
#: update (a stolen key, a signer's slip) cannot push the version out of reach of every later one.
MAX_VERSION_JUMP = 1_000_000


def acceptable_versions(installed: int, max_jump: int = MAX_VERSION_JUMP) -> range:
    """The versions an update may carry when ``installed`` is the newest accepted one: newer than
    it, at most ``max_jump`` newer, and at most ``MAX_DB_VERSION`` (empty above that)."""
    return range(installed + 1, min(installed + max_jump, MAX_DB_VERSION) + 1)


#: From this many signatures (when Hyperscan is there), an update is activated in two stages:
#: first with the pyahocorasick automaton of its literals (100,000: about 1 s to build, against
#: about 4 s for Hyperscan on one core, 1.7 s in two shards on two free cores; it scans at tens of
#: MB/s), then recompiled with Hyperscan as one database and swapped in under the running streams
#: (docs/SIGNATURES.md). Below it Hyperscan compiles in under a second (5,000 signatures: 0.3 s).
FIRST_STAGE_FROM = 20_000
#: The literal finder of a first stage (``scanner.database.ENGINES``).
FIRST_STAGE_ENGINE = "ac"


#: ``DatabaseStatus.state``: how far the newest accepted database got (docs/ABI.md, ``get_status``).
DB_STATES = ("active", "compiling", "recompiling", "failed")


@dataclass(frozen=True)
class DatabaseStatus:
    """The accepted database and the one in force, read at one moment (``get_status``'s lines).

    ``version``, ``signatures`` and ``sha256`` describe the newest accepted (and persisted)
    database; ``active_version`` is the database that scans disk writes now. ``state``:
    ``active`` (the accepted one scans, at full speed), ``compiling`` (it waits for or is in the
    compile worker; ``active_version`` scans meanwhile), ``recompiling`` (it scans in its first
    stage, the automaton, while its second stage compiles) or ``failed`` (its compile was
    refused; the older ``active_version`` stays in force).
    """

    version: int
    signatures: int
    sha256: str
    active_version: int
    state: str


@dataclass(frozen=True)
class _CompileJob:
    """An accepted database (its text, checked to parse) waiting for (or in) the compile worker,
    which parses it into signatures and compiles them."""

    body: bytes
    count: int  # the signatures it parses to
    kind: str
    version: int
    source: str
    sha256: str
    steps: list[Step]  # the check's walk: its runs, and the Signature of every other line


class UpdateService:
    """Verifies, installs and persists signature updates; counts what it accepted and refused."""

    def __init__(
        self,
        trust: TrustStore,
        database: ActiveDatabase,
        events: EventLog,
        *,
        state: StateDir | None = None,
        time_floor: int = 0,
        max_size: int,
        clock: Callable[[], float] = time.time,
        max_jump: int = MAX_VERSION_JUMP,
    ) -> None:
        self.trust = trust
        self.database = database
        self.events = events
        self.state = state
        self.time_floor = time_floor
        self.max_size = max_size
        self.clock = clock
        self.max_jump = max_jump
        self.accepted = 0
        self.rejected = 0
        # The newest accepted version: rollback checks use it even before it is active; with
        # its signature count and hash, for get_status.
        initial = database.current
        self._accepted_version = initial.version
        self._accepted_count = initial.count
        self._accepted_sha256 = initial.sha256
        self._failed_version = -1  # the newest version whose compile was refused
        self._done_version = initial.version  # the newest version the worker is done with
        self._staged_version = -1  # the newest version put in force by a first stage
        self._swap_lock = threading.Lock()  # orders "is it newer?" with the swap
        # One submission at a time: the vCPU thread (VMCALL) and the network I/O thread may both
        # submit, and the version check, the persisted counter and the acceptance must not
        # interleave.
        self._submit_lock = threading.Lock()
        # The compile worker: one thread at most, started when a database is accepted and gone
        # when nothing waits; ``_waiting`` is the one-entry slot it takes the next job from.
        self._jobs = threading.Condition()
        self._waiting: _CompileJob | None = None
        self._worker: threading.Thread | None = None

    @property
    def installed_version(self) -> int:
        """The newest accepted (and persisted) version, active or still compiling."""
        return self._accepted_version

    @property
    def acceptable_versions(self) -> range:
        """The versions an update may carry now, whichever path it comes by (the version policy:
        ``acceptable_versions`` of the newest accepted version)."""
        return acceptable_versions(self._accepted_version, self.max_jump)

    def status(self) -> DatabaseStatus:
        """The accepted database, the one in force, and how far the accepted one got."""
        active = self.database.current
        with self._jobs:
            version, count, sha256 = (self._accepted_version, self._accepted_count,
                                      self._accepted_sha256)  # fmt: skip
            failed, done = self._failed_version, self._done_version
            staged = self._staged_version
        if active.version >= version:
            # A first stage the worker is not done with: its second stage is compiling (a newer
            # acceptance would make ``version`` the newer one). Told by the version the worker is
            # done with, not by the worker thread still being there: once ``wait_done`` returns
            # (``--sync-updates``) this reads ``active`` even before the worker is gone.
            state = "recompiling" if staged == active.version and done < version else "active"
        elif failed == version:
            state = "failed"
        else:
            state = "compiling"
        return DatabaseStatus(version, count, sha256, active.version, state)

    def submit(self, bundle: bytes, signature: bytes, source: str, *, wait: bool = False) -> Rc:
        """Install ``bundle`` if it verifies; the return code for the guest either way.

        With ``wait`` (``hv-emu run --sync-updates``, for the VMCALL path), an accepted update
        returns only once the compile worker is done with it: active, at full speed, or refused
        (``database_failed``; still ``OK``: it was accepted and persisted)."""
        with self._submit_lock:
            rc = self._submit(bundle, signature, source)
            version = self._accepted_version
        if rc == Rc.OK and wait:
            self.wait_done(version)
        return rc

    def _submit(self, bundle: bytes, signature: bytes, source: str) -> Rc:
        now = int(self.clock())
        try:
            update = verify_bundle(
                bundle,
                signature,
                self.trust,
                versions=self.acceptable_versions,
                now=now,
                time_floor=self.time_floor,
                max_size=self.max_size,
            )
            kind = update.header.content_type.kind
            source_name = f"update v{update.header.db_version}"
        except UpdateRejected as rejected:
            return self.reject(source, Rc(rejected.code), rejected.reason)
        try:
            # Whether it parses, and to how many signatures, without building them: the parse
            # that builds them is the worker's (docs/SIGNATURES.md, the 100k-signature pause).
            with gc_paused():  # the lines with wildcards build objects (scanner/bulk.py)
                count, steps = check_steps(update.body, kind=kind, source=source_name)
        except DatabaseError as bad:
            return self.reject(source, Rc.MALFORMED, str(bad))
        except Exception as bug:  # a parser bug: still MALFORMED, never a crash
            # docs/ABI.md promises MALFORMED for a database text that does not parse; an
            # unexpected exception from the parser must not end the run (a VMCALL) or kill the
            # network's I/O thread. The event names the exception type, for the report.
            return self.reject(source, Rc.MALFORMED,
                               f"the database text could not be parsed: "
                               f"{type(bug).__name__}: {bug}")  # fmt: skip

        header = update.header
        installed = InstalledState.record(update, now=now, time_floor=self.time_floor)
        sha256 = installed.db_sha256  # check_body proved it is the body's hash
        problems: list[str] = []
        if self.state is not None:
            # Persist at acceptance: once the guest is told OK, a restart can never go back. A
            # failure before the commit point changes nothing and is the guest's answer; what
            # goes wrong after it (the new state is in force) is logged below, never raised.
            try:
                problems = self.state.save(installed, update.body)
            except StorageError as failed:
                return self.reject(source, Rc.STORAGE_FAILED, str(failed))
        self.time_floor = installed.time_floor
        previous = self._accepted_version
        with self._jobs:  # the three together, for status()
            self._accepted_version = header.db_version
            self._accepted_count = count
            self._accepted_sha256 = sha256
        self.accepted += 1
        self.events.emit(
            "update_accepted",
            source=source,
            db_version=header.db_version,
            previous_version=previous,
            active_version=self.database.current.version,
            signatures=count,
            sha256=sha256,
            key_id=header.key_id.hex(),
        )
        for problem in problems:
            self.events.emit("state_cleanup_failed", db_version=header.db_version,
                             problem=problem)  # fmt: skip
        self._schedule(_CompileJob(update.body, count, kind, header.db_version, source_name,
                                   sha256, steps))  # fmt: skip
        return Rc.OK

    # ------------------------------------------------------------------ the compile worker
    def _schedule(self, job: _CompileJob) -> None:
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

    def _take(self) -> _CompileJob | None:
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

    def _activate(self, job: _CompileJob) -> None:
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

    def reject(self, source: str, code: Rc, reason: str) -> Rc:
        """Count and log a refused update (also for checks the caller made before ``submit``)."""
        self.rejected += 1
        self.events.emit(
            "update_rejected",
            source=source,
            code=int(code),
            error=code.name,
            reason=reason,
            db_version=self.installed_version,
            active_version=self.database.current.version,
        )
        return code
