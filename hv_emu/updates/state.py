"""The installed update, persisted across runs (``hv-emu run --state DIR``).

Models: the hypervisor's private, crash-safe record of what it last installed: the database body
and a small ``state.json`` naming its version, kind, hash, signer and the trusted time floor.
Without it a restart would forget the installed version, and a replayed older update would roll
the database back (the go-tuf GHSA-66x3-6cw3-v5gj bug class).

Follows: the classic atomic-replace recipe. The body goes to a new content-addressed file
(``db-<sha256>.<kind>``) written to a temporary name, fsynced and renamed; then ``state.json`` is
written to a temporary file, fsynced and ``os.replace``d over the old one, and the directory is
fsynced; only then are superseded files removed. ``state.json`` is the single commit point: before
its rename the old state is intact, after it the new one is complete. ``docs/UPDATE-FORMAT.md``
gives the argument step by step.

Leaves out: locking against two hypervisors sharing one directory, history of older versions.

Guest controls: indirectly, the body and the header fields of the last verified update. The
directory itself is the user's: a corrupt or inconsistent state is a ``ConfigError``, never a
silent fall back to "nothing installed" (which would reopen rollback).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hv_emu.errors import ConfigError, HostError
from hv_emu.updates.format import ContentType
from hv_emu.updates.verify import VerifiedUpdate

#: The commit point: the file that names the installed database.
STATE_FILE = "state.json"
_DB_PREFIX = "db-"
_TMP_SUFFIX = ".tmp"
_KINDS = tuple(member.kind for member in ContentType)


@dataclass(frozen=True)
class InstalledState:
    """What is installed: enough to refuse rollback and to check the stored body."""

    #: Version of the installed database; an update must be strictly greater.
    db_version: int
    #: ``"db"`` or ``"ndb"``.
    kind: str
    #: SHA-256 of the body, lowercase hex (also names the body's file).
    db_sha256: str
    #: Key id of the signer, hex.
    key_id: str
    #: The update's ``issued_at`` (Unix seconds).
    issued_at: int
    #: The latest time the hypervisor has signed proof of; expiry is judged against at least it.
    time_floor: int
    #: Host time of installation (Unix seconds), for people reading the file.
    installed_at: int

    @classmethod
    def record(cls, update: VerifiedUpdate, *, now: int, time_floor: int) -> InstalledState:
        """The state after installing ``update`` at host time ``now`` over a trusted time floor
        of ``time_floor``; the floor never goes down."""
        header = update.header
        floor = max(header.issued_at, time_floor)
        return cls(
            db_version=header.db_version,
            kind=header.kind,
            db_sha256=header.body_sha256.hex(),
            key_id=header.key_id.hex(),
            issued_at=header.issued_at,
            time_floor=floor,
            installed_at=now,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = STATE_FILE) -> InstalledState:
        """Decode and check ``state.json``; ``ConfigError`` naming ``source`` if anything is off."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object")
        names = [f.name for f in fields(cls)]
        if sorted(data) != sorted(names):
            raise ConfigError(f"{source}: expected exactly the keys {', '.join(names)}")
        for name in ("db_version", "issued_at", "time_floor", "installed_at"):
            value = data[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{source}: {name} must be a non-negative integer")
        for name, length in (("db_sha256", 64), ("key_id", 16)):
            value = data[name]
            if not (isinstance(value, str) and len(value) == length and _is_hex(value)):
                raise ConfigError(f"{source}: {name} must be {length} lowercase hex digits")
        if data["kind"] not in _KINDS:
            raise ConfigError(f"{source}: kind must be one of {', '.join(_KINDS)}")
        return cls(**data)

    @property
    def db_file(self) -> str:
        """The name of the body's content-addressed file inside the state directory."""
        return f"{_DB_PREFIX}{self.db_sha256}.{self.kind}"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _fsync_dir(path: Path) -> None:
    """Make a rename or creation in ``path`` durable (the directory entry is data too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``directory/name`` atomically: temp file, fsync, rename, fsync dir."""
    tmp = directory / (name + _TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)
    _fsync_dir(directory)


class StateDir:
    """A directory holding ``state.json`` and the installed database body."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def load(self) -> tuple[InstalledState, bytes] | None:
        """The installed state and body, or ``None`` if nothing was ever installed here."""
        state_path = self.path / STATE_FILE
        try:
            text = state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{state_path}: cannot read ({exc})") from None
        state = InstalledState.from_json(text, str(state_path))
        db_path = self.path / state.db_file
        try:
            body = db_path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{state_path}: installed database {db_path.name} is unreadable ({exc.strerror});"
                " refusing to forget the installed version"
            ) from None
        if hashlib.sha256(body).hexdigest() != state.db_sha256:
            raise ConfigError(f"{db_path}: SHA-256 does not match {STATE_FILE}; state is corrupt")
        return state, body

    def save(self, state: InstalledState, body: bytes) -> None:
        """Install ``body`` as described by ``state``; a crash leaves the old or the new state."""
        if hashlib.sha256(body).hexdigest() != state.db_sha256:
            raise HostError("InstalledState.db_sha256 does not match the body being saved")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            # 1. The new body under its own name: the old state.json does not point at it, so
            #    a crash here leaves at worst an unreferenced file.
            db_path = self.path / state.db_file
            if not (
                db_path.exists()
                and hashlib.sha256(db_path.read_bytes()).hexdigest() == state.db_sha256
            ):
                _write_durably(self.path, state.db_file, body)
            # 2. The commit point: one rename switches state.json from the old body to the new.
            _write_durably(self.path, STATE_FILE, state.to_json().encode("utf-8"))
            # 3. Nothing points at the old body any more.
            self._remove_superseded(keep=state.db_file)
        except OSError as exc:
            raise ConfigError(f"state directory {self.path}: cannot save ({exc})") from None

    def _remove_superseded(self, keep: str) -> None:
        for entry in self.path.iterdir():
            stale_db = entry.name.startswith(_DB_PREFIX) and entry.name != keep
            if stale_db or entry.name.endswith(_TMP_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
