"""The update service: one pipeline from signed bytes to the signature database in force.

Models: what the hypervisor does with an update, whichever way it arrived (a guest's VMCALL or the
network), in two halves. On the caller's path (the vCPU thread, for a VMCALL): verify
(``verify.py``), parse the database text (``scanner.signatures``), persist it with its version
counter (``state.py``), answer ``OK``. Off that path, on a background thread: compile the literal
finder (``scanner.database.compile_signatures``; a 100,000-signature Hyperscan build takes
seconds) and swap the result in atomically, logging ``database_active``; a large database is
compiled first in shards on every core, then once more as one database, swapped in under the
running streams (``database_recompiled``). Between acceptance and
activation the database in force keeps scanning every write: the guest is never unguarded and
never paused for a compile. Any failure before acceptance leaves the database in force in force
and is answered with a return code from ``abi.Rc``.

Follows: ``docs/UPDATE-FORMAT.md`` (acceptance and activation), clamd's reload model (build the new
engine beside the old, then switch), and the usual install order ("write new -> verify ->
switch pointer -> persist counter") with persisting moved to acceptance, before the switch:
once the guest was told ``OK`` a restart can never roll back.

Leaves out: cancelling a superseded compile (it runs to the end and is dropped: only a newer
version than the one in force is ever swapped in), deltas against the installed version, rate
limiting.

Failures of the host: an update the state directory cannot take (a full disk, a refused entry) is
answered ``STORAGE_FAILED`` with nothing changed; a problem after ``state.json`` was committed (a
superseded file that cannot be removed) is the event ``state_cleanup_failed`` and the update goes
on to activation: the guest's answer and the running database always agree with the disk.

Guest controls: the bundle and signature bytes, and ``source`` only as far as the caller says.
Parse errors (the only errors the database text can cause) are found synchronously, so the guest
still gets ``MALFORMED``; the compile that follows works on an already-bounded, parsed database.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

from hv_emu.errors import DatabaseError, StorageError, UpdateRejected
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.database import (
    HYPERSCAN_AVAILABLE,
    ActiveDatabase,
    SignatureDatabase,
    compile_signatures,
    recompile,
)
from hv_emu.scanner.signatures import Signature, parse_database
from hv_emu.updates.state import InstalledState, StateDir
from hv_emu.updates.verify import TrustStore, verify_bundle

#: From this many signatures, an update is activated in two stages: first with its Hyperscan
#: literal finder compiled as one shard per core at once (in force sooner, scanning about 40%
#: slower), then recompiled as one database and swapped in under the running streams. Below it
#: one database compiles in about a second (5,000 signatures: 0.3 s).
SHARDED_FROM = 20_000


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
    ) -> None:
        self.trust = trust
        self.database = database
        self.events = events
        self.state = state
        self.time_floor = time_floor
        self.max_size = max_size
        self.clock = clock
        self.accepted = 0
        self.rejected = 0
        # The newest accepted version: rollback checks use it even before it is active.
        self._accepted_version = database.current.version
        self._swap_lock = threading.Lock()  # orders "is it newer?" with the swap
        # One submission at a time: the vCPU thread (VMCALL) and the network I/O thread may both
        # submit, and the version check, the persisted counter and the acceptance must not
        # interleave.
        self._submit_lock = threading.Lock()
        self._compiles: list[threading.Thread] = []

    @property
    def installed_version(self) -> int:
        """The newest accepted (and persisted) version, active or still compiling."""
        return self._accepted_version

    def submit(self, bundle: bytes, signature: bytes, source: str) -> Rc:
        """Install ``bundle`` if it verifies; the return code for the guest either way."""
        with self._submit_lock:
            return self._submit(bundle, signature, source)

    def _submit(self, bundle: bytes, signature: bytes, source: str) -> Rc:
        now = int(self.clock())
        try:
            update = verify_bundle(
                bundle,
                signature,
                self.trust,
                installed_version=self.installed_version,
                now=now,
                time_floor=self.time_floor,
                max_size=self.max_size,
            )
            kind = update.header.content_type.kind
            source_name = f"update v{update.header.db_version}"
            signatures = parse_database(update.body, kind=kind, source=source_name)
        except UpdateRejected as rejected:
            return self.reject(source, Rc(rejected.code), rejected.reason)
        except DatabaseError as bad:
            return self.reject(source, Rc.MALFORMED, str(bad))

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
        self._accepted_version = header.db_version
        self.accepted += 1
        self.events.emit(
            "update_accepted",
            source=source,
            db_version=header.db_version,
            previous_version=previous,
            signatures=len(signatures),
            sha256=sha256,
            key_id=header.key_id.hex(),
        )
        for problem in problems:
            self.events.emit("state_cleanup_failed", db_version=header.db_version,
                             problem=problem)  # fmt: skip
        compile_job = threading.Thread(
            target=self._activate,
            args=(signatures, kind, header.db_version, source_name, sha256),
            name=f"compile-db-v{header.db_version}",
            # Not a daemon: the interpreter waits for it at exit rather than tearing down
            # Python under a thread that is inside Hyperscan's compiler (a crash at exit).
            daemon=False,
        )
        self._compiles.append(compile_job)
        compile_job.start()
        return Rc.OK

    def _activate(
        self, signatures: Sequence[Signature], kind: str, version: int, source: str, sha256: str
    ) -> None:
        """Background thread: compile the accepted database, then put it in force."""
        started = time.perf_counter()
        shards = self._shards(len(signatures))
        try:
            if shards > 1:
                db = compile_signatures(signatures, kind, version, source, sha256, shards=shards)
            else:
                db = compile_signatures(signatures, kind, version, source, sha256)
        except DatabaseError as refused:  # the literal finder refused a parsed set
            self.events.emit("database_failed", db_version=version, reason=str(refused),
                             active_version=self.database.current.version)  # fmt: skip
            return
        seconds = time.perf_counter() - started
        with self._swap_lock:
            if version <= self.database.current.version:
                return  # superseded by a newer update that compiled first
            old = self.database.swap(db)
        self._announce(db, old, seconds)
        if db.shards > 1:
            self._recompile(db)

    @staticmethod
    def _shards(signatures: int) -> int:
        """Hyperscan shards for the first stage: one per core this process may run on, for a
        large database when Hyperscan is there; otherwise 1 (one stage)."""
        if signatures < SHARDED_FROM or not HYPERSCAN_AVAILABLE:
            return 1
        return min(2, len(os.sched_getaffinity(0)))

    def _recompile(self, sharded: SignatureDatabase) -> None:
        """Second stage: the database in force, compiled as one Hyperscan database (full scan
        speed), swapped in unless a newer version came into force meanwhile. Streams go on across
        the swap (``ScanStream.switch_literals``); if it fails, the sharded build stays."""
        started = time.perf_counter()
        try:
            whole = recompile(sharded)
        except DatabaseError as refused:
            self.events.emit("database_failed", db_version=sharded.version,
                             reason=f"{refused} (single-database recompile; the sharded build "
                                    "stays in force)",
                             active_version=self.database.current.version)  # fmt: skip
            return
        with self._swap_lock:
            if self.database.current is not sharded:
                return  # a newer version is in force
            self.database.swap(whole)
        self.events.emit("database_recompiled", db_version=whole.version, engine=whole.engine,
                         shards=whole.shards,
                         compile_seconds=round(time.perf_counter() - started, 6))  # fmt: skip

    def _announce(self, db: SignatureDatabase, old: SignatureDatabase, seconds: float) -> None:
        self.events.emit(
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
        """Wait until every accepted update is compiled (and active, unless superseded or
        refused); False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for compile_job in list(self._compiles):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            compile_job.join(left)
            if compile_job.is_alive():
                return False
            self._compiles.remove(compile_job)
        return True

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
        )
        return code
