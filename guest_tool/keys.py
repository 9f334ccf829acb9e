"""Signing keys for updates: ``guest-tool keygen NAME [--alg ed25519|rsa-pss-3072]``.

Models: the update publisher's side of the trust model. A key pair is two PEM files: ``NAME.key``
(PKCS#8 private key, unencrypted, mode 0600, for ``guest-tool bundle``) and ``NAME.pub``
(SubjectPublicKeyInfo, for ``hv-emu run --trust``).

Follows: ``docs/UPDATE-FORMAT.md`` (each key is bound to one algorithm: Ed25519 or RSA-PSS with a
3072-bit modulus) and ``cryptography``'s serialization API.

Leaves out: passphrase-protected keys, hardware tokens, key rotation.

Guest controls: nothing; paths and algorithms are the user's, and their mistakes are
``ConfigError`` with one line.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from hv_emu.errors import ConfigError
from hv_emu.named_file import read_user_file
from hv_emu.updates.format import PublicKey
from hv_emu.updates.verify import MAX_PEM_BYTES, RSA_BITS, TrustStore, sig_alg_for

#: ``--alg`` choices, default first.
ALGORITHMS = ("ed25519", "rsa-pss-3072")
#: The private keys ``guest-tool bundle`` can sign with.
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def key_paths(stem: Path) -> tuple[Path, Path]:
    """``stem.key`` and ``stem.pub`` (appended, so ``keys/v1.2`` keeps its dot)."""
    return Path(f"{stem}.key"), Path(f"{stem}.pub")


def _generate(alg: str) -> PrivateKey:
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "rsa-pss-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ConfigError(f"unknown key algorithm {alg!r} (choose from {', '.join(ALGORITHMS)})")


def generate_keypair(stem: Path, alg: str = "ed25519") -> tuple[Path, Path]:
    """Write a new key pair to ``stem.key`` (mode 0600) and ``stem.pub``; never overwrite."""
    key_path, pub_path = key_paths(Path(stem))
    for path in (key_path, pub_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; refusing to overwrite a key")
    private_key = _generate(alg)
    private_pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = private_key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL: the private key is created by us, with its final mode, or not at all.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        pub_path.write_bytes(public_pem)
    except FileExistsError:
        raise ConfigError(f"{key_path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise ConfigError(f"cannot write key pair {stem}: {exc.strerror}") from None
    return key_path, pub_path


def _read(path: Path, what: str) -> bytes:
    return read_user_file(path, what, MAX_PEM_BYTES)


def load_private_key(path: Path) -> PrivateKey:
    """The signing key in the PEM file at ``path`` (Ed25519, or RSA with a 3072-bit modulus)."""
    pem = _read(path, "private key")
    try:
        key = load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(f"{path}: encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{path}: not a PEM private key (expected -----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, PrivateKey):
        raise ConfigError(f"{path}: {type(key).__name__} keys cannot sign updates")
    try:
        sig_alg_for(key.public_key())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return key


def load_public_key(path: Path) -> PublicKey:
    """The public key in the PEM file at ``path``, checked as ``hv-emu run --trust`` checks it."""
    return TrustStore().add_pem(_read(path, "public key"), str(path)).public_key
