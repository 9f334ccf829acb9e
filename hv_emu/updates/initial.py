"""The signature database a VMM starts with: the persisted one, else ``--db``, else none.

Models: the start-up half of the update pipeline's state. A database installed by a signed
update and persisted in the state directory (``state.py``) stays in force across restarts, with
its anti-rollback time floor; ``--db`` only seeds an empty state directory (or a run without
one) as version 0, and is named in a notice when the persisted database wins; with neither, the
empty database scans (nothing is found).

Follows: docs/UPDATE-FORMAT.md (the state directory, the time floor) and docs/SIGNATURES.md.

Leaves out: merging ``--db`` into a persisted database; choosing between two persisted versions.

Guest controls: nothing here (the state directory holds what earlier guests' accepted, signed
updates installed; the user names ``--db``). A persisted database that no longer parses is a
``ConfigError``, one line, not a traceback.
"""

from __future__ import annotations

from pathlib import Path

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.database import SignatureDatabase, compile_database
from hv_emu.scanner.signatures import load_database_file
from hv_emu.updates.state import StateDir


def initial_database(state: StateDir | None, db_file: Path | None,
                     notices: list[str]) -> tuple[SignatureDatabase, int]:  # fmt: skip
    """The persisted database and its time floor if there is one, else ``db_file`` as version 0,
    else empty (time floor 0); a ``--db`` that is not loaded is explained in ``notices``."""
    if state is not None:
        loaded = state.load()
        if loaded is not None:
            installed, body = loaded
            try:
                db = compile_database(
                    body, kind=installed.kind, version=installed.db_version,
                    source=f"{state.path} (v{installed.db_version})",
                )  # fmt: skip
            except DatabaseError as bad:
                raise ConfigError(f"persisted database does not parse: {bad}") from None
            if db_file is not None:
                notices.append(
                    f"--db {db_file} is not loaded: {state.path} holds database "
                    f"v{installed.db_version}, installed by a signed update, which stays in "
                    "force (--db seeds an empty state directory only)"
                )  # fmt: skip
            return db, installed.time_floor
    if db_file is not None:
        data, kind = load_database_file(db_file)
        try:
            return compile_database(data, kind=kind, version=0, source=str(db_file)), 0
        except DatabaseError as bad:
            raise ConfigError(str(bad)) from None
    return SignatureDatabase.empty(), 0
