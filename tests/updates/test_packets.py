"""The update packets' stateless parser: every documented rejection, round trips, Hypothesis
(only ``PacketError`` ever escapes) and scapy as an independent packet builder."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.errors import GuestFault
from hv_emu.updates.format import HEADER_SIZE
from hv_emu.updates.packet_errors import (
    BadFlags,
    BadMagic,
    BadManifest,
    BadReserved,
    BadType,
    BadVersion,
    IndexOutOfRange,
    LengthMismatch,
    Oversize,
    PacketError,
    Truncated,
)
from hv_emu.updates.packets import (
    HASHES_PER_PAGE,
    HEADER_LEN,
    MAX_DATAGRAM,
    PAGE_SYMBOL_SIZE,
    WORK_SIZE,
    Manifest,
    Packet,
    PacketType,
    commitment,
    digest,
    has_work,
    max_pages,
    page_count_for,
    parse_packet,
    top_count,
)
from tests.rigs.netupdate import encoded

UPDATE = encoded(7, lines=300)


def header(*, magic: bytes = b"HVDB", version: int = 2, ptype: int = 3, flags: int = 0,
           uid: int = 1, dbv: int = 7, index: int = 0, count: int = 1, plen: int = 0,
           reserved: int = 0) -> bytes:
    return struct.pack(">4sBBHIQIIHH", magic, version, ptype, flags, uid, dbv, index, count,
                       plen, reserved)


def test_header_is_32_bytes_and_round_trips() -> None:
    packet = Packet.build(PacketType.SYMBOL, 0xC0FFEE01, 27345, 3, 10, b"x" * 5)
    assert HEADER_LEN == 32 and len(packet.raw) == 37
    parsed = parse_packet(packet.raw)
    assert parsed == packet


@pytest.mark.parametrize("size", [0, 1, 31])
def test_truncated(size: int) -> None:
    with pytest.raises(Truncated):
        parse_packet(header()[:size])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (header(magic=b"HVDX"), BadMagic),
        (header(version=0), BadVersion),
        (header(version=1), BadVersion),
        (header(version=255), BadVersion),
        (header(ptype=0), BadType),
        (header(ptype=4), BadType),
        (header(ptype=255), BadType),
        (header(flags=1), BadFlags),
        (header(flags=0x8000), BadFlags),
        (header(reserved=1), BadReserved),
        (header(plen=1), LengthMismatch),  # claims more than present
        (header() + b"x", LengthMismatch),  # trailing byte
        (header(index=1, count=1), IndexOutOfRange),
        (header(index=2**32 - 1, count=5), IndexOutOfRange),
        (header(index=0, count=0), IndexOutOfRange),
        (header(plen=MAX_DATAGRAM - 31) + bytes(MAX_DATAGRAM - 31), Oversize),
    ],
)
def test_each_rule_has_its_error(raw: bytes, error: type[PacketError]) -> None:
    with pytest.raises(error) as caught:
        parse_packet(raw)
    assert caught.value.reason == error.reason


def test_manifest_round_trips_and_commits_to_every_page() -> None:
    packet = parse_packet(UPDATE.manifest)
    manifest = Manifest.from_payload(packet.header, packet.payload)
    assert manifest.to_payload() == packet.payload
    assert manifest.page_count == page_count_for(manifest.symbol_count)
    assert manifest.page_symbols == 2 * manifest.page_count + 1 == len(UPDATE.pages)
    assert manifest.symbol_count == len(UPDATE.symbols) >= manifest.source_symbols
    assert has_work(digest(UPDATE.manifest)) and len(manifest.work) == WORK_SIZE
    stream = b"".join(commitment(s[HEADER_LEN:]) for s in UPDATE.symbols)
    for number, page in enumerate(UPDATE.pages):
        p = parse_packet(page)
        assert p.header.index == number and p.header.count == manifest.page_symbols
        assert len(p.payload) == PAGE_SYMBOL_SIZE
        assert commitment(p.payload) == manifest.page_hashes[number]
        if number < manifest.page_count:  # systematic: the hash pages themselves, zero-padded
            assert p.payload == stream[number * PAGE_SYMBOL_SIZE :][:PAGE_SYMBOL_SIZE].ljust(
                PAGE_SYMBOL_SIZE, b"\0")


def _manifest_with(**changes: int) -> tuple[Packet, bytes]:
    """The genuine manifest with fields of its FEC block (offset 80) changed."""
    packet = parse_packet(UPDATE.manifest)
    payload = bytearray(packet.payload)
    fec = dict(zip(("fec", "hash", "pages", "size", "count", "block", "blocks"),
                   struct.unpack_from(">BBHIIHH", payload, HEADER_SIZE), strict=True))
    fec.update(changes)
    struct.pack_into(">BBHIIHH", payload, HEADER_SIZE, *fec.values())
    return packet, bytes(payload)


@pytest.mark.parametrize(
    "changes",
    [{"fec": 0}, {"hash": 1}, {"size": 0}, {"size": 1433}, {"size": 1401}, {"count": 1},
     {"pages": 2}, {"pages": 7000, "count": 7000 * HASHES_PER_PAGE},
     {"block": 0}, {"block": 4097}, {"blocks": 2}, {"blocks": 0}, {"block": 1, "blocks": 2}],
)
def test_inconsistent_manifest_is_refused_before_crypto(changes: dict[str, int]) -> None:
    packet, payload = _manifest_with(**changes)
    with pytest.raises(BadManifest):
        Manifest.from_payload(packet.header, payload)


def test_manifest_header_mismatch_and_length() -> None:
    packet = parse_packet(UPDATE.manifest)
    other = Packet.build(PacketType.MANIFEST, 1, 8, 0, 1, packet.payload).header
    with pytest.raises(BadManifest):  # db_version differs from the bundle header's
        Manifest.from_payload(other, packet.payload)
    with pytest.raises(LengthMismatch):
        Manifest.from_payload(packet.header, packet.payload + b"\0")
    with pytest.raises(BadManifest):
        Manifest.from_payload(packet.header, b"HVDB" + bytes(100))


def test_page_capacity() -> None:
    # 1,440 payload bytes less the bundle header, FEC fields, two signatures and the work stamp.
    assert max_pages(64) == 75 and max_pages(384) == 35
    assert top_count(37, 64) == 75 and top_count(38, 64) == 1  # 2P + 1 page symbols, or index


# ------------------------------------------------------------------------------ Hypothesis
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1600))
def test_random_bytes_raise_only_packet_errors(data: bytes) -> None:
    try:
        packet = parse_packet(data)
    except PacketError:
        return
    if packet.header.type is PacketType.MANIFEST:
        with contextlib.suppress(PacketError):
            Manifest.from_payload(packet.header, packet.payload)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from([UPDATE.manifest, UPDATE.pages[0], UPDATE.symbols[0]])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(base) - 1))
        base[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(base)))
    return bytes(base[:cut]) if draw(st.booleans()) else bytes(base)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_packets_raise_only_documented_guest_faults(data: bytes) -> None:
    try:
        packet = parse_packet(data)
        if packet.header.type is PacketType.MANIFEST:
            Manifest.from_payload(packet.header, packet.payload)
    except PacketError as err:
        assert isinstance(err, GuestFault) and err.reason in {
            "truncated", "oversize", "length_mismatch", "bad_magic", "bad_version", "bad_type",
            "bad_flags", "bad_reserved", "index_oob", "bad_manifest",
        }


# ------------------------------------------------------------------------------ scapy
def test_scapy_built_packet_parses_like_ours() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    fields = scapy_all
    class Hvdb(scapy_all.Packet):  # an independent description of the header, from the doc
        name = "HVDB"
        fields_desc = [  # noqa: RUF012 - scapy's own class attribute
            fields.StrFixedLenField("magic", b"HVDB", 4), fields.ByteField("version", 2),
            fields.ByteField("type", 3), fields.ShortField("flags", 0),
            fields.IntField("update_id", 0), fields.LongField("db_version", 0),
            fields.IntField("index", 0), fields.IntField("count", 1),
            fields.ShortField("payload_len", None), fields.ShortField("reserved", 0),
        ]

        def post_build(self, pkt: bytes, pay: bytes) -> bytes:
            if self.payload_len is None:
                pkt = pkt[:28] + struct.pack(">H", len(pay)) + pkt[30:]
            return pkt + pay

    raw = bytes(Hvdb(update_id=0xABCDEF01, db_version=9, index=4, count=10) / b"payload")
    packet = parse_packet(raw)
    assert (packet.header.type, packet.header.update_id, packet.header.db_version) == (
        PacketType.SYMBOL, 0xABCDEF01, 9)
    assert (packet.header.index, packet.header.count, packet.payload) == (4, 10, b"payload")
    ours = Hvdb(UPDATE.symbols[5])  # and scapy reads ours the same way
    assert (ours.index, ours.count, ours.payload_len) == (5, len(UPDATE.symbols), 1404)
