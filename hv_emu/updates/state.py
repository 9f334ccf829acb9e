"""The installed update, persisted across runs (``hv-emu run --state DIR``).

Models: the hypervisor's private, crash-safe record of what it last installed: the database body
and a small ``state.json`` naming its version, kind, hash, signer and the trusted time floor.
Without it a restart would forget the installed version, and a replayed older update would roll
the database back (the go-tuf GHSA-66x3-6cw3-v5gj bug class).

Follows: the classic atomic-replace recipe, done relative to one directory file descriptor. The
body goes to a new content-addressed file (``db-<sha256>.<kind>``): written to a temporary with an
unpredictable name created with ``O_CREAT|O_EXCL|O_NOFOLLOW``, fsynced, renamed, the directory
fsynced; then ``state.json`` the same way. Its rename is the single commit point: before it the
old state is intact (and a failure is a ``StorageError``, with what this save created removed),
after it the new one is complete. Only then is the superseded body (the one the previous
``state.json`` named) removed; a failure there is reported back, never raised.
``docs/UPDATE-FORMAT.md`` ("The state directory") gives the promises and the argument.

Leaves out: locking against two hypervisors sharing one directory, history of older versions,
removing temporaries a crashed earlier run left (their names are random: they cannot be told from
a user's files, so they stay).

Guest controls: indirectly, the body and the header fields of the last verified update. The
directory itself is the user's, and anyone who can write to it is not trusted to steer our writes:
an entry we read (``state.json``, the database it names) must be a regular file, never a symbolic
link or a FIFO (refused, one line); entries we did not write are never followed, opened for
writing, replaced or removed. A corrupt or inconsistent state is a ``ConfigError``, never a silent
fall back to "nothing installed" (which would reopen rollback).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hv_emu.errors import ConfigError, HostError, StorageError
from hv_emu.hostile_dir import RefusedEntry, create_exclusive, read_regular, temporary_name
from hv_emu.hypercalls.abi import DEFAULT_MAX_UPDATE
from hv_emu.updates.format import MAX_DB_VERSION, ContentType
from hv_emu.updates.verify import VerifiedUpdate

#: The commit point: the file that names the installed database.
STATE_FILE = "state.json"
#: Largest ``state.json`` read (it is about 300 bytes): a planted huge file is refused unread.
MAX_STATE_SIZE = 64 * 1024
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
        if data["db_version"] > MAX_DB_VERSION:  # no update could ever follow it
            raise ConfigError(f"{source}: db_version {data['db_version']} is above the highest "
                              f"version hv-emu accepts ({MAX_DB_VERSION}); refusing it")
        return cls(**data)

    @property
    def db_file(self) -> str:
        """The name of the body's content-addressed file inside the state directory."""
        return f"{_DB_PREFIX}{self.db_sha256}.{self.kind}"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _read_entry(dir_fd: int, name: str, where: Path, limit: int | None = None, *,
                owned: bool = False) -> bytes | None:
    """The bytes of the regular file ``name`` in the directory ``dir_fd`` (shown as ``where``),
    or ``None`` if there is no such entry. A symbolic link, a directory, a FIFO or any other
    non-regular entry is a ``ConfigError`` (one line), as is a file larger than ``limit`` (and,
    with ``owned``, one another user owns)."""
    path = where / name
    try:
        return read_regular(dir_fd, name, limit, owned=owned)
    except FileNotFoundError:
        return None
    except RefusedEntry as refused:
        raise ConfigError(f"{path}: {refused}; refusing it") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path}: is a symbolic link; refusing to follow it") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise ConfigError(f"{path}: not a regular file; refusing it") from None
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


class StateDir:
    """A directory holding ``state.json`` and the installed database body."""

    def __init__(self, path: Path | str, *, max_body: int = DEFAULT_MAX_UPDATE) -> None:
        self.path = Path(path)
        #: Largest database body read back (an installed body came in an update no larger than
        #: the update cap): a planted huge file is refused unread.
        self.max_body = max_body
        #: Temporaries this object created and could not remove yet (retried after each commit).
        self._leftovers: set[str] = set()

    def _open_dir(self) -> int:
        return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def load(self) -> tuple[InstalledState, bytes] | None:
        """The installed state and body, or ``None`` if nothing was ever installed here."""
        try:
            dir_fd = self._open_dir()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(
                f"state directory {self.path}: cannot open ({exc.strerror})"
            ) from None
        try:
            return self._load(dir_fd)
        finally:
            os.close(dir_fd)

    def _load(self, dir_fd: int) -> tuple[InstalledState, bytes] | None:
        state = self._read_state(dir_fd)
        if state is None:
            return None
        state_path = self.path / STATE_FILE
        db_path = self.path / state.db_file
        try:
            body = _read_entry(dir_fd, state.db_file, self.path, self.max_body)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; refusing to forget the installed version") from None
        if body is None:
            raise ConfigError(
                f"{state_path}: installed database {db_path.name} is missing;"
                " refusing to forget the installed version"
            )
        if hashlib.sha256(body).hexdigest() != state.db_sha256:
            raise ConfigError(f"{db_path}: SHA-256 does not match {STATE_FILE}; state is corrupt")
        return state, body

    def _read_state(self, dir_fd: int) -> InstalledState | None:
        """``state.json`` decoded and checked, or ``None`` if there is none."""
        data = _read_entry(dir_fd, STATE_FILE, self.path, MAX_STATE_SIZE)
        if data is None:
            return None
        state_path = self.path / STATE_FILE
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{state_path}: cannot read ({exc})") from None
        return InstalledState.from_json(text, str(state_path))

    def save(self, state: InstalledState, body: bytes) -> list[str]:
        """Install ``body`` as described by ``state``; a crash leaves the old or the new state.

        Raises ``StorageError`` if it fails before the commit point: the old state is in force
        and whatever this call created is gone. Returns the problems met after the commit point
        (the new state is in force; e.g. the superseded body could not be removed), one line
        each, for the caller to log: they are never raised.
        """
        if hashlib.sha256(body).hexdigest() != state.db_sha256:
            raise HostError("InstalledState.db_sha256 does not match the body being saved")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            dir_fd = self._open_dir()
        except OSError as exc:
            raise StorageError(f"state directory {self.path}: cannot save ({exc})") from None
        try:
            previous = self._prepare(dir_fd, state, body)
            return self._after_commit(dir_fd, previous, keep=state.db_file)
        finally:
            os.close(dir_fd)

    def _prepare(self, dir_fd: int, state: InstalledState, body: bytes) -> InstalledState | None:
        """Everything up to and including the commit rename; the previous state, if any."""
        created: list[str] = []  # entries of ours to remove if the commit does not happen
        try:
            # The entries we are about to replace or reuse are checked first: a planted link or
            # special file there stops the save before anything is written.
            previous = self._read_state(dir_fd)
            # Reused only if it is ours: a file another user planted under the name is never
            # adopted (and so never removed later as "superseded").
            existing = _read_entry(dir_fd, state.db_file, self.path, self.max_body, owned=True)
            if existing is not None and hashlib.sha256(existing).hexdigest() != state.db_sha256:
                raise ConfigError(
                    f"{self.path / state.db_file}: exists and is not the database it names;"
                    " refusing to overwrite it"
                )
            # 1. The new body under its own name: the old state.json does not point at it, so
            #    a crash here leaves at worst an unreferenced file.
            if existing is None:
                self._write_new(dir_fd, state.db_file, body, created)
                os.fsync(dir_fd)
            # 2. The commit point: one rename switches state.json from the old body to the new.
            self._write_new(dir_fd, STATE_FILE, state.to_json().encode("utf-8"), created)
        except (OSError, ConfigError) as exc:
            for name in reversed(created):
                self._remove(dir_fd, name)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StorageError(
                f"state directory {self.path}: cannot save ({reason}); nothing changed"
            ) from None
        return previous

    def _write_new(self, dir_fd: int, name: str, data: bytes, created: list[str]) -> None:
        """Write ``data`` to a fresh temporary, fsync it and rename it to ``name``; ``created``
        gets each entry of ours that exists until this returns (the temporary, then ``name``
        unless it replaced ``state.json``, which is the commit)."""
        tmp = temporary_name(name, _TMP_SUFFIX)
        create_exclusive(dir_fd, tmp, data, 0o644, durable=True)
        created.append(tmp)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        created.remove(tmp)
        if name != STATE_FILE:
            created.append(name)

    def _remove(self, dir_fd: int, name: str) -> None:
        """Remove an entry of ours after a failure; if that fails too, retry after a commit."""
        try:
            os.unlink(name, dir_fd=dir_fd)
            self._leftovers.discard(name)
        except FileNotFoundError:
            self._leftovers.discard(name)
        except OSError:
            if name.endswith(_TMP_SUFFIX):
                self._leftovers.add(name)

    def _after_commit(self, dir_fd: int, previous: InstalledState | None, keep: str) -> list[str]:
        """Make the commit durable, then remove what it superseded; problems are returned."""
        problems: list[str] = []
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            problems.append(f"fsync of {self.path} after the commit failed ({exc.strerror});"
                            " the new state may not survive a power cut")  # fmt: skip
        stale = [previous.db_file] if previous is not None and previous.db_file != keep else []
        for name in stale + sorted(self._leftovers):
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"cannot remove {self.path / name} ({exc.strerror}); it stays")
                continue
            self._leftovers.discard(name)
        return problems
