"""Building signed updates: ``guest-tool bundle --db sigs.ndb --version 7 --key demo.key -o F``.

Models: the publisher's side of ``hv_emu/updates/format.py``. The database text becomes the body,
the header commits to it by length and SHA-256, and the detached signature covers
``DOMAIN || header``. The result is two files: ``F`` (header || body, what the guest passes in
RBX/RCX) and ``F.sig`` (what it passes at RDX).

Follows: ``docs/UPDATE-FORMAT.md``; RSA-PSS parameters come from ``hv_emu.updates.verify`` so the
signer and the verifier cannot disagree.

Leaves out: delta updates, multi-key thresholds, compression.

Guest controls: nothing; this runs on the publisher's machine. The database may still be broken,
so ``write_bundle`` takes a ``validate`` callback (the scanner's parser) and refuses it before
signing anything.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guest_tool.keys import PrivateKey, load_private_key
from hv_emu.errors import ConfigError
from hv_emu.named_file import read_user_file
from hv_emu.scanner.signatures import MAX_DATABASE_BYTES
from hv_emu.updates.format import (
    MAX_DB_VERSION,
    BundleHeader,
    ContentType,
    key_id_of,
    signing_message,
)
from hv_emu.updates.verify import pss_padding, sig_alg_for

#: Largest value of a u64 header field (versions and times).
_U64_MAX = 2**64 - 1
#: Largest body a u32 ``body_len`` can declare.
_MAX_BODY = 2**32 - 1
_SECONDS_PER_DAY = 86400

#: ``validate(body, kind, source)``: raise if ``body`` is not a valid database of ``kind``.
Validator = Callable[[bytes, str, str], None]


def sign(private_key: PrivateKey, message: bytes) -> bytes:
    """Sign ``message`` with the algorithm the key is bound to (Ed25519 or RSA-PSS-SHA-256)."""
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    return private_key.sign(message, pss_padding(), hashes.SHA256())


def make_bundle(
    body: bytes,
    *,
    kind: str,
    version: int,
    private_key: PrivateKey,
    issued_at: int,
    expires_at: int,
) -> tuple[bytes, bytes]:
    """The bundle (header || body) and its detached signature."""
    content_type = ContentType.from_kind(kind)
    if not 1 <= version <= _U64_MAX:
        raise ConfigError(f"version must be between 1 and {_U64_MAX}, got {version}")
    if not 0 <= issued_at < expires_at:
        raise ConfigError(f"expiry {expires_at} must come after issue time {issued_at}")
    if expires_at > _U64_MAX:
        raise ConfigError(f"expiry {expires_at} does not fit the header's 64-bit field")
    if len(body) > _MAX_BODY:
        raise ConfigError(f"database is {len(body)} bytes; a bundle holds at most {_MAX_BODY}")
    public_key = private_key.public_key()
    header = BundleHeader(
        db_version=version,
        issued_at=issued_at,
        expires_at=expires_at,
        key_id=key_id_of(public_key),
        sig_alg=sig_alg_for(public_key),
        content_type=content_type,
        body_len=len(body),
        body_sha256=hashlib.sha256(body).digest(),
    )
    header_bytes = header.to_bytes()
    return header_bytes + body, sign(private_key, signing_message(header_bytes))


def _kind_of(db_path: Path) -> str:
    kind = db_path.suffix.removeprefix(".")
    known = [member.kind for member in ContentType]
    if kind not in known:
        raise ConfigError(
            f"{db_path}: cannot tell the database kind from suffix {db_path.suffix!r} "
            f"(use .{' or .'.join(known)}, or give the kind)"
        )
    return kind


def write_bundle(
    db_path: Path,
    *,
    version: int,
    key_path: Path,
    out: Path,
    expires_in_days: float = 30.0,
    kind: str | None = None,
    now: int | None = None,
    validate: Validator | None = None,
) -> tuple[Path, Path]:
    """Sign the database at ``db_path`` and write ``out`` and ``out.sig``; returns both paths.

    ``validate`` errors (e.g. the scanner's ``DatabaseError``) propagate unchanged, before any
    file is written.
    """
    db_path, out = Path(db_path), Path(out)
    if version < 1:
        raise ConfigError(f"--version must be at least 1, got {version}")
    if version > MAX_DB_VERSION:
        raise ConfigError(f"--version {version} is reserved: the hypervisor refuses versions above "
                          f"{MAX_DB_VERSION} (docs/UPDATE-FORMAT.md, Versions)")  # fmt: skip
    if not 0 < expires_in_days < math.inf:  # also refuses NaN
        raise ConfigError(f"expiry must be a positive number of days, got {expires_in_days}")
    kind = ContentType.from_kind(kind).kind if kind is not None else _kind_of(db_path)
    body = read_user_file(db_path, "database", MAX_DATABASE_BYTES)
    if validate is not None:
        validate(body, kind, str(db_path))
    private_key = load_private_key(key_path)
    issued_at = int(time.time()) if now is None else now
    expires_at = issued_at + round(expires_in_days * _SECONDS_PER_DAY)
    bundle, signature = make_bundle(
        body,
        kind=kind,
        version=version,
        private_key=private_key,
        issued_at=issued_at,
        expires_at=expires_at,
    )
    sig_path = Path(f"{out}.sig")
    try:
        out.write_bytes(bundle)
        sig_path.write_bytes(signature)
    except OSError as exc:
        raise ConfigError(f"cannot write {exc.filename}: {exc.strerror}") from None
    return out, sig_path
