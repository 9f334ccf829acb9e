"""The update service: one pipeline from signed bytes to the signature database in force.

Models: what the hypervisor does with an update, whichever way it arrived (a guest's VMCALL or the
network), in two halves. On the caller's path (the vCPU thread, for a VMCALL), here: verify
(``verify.py``), check that the database text parses (``scanner.database_check``: the answer
and the count, without building a Python object per plain line; the lines with wildcards are
parsed, and kept for the worker), persist it with its version counter (``state.py``), answer
``OK``. Off that path, on one compile worker thread (``compile_worker.py``, which
``UpdateService`` is): parse, compile, swap in, in one or two stages. Between acceptance and
activation the database in force keeps scanning every write: the guest is never unguarded and
never paused for a compile. Any failure before acceptance leaves the database in force in force
and is answered with a return code from ``abi.Rc``.

Accepted is not active: ``status`` reports both (``get_status``'s ``db_version``,
``db_active_version`` and ``db_state``), and ``submit(..., wait=True)`` (the VMCALL under
``--sync-updates``) answers only once the worker is done with the version it accepted.

Follows: ``docs/UPDATE-FORMAT.md`` (acceptance and activation), clamd's reload model (build the new
engine beside the old, then switch), and the usual install order ("write new -> verify ->
switch pointer -> persist counter") with persisting moved to acceptance, before the switch:
once the guest was told ``OK`` a restart can never roll back.

Leaves out: deltas against the installed version, rate limiting; the compile itself
(``compile_worker.py``).

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

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.errors import DatabaseError, StorageError, UpdateRejected
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.scanner.bulk import gc_paused
from hv_emu.scanner.database import ActiveDatabase
from hv_emu.scanner.database_check import check_steps
from hv_emu.updates.compile_worker import CompileJob, CompileWorker
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


class UpdateService(CompileWorker):
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
        super().__init__(database, events)
        self.trust = trust
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
        # One submission at a time: the vCPU thread (VMCALL) and the network I/O thread may both
        # submit, and the version check, the persisted counter and the acceptance must not
        # interleave.
        self._submit_lock = threading.Lock()

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
        self._schedule(CompileJob(update.body, count, kind, header.db_version, source_name,
                                   sha256, steps))  # fmt: skip
        return Rc.OK

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
