"""The compiled-database cache of ``hv-emu scan``: entries keyed by content, checked by a MAC.

Models: a per-user store of opaque byte strings ("entries"), each under a key that names exactly
what it was built from (``database_files.cache_key``: the database files' bytes, kinds and names,
the engine and its version, the scanner's code, the CPU features Hyperscan compiled for). Compiling
rfxn.ndb costs about 100 ms (parse, then Hyperscan's compiler); loading it back from here a few
milliseconds. A key that changes simply misses: a stale entry is never read again, and is pruned.

Follows: the XDG base directory spec for the place (``$XDG_CACHE_HOME/hv-emu``, else
``~/.cache/hv-emu``), and the state directory's rules for the files (``hv_emu/updates/state.py``):
every file is opened relative to one directory descriptor, read with ``O_NOFOLLOW|O_NONBLOCK``
and checked to be a regular file of ours, written as a new temporary
(``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600, an unpredictable name) renamed over the entry.

An entry is ``MAGIC`` + HMAC-SHA256 + payload; the MAC covers the magic, the key and the
payload, under a per-user secret (``secret``: 32 random bytes, created 0600 beside the entries).
An entry that is truncated, corrupt, written under another key or secret, or planted, fails the
MAC and is a miss: the caller rebuilds and overwrites it, silently. Only bytes that pass the MAC
are handed back, so the caller may unpickle them (they are what this user's hv-emu wrote).

Leaves out: fsync (an entry lost or torn by a crash fails its MAC and is rebuilt), locking (two
writers of one key write the same bytes; the last rename wins) and sharing between users.

Who controls what: the user owns the directory. It is treated as hostile all the same: it must be
a directory (not a link) owned by the user and writable by no one else, or the cache is not used;
a planted link, FIFO or foreign file under an entry's or the secret's name is never followed or
trusted (an entry's is replaced by the next write, the secret's by a new secret). No failure of the
cache is ever an error of the scan: every one is a miss, or a write left undone.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from pathlib import Path

from hv_emu.hostile_dir import RefusedEntry, create_exclusive, read_regular, temporary_name

#: The first bytes of every entry; bump the digit when the layout changes.
MAGIC = b"HVEMUDB1"
MAC_SIZE = hashlib.sha256().digest_size
SECRET = "secret"
SECRET_SIZE = 32
SUFFIX = ".entry"
#: Entries kept: when a write makes more, the least recently written go.
MAX_ENTRIES = 16
#: Largest entry read (a 100,000-signature database is about 100 MiB): a planted huge file is
#: a miss, unread.
MAX_ENTRY = 2 << 30
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def default_path() -> Path:
    """``$XDG_CACHE_HOME/hv-emu`` (when that is an absolute path, as the spec asks), else
    ``~/.cache/hv-emu``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "hv-emu"


class Cache:
    """The entries in one directory. ``get`` and ``put`` never raise ``OSError``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def get(self, key: str) -> bytes | None:
        """The payload stored under ``key`` if an entry passes its MAC, else None."""
        dir_fd = self._open_dir(create=False)
        if dir_fd is None:
            return None
        try:
            secret = self._secret(dir_fd, create=False)
            data = _read(dir_fd, key + SUFFIX, MAX_ENTRY) if secret is not None else None
        finally:
            os.close(dir_fd)
        if secret is None or data is None or not data.startswith(MAGIC):
            return None
        payload = memoryview(data)[len(MAGIC) + MAC_SIZE :]
        mac = data[len(MAGIC) : len(MAGIC) + MAC_SIZE]
        if not hmac.compare_digest(mac, _mac(secret, key, payload)):
            return None
        return payload.tobytes()

    def put(self, key: str, payload: bytes) -> bool:
        """Store ``payload`` under ``key`` (replacing any entry); False if it could not be."""
        dir_fd = self._open_dir(create=True)
        if dir_fd is None:
            return False
        try:
            secret = self._secret(dir_fd, create=True)
            if secret is None:
                return False
            data = b"".join((MAGIC, _mac(secret, key, payload), payload))
            if not _write_new(dir_fd, key + SUFFIX, data):
                return False
            self._prune(dir_fd)
            return True
        finally:
            os.close(dir_fd)

    def _open_dir(self, *, create: bool) -> int | None:
        """A descriptor of the cache directory, if it is a real directory of ours that no one else
        can write (created 0700 when ``create``); None otherwise."""
        if create:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    self.path.mkdir(mode=0o700)
            except OSError:
                return None
        try:
            dir_fd = os.open(self.path, _DIR_FLAGS)  # a link in its place: ELOOP/ENOTDIR
        except OSError:
            return None
        info = os.fstat(dir_fd)  # cannot fail on an open descriptor
        if info.st_uid != os.geteuid() or info.st_mode & 0o022:
            os.close(dir_fd)
            return None
        return dir_fd

    def _secret(self, dir_fd: int, *, create: bool) -> bytes | None:
        """The per-user MAC key; a new one (0600) when ``create`` and the present one is missing
        or unfit (a link, not ours, readable by others, the wrong size)."""
        secret = _read(dir_fd, SECRET, SECRET_SIZE, private=True)
        if secret is not None and len(secret) == SECRET_SIZE:
            return secret
        if not create:
            return None
        fresh = os.urandom(SECRET_SIZE)
        if secret is None and _link_new(dir_fd, SECRET, fresh):
            return fresh
        # There is one: another process's (just made: read it) or an unfit one (replace it).
        secret = _read(dir_fd, SECRET, SECRET_SIZE, private=True)
        if secret is not None and len(secret) == SECRET_SIZE:
            return secret
        return fresh if _write_new(dir_fd, SECRET, fresh) else None

    def _prune(self, dir_fd: int) -> None:
        """Remove the oldest entries past ``MAX_ENTRIES`` (only names this module writes)."""
        try:
            names = [name for name in os.listdir(dir_fd) if name.endswith(SUFFIX)]
            if len(names) <= MAX_ENTRIES:
                return
            ages = []
            for name in names:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                ages.append((info.st_mtime_ns, name))
            for _, name in sorted(ages)[: len(ages) - MAX_ENTRIES]:
                os.unlink(name, dir_fd=dir_fd)
        except OSError:  # pruning is a courtesy: the next write tries again
            return


def _mac(secret: bytes, key: str, payload: bytes | memoryview) -> bytes:
    keyed = hmac.new(secret, MAGIC + key.encode("ascii") + b"\0", hashlib.sha256)
    keyed.update(payload)
    return keyed.digest()


def _read(dir_fd: int, name: str, limit: int, *, private: bool = False) -> bytes | None:
    """The bytes of ``name`` if it is a regular file of ours of at most ``limit`` bytes (and, if
    ``private``, readable by no one else); None otherwise."""
    try:
        return read_regular(dir_fd, name, limit, owned=True, private=private)
    except (OSError, RefusedEntry):
        return None


def _create_temporary(dir_fd: int, name: str, data: bytes) -> str | None:
    """A new file (0600) holding ``data`` under an unpredictable name; its name, or None."""
    temporary = temporary_name(f".{name}")
    try:
        create_exclusive(dir_fd, temporary, data, 0o600)
    except OSError:
        return None
    return temporary


def _write_new(dir_fd: int, name: str, data: bytes) -> bool:
    """Replace ``name`` with a file holding ``data``, atomically (a link in its place is replaced,
    never followed)."""
    temporary = _create_temporary(dir_fd, name, data)
    if temporary is None:
        return False
    try:
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        _unlink(dir_fd, temporary)
        return False
    return True


def _link_new(dir_fd: int, name: str, data: bytes) -> bool:
    """Create ``name`` holding ``data`` only if there is none (False if there is one): whole or
    not at all, so a reader never sees half of it."""
    temporary = _create_temporary(dir_fd, name, data)
    if temporary is None:
        return False
    try:
        os.link(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    finally:
        _unlink(dir_fd, temporary)
    return True


def _unlink(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)
