"""Hostile input: random and mutated frames only ever raise FrameError, and the update port at the
hypervisor's address never leaks to the guest (nor guest frames to that port to the wire), whatever
the bytes."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.net.config import NetConfig
from hv_emu.net.frames import UdpDatagram, build_udp_frame, parse_udp_frame
from hv_emu.net.headers import FrameError
from hv_emu.net.intercept import Verdict, classify, peek_udp_dst_port
from hv_emu.net.switch import NetSwitch

HV_IP = IPv4Address("10.0.2.250")
PORT = 0xDB00
MAC_A = bytes.fromhex("525400123456")
MAC_B = bytes.fromhex("525400c0ffee")

ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)
ports = st.integers(min_value=0, max_value=0xFFFF)
macs = st.binary(min_size=6, max_size=6)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    return build_udp_frame(
        src_mac=draw(macs),
        dst_mac=draw(macs),
        src_ip=draw(ipv4s),
        dst_ip=draw(st.sampled_from([HV_IP, IPv4Address("10.0.2.15")]) | ipv4s),
        src_port=draw(ports),
        dst_port=draw(st.sampled_from([PORT, 53]) | ports),
        payload=draw(st.binary(max_size=300)),
        vlan_tci=draw(st.none() | st.integers(0, 0xFFFF)),
        udp_checksum_on=draw(st.booleans()),
        pad=draw(st.booleans()),
    )


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(valid_frames()))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["set", "truncate", "extend"]))
        if action == "set" and frame:
            at = draw(st.integers(0, min(len(frame) - 1, 60)))  # mostly headers
            frame[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del frame[draw(st.integers(0, len(frame))) :]
        else:
            frame += draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


def check_invariants(frame: bytes) -> None:
    try:
        dg = parse_udp_frame(frame, allow_vlan=True)
    except FrameError:
        dg = None
    result = classify(frame, HV_IP, PORT)
    assert result.verdict in Verdict
    # The update port at the hypervisor's address never reaches the guest.
    if dg is not None and dg.dst_ip == HV_IP and dg.dst_port == PORT:
        assert result.verdict is not Verdict.FOR_GUEST
    peek = peek_udp_dst_port(frame)
    if peek is not None and peek == (HV_IP.packed, PORT):
        assert result.verdict is not Verdict.FOR_GUEST
    if result.verdict is Verdict.FOR_HYPERVISOR:
        assert result.datagram is not None and result.datagram.dst_port == PORT


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_udp_frame(data)
    check_invariants(data)


@settings(max_examples=300)
@given(st.binary(min_size=12, max_size=12), st.binary(max_size=120))
def test_random_ipv4_bodies(macs12: bytes, body: bytes) -> None:
    frame = macs12 + b"\x08\x00" + body
    with contextlib.suppress(FrameError):
        parse_udp_frame(frame)
    check_invariants(frame)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_mutated_frames_raise_only_frame_error(frame: bytes) -> None:
    with contextlib.suppress(FrameError):
        parse_udp_frame(frame)
    check_invariants(frame)


@given(valid_frames())
def test_valid_frames_round_trip(frame: bytes) -> None:
    dg = parse_udp_frame(frame, allow_vlan=True)
    again = build_udp_frame(
        src_mac=dg.src_mac,
        dst_mac=dg.dst_mac,
        src_ip=dg.src_ip,
        dst_ip=dg.dst_ip,
        src_port=dg.src_port,
        dst_port=dg.dst_port,
        payload=dg.payload,
        vlan_tci=dg.vlan_tci,
    )
    assert parse_udp_frame(again, allow_vlan=True) == dg
    check_invariants(frame)


# ------------------------------------------------------------------------- the switch
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mutated_frames() | valid_frames() | st.binary(max_size=80), max_size=6), st.booleans()
)
def test_switch_never_leaks_the_update_port(frames: list[bytes], cut: bool) -> None:
    to_guest: list[bytes] = []
    to_wire: list[bytes] = []
    updates: list[UdpDatagram] = []
    cfg = NetConfig(hv_ip=HV_IP, update_port=PORT)
    switch = NetSwitch(
        cfg, to_guest=to_guest.append, to_wire=to_wire.append, on_update_datagram=updates.append
    )
    switch.cut = cut
    for frame in frames:
        switch.from_wire(frame)
        switch.from_guest(frame)
    for frame in to_guest:
        assert peek_udp_dst_port(frame) not in {(HV_IP.packed, PORT), (b"\xff" * 4, PORT)}
    for frame in to_wire:  # the egress filter: nothing from the guest to the update port
        peek = peek_udp_dst_port(frame)
        assert peek is None or peek[1] != PORT
    assert all(d.dst_port == PORT for d in updates)
    if cut:
        assert to_guest == [] and to_wire == []
    verdicts = [
        k
        for k in switch.counters
        if k.startswith(("from_wire.", "from_guest.")) and k != "from_wire.arp_answered"
    ]
    assert sum(switch.counters[k] for k in verdicts) == 2 * len(frames)
