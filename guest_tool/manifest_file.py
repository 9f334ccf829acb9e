"""The manifest file ``UPDATE.manifest``: a signed MANIFEST at rest, for relays to push.

Models: what the key holder hands to mirrors and relays beside a bundle (``docs/PROTOCOL.md``,
"Sign once, push anywhere"). ``guest-tool manifest`` signs the MANIFEST datagram once, offline;
the file keeps that datagram byte for byte, plus the signer's public key so that a relay can check
both signatures before it sends anything. Everything else a push sends (hash pages, symbols)
follows from the bundle's body and the manifest's FEC parameters, because the RaptorQ encoding is
deterministic; ``guest_tool/encoding.py`` recomputes it and compares it with the manifest's
commitments.

Follows: ``docs/PROTOCOL.md`` (the file's table there is ``FILE_FIELDS``;
``tests/docs/test_updates_protocol_doc.py`` keeps them in agreement).

Leaves out: several manifests per file (one per update id; sign again for another), compression.

Who controls it: whoever handed the relay its files, so it is parsed as hostile input: read with
a bound (``MAX_FILE``), every length checked before slicing, and only ``ConfigError`` raised.
The public key in the file proves nothing by itself: ``push.relay_update`` accepts it only if its
key id is the bundle header's, and the hypervisor never sees it (it trusts its own keys).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from hv_emu.errors import ConfigError
from hv_emu.named_file import RefusedFile, read_named_file
from hv_emu.updates.packets import HEADER_LEN, MAX_DATAGRAM

#: The file's fixed header, field by field: (name, struct code, rule). Big-endian.
FILE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("magic", "4s", 'b"HVMF"'),
    ("file_version", "B", "1"),
    ("reserved", "B", "0"),
    ("key_len", "H", "bytes of the signer's public key that follow: 1 to 600"),
    ("manifest_len", "H", "bytes of the MANIFEST datagram after the key: 32 to 1472"),
)
_HEADER = struct.Struct(">" + "".join(code for _, code, _ in FILE_FIELDS))
MAGIC = b"HVMF"
FILE_VERSION = 1
#: The largest public key kept: an RSA-3072 DER SubjectPublicKeyInfo is 422 bytes, Ed25519 32.
MAX_KEY = 600
#: The largest file there can be; a longer one is refused after reading this many bytes + 1.
MAX_FILE = _HEADER.size + MAX_KEY + MAX_DATAGRAM
#: What ``guest-tool manifest`` appends to the bundle's name, and ``push`` looks for.
SUFFIX = ".manifest"


@dataclass(frozen=True)
class ManifestFile:
    """``public_key``: the raw public key a key id hashes (``format.raw_public_key``);
    ``datagram``: the signed MANIFEST exactly as it goes on the wire."""

    public_key: bytes
    datagram: bytes

    def to_bytes(self) -> bytes:
        head = _HEADER.pack(MAGIC, FILE_VERSION, 0, len(self.public_key), len(self.datagram))
        return head + self.public_key + self.datagram

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "manifest file") -> ManifestFile:
        """Check the framing (not the contents: ``push.relay_update`` does); ``ConfigError``."""

        def bad(what: str) -> ConfigError:
            return ConfigError(f"{source}: not a manifest file ({what})")

        if len(data) < _HEADER.size:
            raise bad(f"{len(data)} bytes, shorter than the {_HEADER.size}-byte header")
        if len(data) > MAX_FILE:
            raise bad(f"longer than {MAX_FILE} bytes")
        magic, version, reserved, key_len, manifest_len = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise bad(f"magic {magic!r}, expected {MAGIC!r}")
        if version != FILE_VERSION:
            raise bad(f"file_version {version}, this guest-tool reads {FILE_VERSION}")
        if reserved != 0:
            raise bad(f"reserved byte {reserved}, expected 0")
        if not 1 <= key_len <= MAX_KEY:
            raise bad(f"key_len {key_len}, expected 1 to {MAX_KEY}")
        if not HEADER_LEN <= manifest_len <= MAX_DATAGRAM:
            raise bad(f"manifest_len {manifest_len}, expected {HEADER_LEN} to {MAX_DATAGRAM}")
        declared = _HEADER.size + key_len + manifest_len
        if len(data) != declared:
            raise bad(f"{len(data)} bytes, the header declares {declared}")
        at = _HEADER.size
        return cls(bytes(data[at : at + key_len]), bytes(data[at + key_len :]))


def manifest_path(update: Path) -> Path:
    """``update.hvdb`` -> ``update.hvdb.manifest``."""
    return Path(f"{update}{SUFFIX}")


def read_manifest_file(path: Path) -> ManifestFile:
    """Read at most ``MAX_FILE + 1`` bytes of ``path`` (a regular file, or a link to one: never
    a FIFO or a device) and check the framing; ``ConfigError``."""
    try:
        data = read_named_file(path, MAX_FILE)
    except RefusedFile as err:
        raise ConfigError(f"cannot read manifest {path}: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read manifest {path}: {err.strerror}") from None
    return ManifestFile.from_bytes(data, str(path))


def write_manifest_file(path: Path, manifest: ManifestFile) -> None:
    try:
        Path(path).write_bytes(manifest.to_bytes())
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from None
