"""Verifying a signed update: one pipeline for the VMCALL path and the network path.

Models: the hypervisor's decision to trust a signature database. A ``TrustStore`` holds the public
keys the user named (``hv-emu run --trust KEY.pub``), each bound to exactly one algorithm.
``verify_bundle`` checks a whole bundle and its detached signature; ``verify_header`` checks a
signed header alone (the network receiver does this before it accepts any chunk) and
``check_body`` then checks the reassembled body against it. The checks run cheapest first, so a
replayed or garbage update costs a few comparisons and never a signature verification.

Follows: ``docs/UPDATE-FORMAT.md`` (``CHECK_ORDER`` below is the table it reproduces; a test
keeps them in agreement) and TUF, trimmed: version strictly greater than the installed one, and
within the window the update service allows (``UpdateService.acceptable_versions``: a bounded
jump, no reserved version), checked before any crypto (rollback, replay, fast-forward), expiry
against a trusted time floor (freeze),
key ids for lookup without trial verification, and a key never accepted under an algorithm other
than the one it is bound to (downgrade).

Leaves out: thresholds of several keys, root rotation and delegation records, delta updates; the
database text itself is parsed by the scanner after this module said yes.

Guest controls: the bundle and the signature, every byte. The only exception that leaves
``verify_bundle``, ``verify_header`` and ``check_body`` is ``UpdateRejected`` with an ``abi.Rc``.
The trust store is user input: its problems are ``ConfigError``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.hypercalls import abi
from hv_emu.hypercalls.abi import Rc
from hv_emu.named_file import read_user_file
from hv_emu.updates.format import (
    HEADER_SIZE,
    BundleHeader,
    PublicKey,
    SigAlg,
    key_id_of,
    parse_bundle,
    raw_public_key,
    signature_length,
    signing_message,
)

#: How far in the future an update's ``issued_at`` may be (the signer's clock may run ahead).
CLOCK_SKEW = 300
#: The only RSA modulus size accepted (``SigAlg.RSA_PSS_3072``).
RSA_BITS = 3072
#: Largest PEM key file read (an RSA-3072 key is about 2.5 KiB): a wrong path is refused unread.
MAX_PEM_BYTES = 64 * 1024
#: PSS salt bytes (equal to the SHA-256 digest size, as ClamAV's cdiff signatures use).
PSS_SALT_LENGTH = 32


def pss_padding() -> padding.PSS:
    """RSA-PSS as ``SigAlg.RSA_PSS_3072`` defines it: MGF1-SHA-256, 32-byte salt."""
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


def supported_key(public_key: object) -> PublicKey:
    """``public_key`` if it is of a type updates may be signed with; ``ConfigError`` otherwise."""
    if isinstance(public_key, Ed25519PublicKey | RSAPublicKey):
        return public_key
    raise ConfigError(
        f"{type(public_key).__name__} keys are not accepted (use Ed25519 or RSA-{RSA_BITS})"
    )


def sig_alg_for(public_key: PublicKey) -> SigAlg:
    """The one algorithm a key is bound to; ``ConfigError`` for an RSA key of the wrong size."""
    if isinstance(public_key, Ed25519PublicKey):
        return SigAlg.ED25519
    if public_key.key_size != RSA_BITS:
        raise ConfigError(f"RSA key of {public_key.key_size} bits; only {RSA_BITS} is accepted")
    return SigAlg.RSA_PSS_3072


@dataclass(frozen=True)
class Check:
    """One step of verification: the code it fails with and the rule it enforces."""

    code: Rc
    rule: str


#: The checks in the order they run. ``docs/UPDATE-FORMAT.md`` reproduces this table.
CHECK_ORDER: tuple[Check, ...] = (
    Check(Rc.TOO_LARGE, "bundle (or declared header + body) larger than max_size"),
    Check(Rc.MALFORMED, "header or bundle does not parse (magic, version, lengths, fields)"),
    Check(Rc.STALE_VERSION, "db_version <= installed version, or beyond the version window "
                            "(before any crypto)"),
    Check(Rc.UNTRUSTED_KEY, "key_id not trusted, or sig_alg not the key's bound algorithm"),
    Check(Rc.BAD_SIGNATURE, "signature length not the one sig_alg fixes"),
    Check(Rc.EXPIRED, "expires_at <= trusted now = max(now, time_floor)"),
    Check(Rc.EXPIRED, f"issued_at > trusted now + {CLOCK_SKEW} s (issued in the future)"),
    Check(Rc.BAD_SIGNATURE, "signature over the DOMAIN-prefixed header does not verify"),
    Check(Rc.BAD_SIGNATURE, "SHA-256(body) != body_sha256 (not the body that was signed)"),
)


@dataclass(frozen=True)
class TrustedKey:
    """A public key the user trusts, the algorithm it is bound to, and where it came from."""

    key_id: bytes
    alg: SigAlg
    public_key: PublicKey
    source: str

    def verifies(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message`` under its algorithm."""
        try:
            if isinstance(self.public_key, Ed25519PublicKey):
                self.public_key.verify(signature, message)
            else:
                self.public_key.verify(signature, message, pss_padding(), hashes.SHA256())
        except InvalidSignature:
            return False
        return True


class TrustStore:
    """The trusted public keys, looked up by key id (no trial verification)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, TrustedKey] = {}

    def add_pem(self, pem: bytes, source: str) -> TrustedKey:
        """Trust the PEM SubjectPublicKeyInfo in ``pem``; ``source`` names it in messages.

        The same key given twice is trusted once. ``ConfigError`` for a private key, a non-PEM
        file, or a key of the wrong type or size.
        """
        if b"PRIVATE KEY-----" in pem:
            raise ConfigError(f"{source}: is a private key; trust the public key (.pub) instead")
        try:
            loaded = load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(
                f"{source}: not a PEM public key (expected -----BEGIN PUBLIC KEY-----)"
            ) from None
        try:
            public_key = supported_key(loaded)
            alg = sig_alg_for(public_key)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        key = TrustedKey(key_id_of(public_key), alg, public_key, source)
        known = self._keys.get(key.key_id)
        if known is not None:
            if raw_public_key(known.public_key) != raw_public_key(public_key):
                raise ConfigError(
                    f"{source}: key id {key.key_id.hex()} collides with {known.source}"
                )
            return known
        self._keys[key.key_id] = key
        return key

    def load_file(self, path: Path | str) -> TrustedKey:
        """Trust the public key in the PEM file at ``path``."""
        pem = read_user_file(path, "trusted key", MAX_PEM_BYTES)
        return self.add_pem(pem, str(path))

    def lookup(self, key_id: bytes) -> TrustedKey | None:
        """The trusted key with this id, or ``None``."""
        return self._keys.get(key_id)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> tuple[bytes, ...]:
        """The ids of the trusted keys, in the order they were added."""
        return tuple(self._keys)

    def describe(self) -> str:
        """One line per key: id, algorithm and source (for ``hv-emu run`` to print)."""
        if not self._keys:
            return "no trusted update keys: every update will be refused"
        return "\n".join(
            f"{key.key_id.hex()} {key.alg.name.lower()} {key.source}" for key in self._keys.values()
        )


@dataclass(frozen=True)
class VerifiedUpdate:
    """An update that passed every check: the body is exactly what a trusted key signed."""

    header: BundleHeader
    body: bytes

    @property
    def db_version(self) -> int:
        return self.header.db_version

    @property
    def kind(self) -> str:
        return self.header.kind


def verify_header(
    header_bytes: bytes,
    signature: bytes,
    trust: TrustStore,
    *,
    versions: range,
    now: int,
    time_floor: int = 0,
    max_size: int = abi.DEFAULT_MAX_UPDATE,
) -> BundleHeader:
    """Check a signed header on its own: every check of ``CHECK_ORDER`` but the body hash.

    ``versions`` are the versions acceptable now (``UpdateService.acceptable_versions``: newer
    than the installed one, within the version window); ``now`` is the host clock;
    ``time_floor`` the latest time the hypervisor has proof of (the last installed update's
    ``issued_at``), so a clock set back cannot revive an expired update.
    """
    header = BundleHeader.from_bytes(header_bytes)
    if HEADER_SIZE + header.body_len > max_size:
        raise UpdateRejected(
            Rc.TOO_LARGE,
            f"update declares {HEADER_SIZE + header.body_len} bytes, the limit is {max_size}",
        )
    if header.db_version < versions.start:
        raise UpdateRejected(
            Rc.STALE_VERSION,
            f"version {header.db_version} is not newer than installed {versions.start - 1}",
        )
    if header.db_version not in versions:
        raise UpdateRejected(
            Rc.STALE_VERSION,
            f"version {header.db_version} is beyond {versions.stop - 1}, the newest accepted now "
            f"(installed {versions.start - 1}; docs/UPDATE-FORMAT.md, Versions)",
        )
    key = trust.lookup(header.key_id)
    if key is None:
        raise UpdateRejected(Rc.UNTRUSTED_KEY, f"key id {header.key_id.hex()} is not trusted")
    if header.sig_alg != key.alg:
        raise UpdateRejected(
            Rc.UNTRUSTED_KEY,
            f"key {header.key_id.hex()} is bound to {key.alg.name}, update says alg "
            f"{header.sig_alg}",
        )
    expected = signature_length(key.alg)
    if len(signature) != expected:
        raise UpdateRejected(
            Rc.BAD_SIGNATURE,
            f"signature is {len(signature)} bytes, {key.alg.name} signatures are {expected}",
        )
    trusted_now = max(now, time_floor)
    if header.expires_at <= trusted_now:
        raise UpdateRejected(
            Rc.EXPIRED, f"update expired at {header.expires_at}, trusted time is {trusted_now}"
        )
    if header.issued_at > trusted_now + CLOCK_SKEW:
        raise UpdateRejected(
            Rc.EXPIRED,
            f"update issued at {header.issued_at}, in the future of trusted time {trusted_now}",
        )
    if not key.verifies(signing_message(bytes(header_bytes[:HEADER_SIZE])), signature):
        raise UpdateRejected(
            Rc.BAD_SIGNATURE, f"signature does not verify under key {header.key_id.hex()}"
        )
    return header


def check_body(header: BundleHeader, body: bytes) -> VerifiedUpdate:
    """Accept ``body`` only if it is the one a verified ``header`` commits to."""
    if len(body) != header.body_len:
        raise UpdateRejected(
            Rc.MALFORMED, f"body is {len(body)} bytes, header declares {header.body_len}"
        )
    if hashlib.sha256(body).digest() != header.body_sha256:
        raise UpdateRejected(
            Rc.BAD_SIGNATURE, "body SHA-256 differs from the signed header: body was altered"
        )
    return VerifiedUpdate(header, body)


def verify_bundle(
    bundle: bytes,
    signature: bytes,
    trust: TrustStore,
    *,
    versions: range,
    now: int,
    time_floor: int = 0,
    max_size: int = abi.DEFAULT_MAX_UPDATE,
) -> VerifiedUpdate:
    """Run ``CHECK_ORDER`` on a whole bundle (header || body) and its detached signature."""
    if len(bundle) > max_size:
        raise UpdateRejected(
            Rc.TOO_LARGE, f"update is {len(bundle)} bytes, the limit is {max_size}"
        )
    header, body = parse_bundle(bundle)
    verify_header(
        bundle[:HEADER_SIZE],
        signature,
        trust,
        versions=versions,
        now=now,
        time_floor=time_floor,
        max_size=max_size,
    )
    return check_body(header, body)
