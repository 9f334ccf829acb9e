"""Ethernet/IPv4/UDP parse and build: round trips, every malformed-frame error, classification."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest

from hv_emu.errors import GuestFault
from hv_emu.net.frames import build_udp_frame, parse_udp_frame
from hv_emu.net.headers import (
    MIN_FRAME,
    EthernetError,
    EthernetHeader,
    FrameError,
    IPv4Error,
    IPv4Fragment,
    IPv4Header,
    UdpError,
    UdpHeader,
    VlanTagged,
    internet_checksum,
)
from hv_emu.net.intercept import Verdict, classify, peek_udp_dst_port

HV_IP = IPv4Address("10.0.2.250")
PORT = 0xDB00
SRC_MAC = bytes.fromhex("525400123456")
DST_MAC = bytes.fromhex("525400c0ffee")
IP = 14  # IPv4 header offset in an untagged frame
UDP = 34  # UDP header offset without options


def frame_of(payload: bytes = b"HVDB" + bytes(40), **kw: object) -> bytes:
    args: dict[str, object] = dict(
        src_mac=SRC_MAC,
        dst_mac=DST_MAC,
        src_ip="10.0.2.2",
        dst_ip=HV_IP,
        src_port=40000,
        dst_port=PORT,
        payload=payload,
    )
    args.update(kw)
    return build_udp_frame(**args)  # type: ignore[arg-type]


def patch(frame: bytes, offset: int, data: bytes, *, fix_ip: bool = True) -> bytes:
    """Overwrite bytes, then recompute the IPv4 header checksum (of a 20-byte header)."""
    out = bytearray(frame)
    out[offset : offset + len(data)] = data
    if fix_ip:
        ihl = (out[IP] & 0xF) * 4 if out[IP] & 0xF >= 5 else 20
        out[IP + 10 : IP + 12] = b"\0\0"
        out[IP + 10 : IP + 12] = struct.pack("!H", internet_checksum(bytes(out[IP : IP + ihl])))
    return bytes(out)


def with_udp_checksum(frame: bytes) -> bytes:
    dg_len = struct.unpack_from("!H", frame, IP + 2)[0] - 20
    seg = bytearray(frame[UDP : UDP + dg_len])
    seg[6:8] = b"\0\0"
    pseudo = frame[IP + 12 : IP + 20] + struct.pack("!BBH", 0, 17, len(seg))
    csum = internet_checksum(pseudo + bytes(seg)) or 0xFFFF
    return frame[: UDP + 6] + struct.pack("!H", csum) + frame[UDP + 8 :]


# ------------------------------------------------------------------------- round trips
def test_build_parse_round_trip() -> None:
    payload = bytes(range(256)) * 3
    dg = parse_udp_frame(frame_of(payload, src_port=1234, ttl=17))
    assert (dg.src_mac, dg.dst_mac) == (SRC_MAC, DST_MAC)
    assert (dg.src_ip, dg.dst_ip) == (IPv4Address("10.0.2.2"), HV_IP)
    assert (dg.src_port, dg.dst_port, dg.ttl) == (1234, PORT, 17)
    assert dg.payload == payload and type(dg.payload) is bytes
    assert dg.vlan_tci is None and dg.ip_options == b""


def test_short_frame_is_padded_and_padding_ignored() -> None:
    frame = frame_of(b"x")
    assert len(frame) == MIN_FRAME
    assert parse_udp_frame(frame).payload == b"x"
    assert len(frame_of(b"x", pad=False)) == 14 + 20 + 8 + 1


def test_vlan_frame_padded_before_tagging() -> None:
    # A switch may insert the tag after the sender padded to 60 bytes: 64 bytes, still valid.
    untagged = frame_of(b"x")
    tagged = untagged[:12] + b"\x81\x00\x00\x05" + untagged[12:]
    assert len(tagged) == 64
    assert parse_udp_frame(tagged, allow_vlan=True).payload == b"x"
    with pytest.raises(IPv4Error):
        parse_udp_frame(untagged + b"\0" * 4)


def test_headers_round_trip() -> None:
    eth = EthernetHeader(DST_MAC, SRC_MAC, 0x0800, vlan_tci=0x2005)
    assert EthernetHeader.from_bytes(eth.to_bytes()) == eth
    ip = IPv4Header(HV_IP, IPv4Address("1.2.3.4"), 17, 28, options=b"\x01\x01\x01\x00")
    ip = ip.with_checksum()
    assert IPv4Header.from_bytes(ip.to_bytes() + bytes(4)) == ip
    udp = UdpHeader(1, 2, 8, 0)
    assert UdpHeader.from_segment(udp.to_bytes(), HV_IP, HV_IP) == udp


def test_udp_checksum_zero_means_none() -> None:
    frame = frame_of(b"data", udp_checksum_on=False)
    assert frame[UDP + 6 : UDP + 8] == b"\0\0"
    assert parse_udp_frame(frame).payload == b"data"


def test_computed_zero_udp_checksum_is_sent_as_ffff() -> None:
    # Find a payload whose checksum folds to 0: it must go out as 0xFFFF (RFC 768).
    base = frame_of(b"\0\0", udp_checksum_on=False, pad=False)
    seg = base[UDP:]
    pseudo = base[IP + 12 : IP + 20] + struct.pack("!BBH", 0, 17, len(seg))
    need = internet_checksum(pseudo + seg)  # the two payload bytes that make the sum 0xFFFF
    frame = frame_of(struct.pack("!H", need), pad=False)
    assert frame[UDP + 6 : UDP + 8] == b"\xff\xff"
    assert parse_udp_frame(frame).payload == struct.pack("!H", need)


def test_vlan_reported_and_refused_unless_allowed() -> None:
    frame = frame_of(vlan_tci=0x0064)
    with pytest.raises(VlanTagged) as err:
        parse_udp_frame(frame)
    assert err.value.reason == "ethernet_vlan"
    assert parse_udp_frame(frame, allow_vlan=True).vlan_tci == 0x0064


def test_ip_options_reported() -> None:
    options = b"\x94\x04\x00\x00"  # Router Alert (RFC 2113)
    ip = IPv4Header(IPv4Address("10.0.2.2"), HV_IP, 17, 24 + 8 + 3, options=options)
    body = UdpHeader(5, PORT, 11, 0).to_bytes() + b"abc"
    frame = EthernetHeader(DST_MAC, SRC_MAC, 0x0800).to_bytes() + ip.with_checksum().to_bytes()
    dg = parse_udp_frame(frame + body)
    assert dg.ip_options == options and dg.payload == b"abc"
    assert classify(frame + body, HV_IP, PORT).reason == "ipv4_options"


def test_errors_carry_data_and_are_guest_faults() -> None:
    with pytest.raises(FrameError) as err:
        parse_udp_frame(frame_of()[:10])
    e = err.value
    assert isinstance(e, GuestFault) and isinstance(e, EthernetError)
    assert (e.layer, e.field) == ("ethernet", "length")
    assert (e.expected, e.got) == (">= 14 bytes", "10 bytes")
    assert str(e) == "ethernet: length: expected >= 14 bytes, got 10 bytes"


# ------------------------------------------------------------------------- malformed frames
GOOD = frame_of(bytes(100))
SHORT = frame_of(b"", pad=False)

MALFORMED: list[tuple[str, bytes, type[FrameError], str]] = [
    ("runt", GOOD[:13], EthernetError, "ethernet_truncated"),
    ("vlan tag cut", GOOD[:12] + b"\x81\x00\x00", EthernetError, "ethernet_truncated"),
    ("vlan", frame_of(vlan_tci=1), VlanTagged, "ethernet_vlan"),
    ("ipv6", GOOD[:12] + b"\x86\xdd" + GOOD[14:], EthernetError, "ethernet_not_ipv4"),
    ("arp", GOOD[:12] + b"\x08\x06" + GOOD[14:], EthernetError, "ethernet_not_ipv4"),
    ("ip cut", SHORT[: IP + 19], IPv4Error, "ipv4_truncated"),
    ("version 6", patch(GOOD, IP, b"\x65"), IPv4Error, "ipv4_bad_version"),
    ("ihl 4", patch(GOOD, IP, b"\x44"), IPv4Error, "ipv4_bad_ihl"),
    ("ihl 0", patch(GOOD, IP, b"\x40"), IPv4Error, "ipv4_bad_ihl"),
    ("ihl > total", patch(SHORT, IP, b"\x4f", fix_ip=False), IPv4Error, "ipv4_bad_length"),
    ("total < ihl", patch(GOOD, IP + 2, b"\x00\x13"), IPv4Error, "ipv4_bad_length"),
    ("total > frame", patch(GOOD, IP + 2, b"\x05\xdc"), IPv4Error, "ipv4_bad_length"),
    ("trailing junk", GOOD + b"junk", IPv4Error, "ipv4_bad_length"),
    (
        "ip checksum",
        patch(GOOD, IP + 10, b"\x12\x34", fix_ip=False),
        IPv4Error,
        "ipv4_bad_checksum",
    ),
    (
        "ip field flipped",
        patch(GOOD, IP + 8, b"\x01", fix_ip=False),
        IPv4Error,
        "ipv4_bad_checksum",
    ),
    ("more fragments", patch(GOOD, IP + 6, b"\x20\x00"), IPv4Fragment, "ipv4_fragment"),
    ("offset", patch(GOOD, IP + 6, b"\x00\x10"), IPv4Fragment, "ipv4_fragment"),
    ("tcp", patch(GOOD, IP + 9, b"\x06"), IPv4Error, "ipv4_not_udp"),
    ("udp cut", patch(SHORT, IP + 2, b"\x00\x18"), UdpError, "udp_truncated"),
    (
        "udp length short",
        with_udp_checksum(patch(GOOD, UDP + 4, b"\x00\x09")),
        UdpError,
        "udp_bad_length",
    ),
    ("udp length long", patch(GOOD, UDP + 4, b"\x00\xff"), UdpError, "udp_bad_length"),
    ("udp length < 8", patch(GOOD, UDP + 4, b"\x00\x07"), UdpError, "udp_bad_length"),
    ("udp checksum", patch(GOOD, UDP + 6, b"\x12\x34"), UdpError, "udp_bad_checksum"),
    ("payload flipped", patch(GOOD, UDP + 20, b"\xff"), UdpError, "udp_bad_checksum"),
]


@pytest.mark.parametrize(
    ("frame", "error", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_frames(frame: bytes, error: type[FrameError], reason: str) -> None:
    with pytest.raises(error) as err:
        parse_udp_frame(frame)
    assert err.value.reason == reason
    assert classify(frame, HV_IP, PORT).verdict is not Verdict.FOR_HYPERVISOR


def test_good_frame_parses() -> None:
    assert parse_udp_frame(GOOD).payload == bytes(100)


def test_build_rejects_caller_bugs() -> None:
    with pytest.raises(ValueError):
        frame_of(bytes(65508))
    with pytest.raises(ValueError):
        frame_of(src_mac=b"\0")
    with pytest.raises(ValueError):
        frame_of(dst_port=65536)


# ------------------------------------------------------------------------- classification
OTHER = IPv4Address("10.0.2.15")

CLASSIFY: list[tuple[str, bytes, Verdict, str]] = [
    ("update to hv", GOOD, Verdict.FOR_HYPERVISOR, "update"),
    ("update to hv, any MAC", frame_of(dst_mac=b"\x02" * 6), Verdict.FOR_HYPERVISOR, "update"),
    ("update, no checksum", frame_of(udp_checksum_on=False), Verdict.FOR_HYPERVISOR, "update"),
    ("hv, other port", frame_of(dst_port=53), Verdict.FOR_GUEST, "pass"),
    ("guest IP, update port", frame_of(dst_ip=OTHER), Verdict.FOR_GUEST, "pass"),
    ("broadcast (not configured)", frame_of(dst_ip="255.255.255.255"), Verdict.FOR_GUEST, "pass"),
    ("fragment to port", patch(GOOD, IP + 6, b"\x20\x00"), Verdict.DROP, "ipv4_fragment"),
    (
        "later fragment to hv",
        patch(frame_of(dst_port=53), IP + 6, b"\x00\x10"),
        Verdict.DROP,
        "ipv4_fragment",
    ),
    (
        "fragment to guest",
        patch(frame_of(dst_ip=OTHER), IP + 6, b"\x20\x00"),
        Verdict.FOR_GUEST,
        "pass",
    ),
    ("vlan to port", frame_of(vlan_tci=5), Verdict.DROP, "ethernet_vlan"),
    ("vlan other port", frame_of(vlan_tci=5, dst_port=53), Verdict.FOR_GUEST, "pass"),
    ("bad udp checksum", patch(GOOD, UDP + 6, b"\x12\x34"), Verdict.DROP, "udp_bad_checksum"),
    (
        "bad ip checksum",
        patch(GOOD, IP + 10, b"\0\1", fix_ip=False),
        Verdict.DROP,
        "ipv4_bad_checksum",
    ),
    ("bad ihl to hv", patch(GOOD, IP, b"\x44"), Verdict.DROP, "ipv4_bad_ihl"),
    (
        "bad checksum, other port",
        patch(frame_of(dst_port=53), UDP + 6, b"\1\1"),
        Verdict.FOR_GUEST,
        "pass",
    ),
    ("tcp to hv", patch(GOOD, IP + 9, b"\x06"), Verdict.FOR_GUEST, "pass"),
    ("arp", GOOD[:12] + b"\x08\x06" + GOOD[14:], Verdict.FOR_GUEST, "pass"),
    ("ipv6", GOOD[:12] + b"\x86\xdd" + GOOD[14:], Verdict.FOR_GUEST, "pass"),
    ("runt", GOOD[:10], Verdict.DROP, "ethernet_truncated"),
]


@pytest.mark.parametrize(
    ("frame", "verdict", "reason"), [c[1:] for c in CLASSIFY], ids=[c[0] for c in CLASSIFY]
)
def test_classify_table(frame: bytes, verdict: Verdict, reason: str) -> None:
    result = classify(frame, HV_IP, PORT)
    assert (result.verdict, result.reason) == (verdict, reason)
    assert (result.datagram is not None) == (verdict is Verdict.FOR_HYPERVISOR)


def test_classify_extra_destinations() -> None:
    bcast = frame_of(dst_ip="255.255.255.255", dst_mac=b"\xff" * 6)
    group = frame_of(dst_ip="239.255.0.1")
    extra = frozenset({IPv4Address("255.255.255.255"), IPv4Address("239.255.0.1")})
    for frame in (bcast, group):
        assert classify(frame, HV_IP, PORT, extra_dsts=extra).verdict is Verdict.FOR_HYPERVISOR


def test_peek() -> None:
    assert peek_udp_dst_port(GOOD) == (HV_IP.packed, PORT)
    assert peek_udp_dst_port(frame_of(vlan_tci=3)) == (HV_IP.packed, PORT)
    assert peek_udp_dst_port(patch(GOOD, IP + 6, b"\x00\x10")) == (HV_IP.packed, None)
    assert peek_udp_dst_port(patch(GOOD, IP + 9, b"\x06")) is None
    assert peek_udp_dst_port(GOOD[:20]) is None
