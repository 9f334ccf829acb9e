"""The update port's raw front path (``intercept.update_port_end``, ``frames.udp_intact``,
``NetSwitch``'s ``on_update_payload``) agrees with ``classify``: on arbitrary and mutated frames,
a frame it takes is one ``classify`` gives the hypervisor (the same payload) or drops only as
``udp_bad_checksum``, and a switch with the front path counts every frame as a switch without it
when its sink asks the checksum, delivering the same payloads."""

from __future__ import annotations

import collections
from collections.abc import Callable
from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.net.config import NetConfig
from hv_emu.net.frames import UdpDatagram, build_udp_frame, udp_intact
from hv_emu.net.intercept import Verdict, classify, update_port_end
from hv_emu.net.switch import NetSwitch

CFG = NetConfig()
PORT = CFG.update_port
OURS = frozenset({CFG.hv_ip.packed, *(a.packed for a in CFG.extra_dsts)})
MAC = bytes.fromhex("525400123456")


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """Frames to (mostly) the update port at our address, every header field a fuzz target, then
    up to three bytes changed anywhere (a broken checksum, length, version, port...)."""
    frame = bytearray(build_udp_frame(
        src_mac=MAC, dst_mac=CFG.hv_mac,
        src_ip=draw(st.integers(0, 2**32 - 1).map(IPv4Address)),
        dst_ip=draw(st.sampled_from([CFG.hv_ip, CFG.hv_ip, IPv4Address("10.0.2.15")])),
        src_port=draw(st.integers(0, 0xFFFF)), dst_port=draw(st.sampled_from([PORT, PORT, 53])),
        payload=draw(st.binary(max_size=300)),
        vlan_tci=draw(st.none() | st.none() | st.none() | st.integers(0, 0xFFFF)),
        udp_checksum_on=draw(st.booleans()), pad=draw(st.booleans()),
    ))  # fmt: skip
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(frame) - 1) | st.integers(12, min(len(frame), 42) - 1))
        frame[at] = draw(st.integers(0, 255))
    frame += draw(st.sampled_from([b"", b"", b"", b"\0" * 8, b"junk" * 20]))  # padding or junk
    return bytes(frame[: draw(st.integers(0, len(frame)) | st.just(len(frame)))])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_the_front_path_settles_only_what_classify_gives_the_hypervisor(frame: bytes) -> None:
    end = update_port_end(frame, OURS, PORT.to_bytes(2, "big"))
    want = classify(frame, CFG.hv_ip, PORT, extra_dsts=CFG.extra_dsts)
    if not end:
        return  # classify decides such a frame: the switch never took another path for it
    if udp_intact(frame, end):
        assert want.verdict is Verdict.FOR_HYPERVISOR
        assert want.datagram is not None and want.datagram.payload == frame[42:end]
    else:
        assert (want.verdict, want.reason) == (Verdict.DROP, "udp_bad_checksum")


def test_the_front_path_takes_the_common_frame() -> None:
    frame = build_udp_frame(src_mac=MAC, dst_mac=CFG.hv_mac, src_ip="10.0.2.2", dst_ip=CFG.hv_ip,
                            src_port=1, dst_port=PORT, payload=b"HVDB" * 20)
    end = update_port_end(frame, OURS, PORT.to_bytes(2, "big"))
    assert end == len(frame) and udp_intact(frame, end)
    broken = bytearray(frame)
    broken[-1] ^= 1
    assert not udp_intact(bytes(broken), end)
    assert update_port_end(frame[:-1], OURS, PORT.to_bytes(2, "big")) == 0  # length mismatch


def switches() -> tuple[NetSwitch, list[bytes], NetSwitch, list[bytes]]:
    fast_got: list[bytes] = []
    slow_got: list[bytes] = []

    def payload_sink(payload: bytes, intact: Callable[[], bool]) -> bool:
        if not intact():
            return False
        fast_got.append(payload)
        return True

    def datagram_sink(d: UdpDatagram) -> None:
        slow_got.append(d.payload)

    def sink(f: bytes) -> None:
        pass

    fast = NetSwitch(CFG, to_guest=sink, to_wire=sink, on_update_datagram=datagram_sink,
                     on_update_payload=payload_sink)
    slow = NetSwitch(CFG, to_guest=sink, to_wire=sink, on_update_datagram=datagram_sink)
    return fast, fast_got, slow, slow_got


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), max_size=20))
def test_a_switch_with_the_front_path_counts_as_one_without(batch: list[bytes]) -> None:
    fast, fast_got, slow, slow_got = switches()
    for frame in batch:
        a, b = fast.from_wire(frame), slow.from_wire(frame)
        assert (a.verdict, a.reason) == (b.verdict, b.reason)
    assert fast.counters == slow.counters
    assert fast_got == slow_got


def test_bad_checksums_are_counted_by_the_switch() -> None:
    fast, fast_got, _, _ = switches()
    good = build_udp_frame(src_mac=MAC, dst_mac=CFG.hv_mac, src_ip="10.0.2.2", dst_ip=CFG.hv_ip,
                           src_port=1, dst_port=PORT, payload=b"x" * 100)
    bad = bytearray(good)
    bad[50] ^= 0xFF
    for frame in (good, bytes(bad), good):
        fast.from_wire(frame)
    assert fast.counters == collections.Counter(
        {"from_wire.for_hypervisor": 2, "from_wire.drop.udp_bad_checksum": 1})
    assert fast_got == [good[42:]] * 2
