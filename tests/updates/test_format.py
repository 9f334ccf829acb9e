"""The update bundle layout: round trips, every malformed case, key ids, and the doc's tables."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.format import (
    DOMAIN,
    FIELDS,
    FORMAT_VERSION,
    HEADER_SIZE,
    MAGIC,
    BundleHeader,
    ContentType,
    SigAlg,
    key_id_of,
    parse_bundle,
    signature_length,
    signing_message,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "UPDATE-FORMAT.md"
BODY = b"Hv.Demo-1:0:*:deadbeefcafe\n"
#: The worked example of docs/UPDATE-FORMAT.md.
EXAMPLE_SEED = bytes(range(32))
EXAMPLE_ISSUED = 1767225600
EXAMPLE_EXPIRES = EXAMPLE_ISSUED + 30 * 86400


def make_header(body: bytes = BODY, **changes: object) -> BundleHeader:
    header = BundleHeader(
        db_version=7,
        issued_at=1000,
        expires_at=2000,
        key_id=b"K" * 8,
        sig_alg=SigAlg.ED25519,
        content_type=ContentType.NDB,
        body_len=len(body),
        body_sha256=hashlib.sha256(body).digest(),
    )
    return dataclasses.replace(header, **changes)  # type: ignore[arg-type]


def patched(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    """``data`` with one big-endian field overwritten."""
    out = bytearray(data)
    struct.pack_into(">" + fmt, out, offset, value)
    return bytes(out)


def rejected(data: bytes) -> UpdateRejected:
    with pytest.raises(UpdateRejected) as info:
        parse_bundle(data)
    assert info.value.code == Rc.MALFORMED
    return info.value


def test_header_is_80_bytes_and_round_trips() -> None:
    header = make_header()
    raw = header.to_bytes()
    assert HEADER_SIZE == 80 == len(raw)
    assert raw[:4] == MAGIC
    assert BundleHeader.from_bytes(raw) == header
    assert header.kind == "ndb"


def test_parse_bundle_splits_header_and_body() -> None:
    header = make_header()
    parsed, body = parse_bundle(header.to_bytes() + BODY)
    assert parsed == header
    assert body == BODY


def test_empty_body_is_well_formed() -> None:
    header = make_header(b"")
    assert parse_bundle(header.to_bytes()) == (header, b"")


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "reason"),
    [
        (0, "4s", b"HVDC", "magic"),
        (4, "H", FORMAT_VERSION + 1, "format version 2"),
        (6, "H", 96, "header_len is 96"),
        (8, "Q", 0, "db_version is 0"),
        (24, "Q", 1000, "not after issued_at"),
        (41, "B", 3, "unknown content type 3"),
        (41, "B", 0, "unknown content type 0"),
        (42, "H", 1, "reserved"),
    ],
)
def test_each_malformed_field_is_named(offset: int, fmt: str, value: object, reason: str) -> None:
    good = make_header().to_bytes() + BODY
    assert reason in rejected(patched(good, offset, fmt, value)).reason


def test_unknown_sig_alg_is_not_malformed_but_untrusted() -> None:
    data = patched(make_header().to_bytes() + BODY, 40, "B", 9)
    header, _ = parse_bundle(data)
    assert header.sig_alg == 9
    with pytest.raises(UpdateRejected) as info:
        signature_length(header.sig_alg)
    assert info.value.code == Rc.UNTRUSTED_KEY


@pytest.mark.parametrize("length", [0, 1, 4, 79])
def test_short_header(length: int) -> None:
    assert "shorter than the 80-byte header" in rejected(make_header().to_bytes()[:length]).reason


def test_truncated_body() -> None:
    assert "truncated" in rejected(make_header().to_bytes() + BODY[:-1]).reason


def test_trailing_bytes() -> None:
    assert "1 trailing bytes" in rejected(make_header().to_bytes() + BODY + b"\0").reason


def test_signature_lengths() -> None:
    assert signature_length(SigAlg.ED25519) == 64
    assert signature_length(SigAlg.RSA_PSS_3072) == 384
    for unknown in (0, 3, 255):
        with pytest.raises(UpdateRejected) as info:
            signature_length(unknown)
        assert info.value.code == Rc.UNTRUSTED_KEY


def test_content_type_kinds() -> None:
    assert ContentType.DB.kind == "db"
    assert ContentType.NDB.kind == "ndb"
    assert ContentType.from_kind("db") is ContentType.DB
    assert ContentType.from_kind("ndb") is ContentType.NDB
    with pytest.raises(ConfigError, match="hdb"):
        ContentType.from_kind("hdb")


def test_key_id_of_ed25519_hashes_the_raw_key() -> None:
    public = Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED).public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(b"hv-emu key id v1\x00" + raw).digest()[:8]
    assert key_id_of(public) == expected
    assert expected.hex() == "da9165ce3b0027bb"  # the key id quoted in the doc


def test_key_id_of_rsa_hashes_the_der_spki() -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert key_id_of(public) == hashlib.sha256(b"hv-emu key id v1\x00" + der).digest()[:8]


def test_signing_message_is_domain_separated() -> None:
    raw = make_header().to_bytes()
    assert DOMAIN == b"hv-emu update v1\x00"
    assert signing_message(raw) == DOMAIN + raw


# --------------------------------------------------------------------------- hostile input


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_random_bytes_only_rejects_as_malformed(data: bytes) -> None:
    try:
        header, body = parse_bundle(data)
    except UpdateRejected as exc:
        assert exc.code == Rc.MALFORMED
    else:
        assert len(data) == HEADER_SIZE + header.body_len == HEADER_SIZE + len(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=76, max_size=120), st.integers(0, 40))
def test_parse_plausible_headers_only_rejects_as_malformed(tail: bytes, body_len: int) -> None:
    # A valid magic/version/header_len so that the deeper checks are reached.
    data = bytearray(MAGIC + struct.pack(">HH", FORMAT_VERSION, HEADER_SIZE) + tail)
    struct.pack_into(">I", data, 44, body_len)
    try:
        header, body = parse_bundle(bytes(data))
    except UpdateRejected as exc:
        assert exc.code == Rc.MALFORMED
    else:
        assert header.body_len == len(body) == body_len
        assert BundleHeader.from_bytes(header.to_bytes()) == header


# --------------------------------------------------------------------------- the doc agrees


def doc_table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after ``heading`` in the doc."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1]
    table: list[list[str]] = []
    for line in section.splitlines():
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
        elif table:
            break
    return table[2:]  # skip the head and the --- row


def doc_block(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{marker} -->\n```\n(.*?)```", text, re.DOTALL)
    assert match, marker
    return match.group(1)


def hexdump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = (
            " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        )
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<48}  |{text}|")
    return "\n".join(lines) + "\n"


def test_doc_header_table_matches_the_struct() -> None:
    rows = doc_table("Header")
    offset = 0
    assert [row[2] for row in rows] == [name for name, _, _ in FIELDS]
    for row, (name, code, _) in zip(rows, FIELDS, strict=True):
        size = struct.calcsize(">" + code)
        assert (int(row[0]), int(row[1])) == (offset, size), name
        doc_type = row[3]
        assert doc_type == code if code.endswith("s") else doc_type == f"u{size * 8}", name
        offset += size
    assert offset == HEADER_SIZE


def test_doc_codes_agree_with_abi() -> None:
    rows = doc_table("Check order")
    assert rows, "no check table in the doc"
    for row in rows:
        name, number = row[2].strip("`"), int(row[3])
        assert Rc[name] == number, row
    listed = {row[2].strip("`") for row in rows}
    every_rejection = {rc.name for rc in Rc if 2 <= rc <= 7}
    assert listed == every_rejection


def test_doc_worked_example_is_what_the_code_produces() -> None:
    # Imported here: the publisher's side is another package, only the example needs it.
    from guest_tool.bundle import make_bundle

    bundle, signature = make_bundle(
        BODY,
        kind="ndb",
        version=7,
        private_key=Ed25519PrivateKey.from_private_bytes(EXAMPLE_SEED),
        issued_at=EXAMPLE_ISSUED,
        expires_at=EXAMPLE_EXPIRES,
    )
    assert doc_block("bundle") == hexdump(bundle)
    assert doc_block("signature") == hexdump(signature)
