"""The update service: one pipeline from signed bytes to the signature database in force.

Models: what the hypervisor does with an update, whichever way it arrived (a guest's VMCALL or the
network): verify (``verify.py``), parse and compile the database (``scanner``), persist it with its
version counter (``state.py``), then swap it in atomically. Any failure leaves the database in force
in force, and is answered with a return code from ``abi.Rc``.

Follows: ``docs/UPDATE-FORMAT.md``; the install order of /work/shared/notes/update-protocol.md §6
("write new -> verify -> switch pointer -> persist counter"), with persisting moved before the
switch so a crash can never leave a running database newer than the persisted counter allows to roll
back.

Leaves out: compiling off the vCPU path (the guest's VMCALL waits for the compile; fine for
pyahocorasick at rfxn scale, about 20 ms), deltas against the installed version, rate limiting.

Guest controls: the bundle and signature bytes, and ``source`` only as far as the caller says.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hv_emu.abi import Rc
from hv_emu.errors import DatabaseError, UpdateRejected
from hv_emu.events import EventLog
from hv_emu.scanner.database import ActiveDatabase, compile_database
from hv_emu.updates.state import InstalledState, StateDir
from hv_emu.updates.verify import TrustStore, verify_bundle


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

    @property
    def installed_version(self) -> int:
        return self.database.current.version

    def submit(self, bundle: bytes, signature: bytes, source: str) -> Rc:
        """Install ``bundle`` if it verifies; the return code for the guest either way."""
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
            db = compile_database(
                update.body,
                kind=update.header.content_type.kind,
                version=update.header.db_version,
                source=f"update v{update.header.db_version}",
            )
        except UpdateRejected as rejected:
            return self.reject(source, Rc(rejected.code), rejected.reason)
        except DatabaseError as bad:
            return self.reject(source, Rc.MALFORMED, str(bad))

        header = update.header
        self.time_floor = max(self.time_floor, header.issued_at)
        if self.state is not None:
            # Persist first: once the new version is on disk, a restart can never go back.
            self.state.save(
                InstalledState(
                    db_version=header.db_version,
                    kind=header.content_type.kind,
                    db_sha256=db.sha256,
                    key_id=header.key_id.hex(),
                    issued_at=header.issued_at,
                    time_floor=self.time_floor,
                    installed_at=now,
                ),
                update.body,
            )
        old = self.database.swap(db)
        self.accepted += 1
        self.events.emit(
            "update_accepted",
            source=source,
            db_version=db.version,
            previous_version=old.version,
            signatures=db.count,
            sha256=db.sha256,
            key_id=header.key_id.hex(),
        )
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
        )
        return code
