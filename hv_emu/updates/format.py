"""The signed update bundle: the bytes a guest passes to ``update_signatures`` (RBX/RCX).

Models: a signature-database update as one self-describing object, an 80-byte header followed by
the database text. The header names the database version, its validity window, the signer (by key
id), the signature algorithm, the kind of database, and commits to the body by its length and
SHA-256. The detached signature (at RDX) covers ``DOMAIN || header`` only, so the network path (a
signed manifest followed by chunks) reuses the very same signature and verification.

Follows: ``docs/UPDATE-FORMAT.md`` (the source of truth; ``tests/updates/test_format.py`` checks
that its header table agrees with ``FIELDS``) and TUF, trimmed: a fixed binary layout in
network byte order instead of canonical JSON, domain-separated signatures, truncated
domain-separated SHA-256 key ids (TUF's KEYID), one ``sig_alg`` byte for scheme agility.

Leaves out: verification (``verify.py``), the installed state (``state.py``), signing (the guest
tool), delta updates and root-key rotation.

Guest controls: every byte of the bundle. ``parse_bundle`` and ``BundleHeader.from_bytes`` check
lengths before they slice and raise only ``UpdateRejected(Rc.MALFORMED, ...)``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.hypercalls.abi import Rc

#: The first four bytes of every bundle.
MAGIC = b"HVDB"
#: The only layout this module knows.
FORMAT_VERSION = 1
#: Prefixed to the header before signing, so no other message of ours can be passed off as it.
DOMAIN = b"hv-emu update v1\x00"
#: Prefixed to a raw public key before hashing it into a key id.
KEY_ID_DOMAIN = b"hv-emu key id v1\x00"
#: Bytes of a key id (the truncated SHA-256).
KEY_ID_SIZE = 8

#: The public keys an update may be signed with.
PublicKey = Ed25519PublicKey | RSAPublicKey

#: The header, field by field: (name, struct code, meaning). All integers are big-endian.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("magic", "4s", 'b"HVDB"'),
    ("format_version", "H", "layout version, 1"),
    ("header_len", "H", "80: the size of this header"),
    ("db_version", "Q", "monotonic database version, >= 1"),
    ("issued_at", "Q", "Unix seconds when the update was signed"),
    ("expires_at", "Q", "Unix seconds after which it is refused, > issued_at"),
    ("key_id", "8s", "key id of the signer's public key"),
    ("sig_alg", "B", "SigAlg: 1 = Ed25519, 2 = RSA-PSS-3072/SHA-256"),
    ("content_type", "B", "ContentType: 1 = ClamAV .db, 2 = ClamAV .ndb"),
    ("reserved", "H", "0"),
    ("body_len", "I", "bytes of database text after the header"),
    ("body_sha256", "32s", "SHA-256 of the database text"),
)
_HEADER = struct.Struct(">" + "".join(code for _, code, _ in FIELDS))
#: Bytes of the header (and the offset of the body).
HEADER_SIZE = _HEADER.size
#: The highest ``db_version`` hv-emu accepts or keeps. Versions above it, the top half of the
#: header's u64, are reserved: they do not fit a signed 64-bit integer (how many readers of
#: ``state.json`` and of the wire store them) and a signer's -1 lands there (docs/UPDATE-FORMAT.md,
#: "Versions"; the update service's version policy).
MAX_DB_VERSION = 2**63 - 1


class SigAlg(IntEnum):
    """The signature scheme a bundle names; each trusted key is bound to exactly one."""

    ED25519 = 1
    #: RSA-PSS over SHA-256, MGF1-SHA-256, 32-byte salt, with a 3072-bit key.
    RSA_PSS_3072 = 2


#: Signature bytes per algorithm: fixed, so the hypervisor knows how much to read at RDX.
_SIGNATURE_LENGTHS: dict[SigAlg, int] = {SigAlg.ED25519: 64, SigAlg.RSA_PSS_3072: 384}


class ContentType(IntEnum):
    """The kind of ClamAV database in the body."""

    #: ``Name=HEXSIGNATURE`` lines (ClamAV ``.db``).
    DB = 1
    #: ``Name:TargetType:Offset:HexSignature`` lines (ClamAV ``.ndb``).
    NDB = 2

    @property
    def kind(self) -> str:
        """The file suffix, without its dot: ``"db"`` or ``"ndb"``."""
        return self.name.lower()

    @classmethod
    def from_kind(cls, kind: str) -> ContentType:
        """The content type for ``"db"`` or ``"ndb"``; ``ConfigError`` for anything else."""
        for member in cls:
            if member.kind == kind:
                return member
        known = ", ".join(member.kind for member in cls)
        raise ConfigError(f"unknown database kind {kind!r} (known: {known})")


def _malformed(reason: str) -> UpdateRejected:
    return UpdateRejected(Rc.MALFORMED, f"malformed update: {reason}")


@dataclass(frozen=True)
class BundleHeader:
    """The decoded header. Constant fields (magic, format_version, header_len, reserved) are not
    stored: ``to_bytes`` writes them and ``from_bytes`` insists on them.

    ``sig_alg`` stays a plain int: an algorithm we do not know is not a malformed header but an
    untrusted signer, and ``verify.py`` says so.
    """

    db_version: int
    issued_at: int
    expires_at: int
    key_id: bytes
    sig_alg: int
    content_type: ContentType
    body_len: int
    body_sha256: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> BundleHeader:
        """Decode the first ``HEADER_SIZE`` bytes of ``data``; trailing bytes are not looked at."""
        if len(data) < HEADER_SIZE:
            raise _malformed(f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
        (
            magic,
            format_version,
            header_len,
            db_version,
            issued_at,
            expires_at,
            key_id,
            sig_alg,
            content_type,
            reserved,
            body_len,
            body_sha256,
        ) = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise _malformed(f"magic is {magic!r}, expected {MAGIC!r}")
        if format_version != FORMAT_VERSION:
            raise _malformed(f"format version {format_version}, only {FORMAT_VERSION} is known")
        if header_len != HEADER_SIZE:
            raise _malformed(f"header_len is {header_len}, version 1 headers are {HEADER_SIZE}")
        if reserved != 0:
            raise _malformed(f"reserved field is {reserved:#x}, must be 0")
        if content_type not in ContentType.__members__.values():
            raise _malformed(f"unknown content type {content_type}")
        if db_version < 1:
            raise _malformed("db_version is 0, versions start at 1")
        if expires_at <= issued_at:
            raise _malformed(f"expires_at {expires_at} is not after issued_at {issued_at}")
        return cls(
            db_version=db_version,
            issued_at=issued_at,
            expires_at=expires_at,
            key_id=key_id,
            sig_alg=sig_alg,
            content_type=ContentType(content_type),
            body_len=body_len,
            body_sha256=body_sha256,
        )

    def to_bytes(self) -> bytes:
        """The 80 header bytes, exactly as signed."""
        return _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            HEADER_SIZE,
            self.db_version,
            self.issued_at,
            self.expires_at,
            self.key_id,
            self.sig_alg,
            self.content_type,
            0,
            self.body_len,
            self.body_sha256,
        )

    @property
    def kind(self) -> str:
        """``"db"`` or ``"ndb"``: how the scanner should parse the body."""
        return self.content_type.kind


def signature_length(alg: int) -> int:
    """Bytes of a signature made with ``alg``; ``UpdateRejected(UNTRUSTED_KEY)`` if unknown."""
    if alg not in SigAlg.__members__.values():
        raise UpdateRejected(Rc.UNTRUSTED_KEY, f"unknown signature algorithm {alg}")
    return _SIGNATURE_LENGTHS[SigAlg(alg)]


def parse_bundle(data: bytes) -> tuple[BundleHeader, bytes]:
    """Split a whole bundle into its header and its body (not yet hash-checked).

    The bundle must be exactly ``HEADER_SIZE + body_len`` bytes: missing bytes are a truncated
    update, extra bytes are refused too, so one bundle has one meaning.
    """
    header = BundleHeader.from_bytes(data)
    expected = HEADER_SIZE + header.body_len
    if len(data) < expected:
        raise _malformed(f"truncated: header declares {expected} bytes, got {len(data)}")
    if len(data) > expected:
        raise _malformed(f"{len(data) - expected} trailing bytes after the declared body")
    return header, bytes(data[HEADER_SIZE:])


def raw_public_key(public_key: PublicKey) -> bytes:
    """The bytes a key id hashes: 32 raw bytes for Ed25519, DER SubjectPublicKeyInfo for RSA."""
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(public_key, RSAPublicKey):
        return public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    raise ConfigError(f"unsupported public key type {type(public_key).__name__}")


def key_id_of(public_key: PublicKey) -> bytes:
    """The 8-byte key id: SHA-256(KEY_ID_DOMAIN || raw public key), truncated."""
    return hashlib.sha256(KEY_ID_DOMAIN + raw_public_key(public_key)).digest()[:KEY_ID_SIZE]


def signing_message(header_bytes: bytes) -> bytes:
    """What the detached signature covers: ``DOMAIN || header`` (the header commits to the body)."""
    return DOMAIN + header_bytes
