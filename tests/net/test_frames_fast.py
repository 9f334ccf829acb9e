"""The fast path of ``classify`` and ``parse_udp_frame`` (one unpack of the fixed prefix, checksums
by ``int.from_bytes``) agrees with the layer-by-layer path on arbitrary and mutated frames: the same
verdict and reason, the same datagram, the same error. The checksum agrees with RFC 1071's loop."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.net import frames, intercept
from hv_emu.net.frames import UdpDatagram, build_udp_frame, parse_udp_frame
from hv_emu.net.headers import FrameError, internet_checksum, ones_complement_residue
from hv_emu.net.intercept import classify

HV_IP = IPv4Address("10.0.2.250")
PORT = 0xDB00
OURS = frozenset({HV_IP.packed})
MAC = bytes.fromhex("525400123456")


def rfc1071(data: bytes, initial: int = 0) -> int:
    """The checksum as RFC 1071 writes it: add the words, fold the carries, complement."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@st.composite
def update_frames(draw: st.DrawFn) -> bytes:
    """Frames aimed at the update port (most of them), with every header field a fuzz target."""
    return build_udp_frame(
        src_mac=MAC,
        dst_mac=MAC,
        src_ip=draw(st.integers(0, 2**32 - 1).map(IPv4Address)),
        dst_ip=draw(st.sampled_from([HV_IP, IPv4Address("10.0.2.15")])),
        src_port=draw(st.integers(0, 0xFFFF)),
        dst_port=draw(st.sampled_from([PORT, PORT, 53])),
        payload=draw(st.binary(max_size=200)),
        vlan_tci=draw(st.none() | st.none() | st.integers(0, 0xFFFF)),
        udp_checksum_on=draw(st.booleans()),
        pad=draw(st.booleans()),
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(update_frames()))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["set", "flip", "truncate", "extend"]))
        if action == "set" and frame:
            at = draw(st.integers(0, min(len(frame) - 1, 50)))  # the headers, mostly
            frame[at] = draw(st.integers(0, 255))
        elif action == "flip" and frame:
            bit = draw(st.integers(0, 8 * len(frame) - 1))  # anywhere, payload included
            frame[bit // 8] ^= 1 << (bit % 8)
        elif action == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
        else:
            frame += draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


def layered(frame: bytes) -> UdpDatagram | tuple[type[FrameError], str]:
    try:
        return frames.parse_layers(frame, True)
    except FrameError as err:
        return type(err), str(err)


def fast(frame: bytes) -> UdpDatagram | tuple[type[FrameError], str]:
    try:
        return parse_udp_frame(frame, allow_vlan=True)
    except FrameError as err:
        return type(err), str(err)


def agree(frame: bytes) -> None:
    assert fast(frame) == layered(frame)
    got = classify(frame, HV_IP, PORT)
    want = intercept._classify_layers(frame, OURS, PORT) if len(frame) >= 14 else got
    assert (got.verdict, got.reason, got.datagram) == (want.verdict, want.reason, want.datagram)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fast_path_agrees_on_mutated_frames(frame: bytes) -> None:
    agree(frame)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fast_path_agrees_on_arbitrary_bytes(data: bytes) -> None:
    agree(data)
    agree(MAC + MAC + b"\x08\x00\x45" + data)  # an IPv4 header without options, then anything


@settings(max_examples=300)
@given(st.binary(max_size=600), st.integers(0, 0x3FFFF))
def test_checksum_agrees_with_rfc1071(data: bytes, initial: int) -> None:
    assert internet_checksum(data, initial) == rfc1071(data, initial)
    assert ones_complement_residue(data) == (~rfc1071(data) & 0xFFFF) % 0xFFFF


def test_checksum_edge_cases() -> None:
    for data in (b"", b"\0", b"\0\0", b"\xff\xff", b"\xff\xff" * 3, b"\xff", b"\x00\x01" * 9):
        assert internet_checksum(data) == rfc1071(data)


def test_fast_path_drops_bad_checksums_without_the_full_parser() -> None:
    frame = bytearray(
        build_udp_frame(src_mac=MAC, dst_mac=MAC, src_ip="10.0.2.2", dst_ip=HV_IP,
                        src_port=5, dst_port=PORT, payload=b"x" * 41)
    )  # fmt: skip
    assert classify(bytes(frame), HV_IP, PORT).reason == "update"
    frame[-1] ^= 1  # the payload: the UDP checksum fails
    assert classify(bytes(frame), HV_IP, PORT).reason == "udp_bad_checksum"
    agree(bytes(frame))
    frame[-1] ^= 1
    frame[14 + 8] ^= 1  # the TTL: the header checksum fails
    assert classify(bytes(frame), HV_IP, PORT).reason == "ipv4_bad_checksum"
    agree(bytes(frame))
