"""The netapi-style switch: interception, egress filter, cut-off, counters, capture tap; and one
end-to-end run over two loopback UDP backends with a pcap capture."""

from __future__ import annotations

import io
import select
import struct
from ipaddress import IPv4Address

import pytest

from hv_emu.errors import UpdateRejected
from hv_emu.layout import HV_IPV4, HV_MAC, UPDATE_UDP_PORT
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import UdpDatagram, build_udp_frame
from hv_emu.net.headers import internet_checksum
from hv_emu.net.intercept import Verdict
from hv_emu.net.pcap import PcapWriter, read_pcap
from hv_emu.net.switch import ArpError, ArpPacket, Direction, NetSwitch, arp_reply_to

GUEST_MAC = bytes.fromhex("525400123456")
PEER_MAC = bytes.fromhex("02000000aa01")
GUEST_IP = "10.0.2.15"
PEER_IP = "10.0.2.2"


def udp(
    *,
    src_mac: bytes = PEER_MAC,
    dst_mac: bytes = HV_MAC,
    src_ip: str = PEER_IP,
    dst_ip: str = HV_IPV4,
    dport: int = UPDATE_UDP_PORT,
    payload: bytes = b"HVDB" + bytes(28),
) -> bytes:
    return build_udp_frame(
        src_mac=src_mac,
        dst_mac=dst_mac,
        src_ip=src_ip,
        dst_ip=dst_ip,
        src_port=40000,
        dst_port=dport,
        payload=payload,
    )


def fragment(frame: bytes) -> bytes:
    """Set MF and fix the IPv4 header checksum."""
    header = frame[14:20] + b"\x20\x00" + frame[22:24] + b"\0\0" + frame[26:34]
    csum = internet_checksum(header).to_bytes(2, "big")
    return frame[:14] + header[:10] + csum + header[12:] + frame[34:]


def arp(op: int, sha: bytes, spa: str, tpa: str, *, htype: int = 1, dst: bytes = b"") -> bytes:
    """An Ethernet/IPv4 ARP frame (RFC 826) sent from ``sha``."""
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        htype,
        0x0800,
        6,
        4,
        op,
        sha,
        IPv4Address(spa).packed,
        bytes(6),
        IPv4Address(tpa).packed,
    )
    return ((dst or b"\xff" * 6) + sha + b"\x08\x06" + body).ljust(60, b"\0")


def arp_reply(sender_ip: str) -> bytes:
    """An ARP is-at from the guest's MAC claiming ``sender_ip``."""
    return arp(2, GUEST_MAC, sender_ip, PEER_IP, dst=PEER_MAC)


class Harness:
    def __init__(self, config: NetConfig | None = None) -> None:
        self.guest: list[bytes] = []
        self.wire: list[bytes] = []
        self.updates: list[UdpDatagram] = []
        self.tapped: list[tuple[Direction, bytes]] = []
        self.switch = NetSwitch(
            config or NetConfig(),
            to_guest=self.guest.append,
            to_wire=self.wire.append,
            on_update_datagram=self.updates.append,
            tap=lambda d, f: self.tapped.append((d, f)),
        )


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_update_goes_to_hypervisor_only(h: Harness) -> None:
    result = h.switch.from_wire(udp())
    assert result.verdict is Verdict.FOR_HYPERVISOR
    assert h.guest == [] and len(h.updates) == 1
    assert h.updates[0].payload == b"HVDB" + bytes(28)
    assert h.switch.counters["from_wire.for_hypervisor"] == 1


def test_broadcast_update_is_consumed_by_default(h: Harness) -> None:
    h.switch.from_wire(udp(dst_ip="255.255.255.255", dst_mac=b"\xff" * 6))
    assert h.guest == [] and len(h.updates) == 1


def test_other_traffic_goes_to_guest(h: Harness) -> None:
    frames = [
        udp(dport=53),
        udp(dst_ip=GUEST_IP, dst_mac=GUEST_MAC),
        b"\xff" * 12 + b"\x08\x06" + bytes(46),
    ]
    for f in frames:
        assert h.switch.from_wire(f).verdict is Verdict.FOR_GUEST
    assert h.guest == frames and h.updates == []
    assert h.switch.counters["from_wire.for_guest"] == 3


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (fragment(udp()), "ipv4_fragment"),
        (udp()[:40] + b"\xde\xad" + udp()[42:], "udp_bad_checksum"),
        (udp()[:8], "ethernet_truncated"),
    ],
    ids=["fragment", "bad checksum", "runt"],
)
def test_bad_update_frames_are_dropped_and_counted(h: Harness, frame: bytes, reason: str) -> None:
    assert h.switch.from_wire(frame).reason == reason
    assert h.guest == [] and h.updates == []
    assert h.switch.counters[f"from_wire.drop.{reason}"] == 1


def test_guest_frames_go_out(h: Harness) -> None:
    frame = udp(src_mac=GUEST_MAC, src_ip=GUEST_IP, dst_ip=PEER_IP, dst_mac=PEER_MAC, dport=53)
    assert h.switch.from_guest(frame).verdict is Verdict.FOR_WIRE
    assert h.switch.from_guest(arp_reply(GUEST_IP)).verdict is Verdict.FOR_WIRE
    assert h.wire == [frame, arp_reply(GUEST_IP)]
    assert h.switch.counters["from_guest.for_wire"] == 2


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (udp(src_mac=GUEST_MAC, src_ip=GUEST_IP), "egress_update_port"),
        (udp(src_mac=GUEST_MAC, src_ip=GUEST_IP, dst_ip="10.9.9.9"), "egress_update_port"),
        (udp(src_mac=GUEST_MAC, src_ip=GUEST_IP, dst_ip="255.255.255.255"), "egress_update_port"),
        (udp(src_mac=HV_MAC, src_ip=GUEST_IP, dport=53), "spoofed_hv_mac"),
        (udp(src_mac=GUEST_MAC, src_ip=HV_IPV4, dport=53), "spoofed_hv_ip"),
        (arp_reply(HV_IPV4), "spoofed_hv_ip"),
        (b"\x01" * 10, "ethernet_truncated"),
    ],
    ids=["to hv", "to another host", "broadcast", "hv mac", "hv ip", "arp spoof", "runt"],
)
def test_egress_filter(h: Harness, frame: bytes, reason: str) -> None:
    result = h.switch.from_guest(frame)
    assert (result.verdict, result.reason) == (Verdict.DROP, reason)
    assert h.wire == []
    assert h.switch.counters[f"from_guest.drop.{reason}"] == 1


def test_cut_takes_the_guest_offline_but_not_the_hypervisor(h: Harness) -> None:
    h.switch.cut = True
    assert h.switch.from_wire(udp(dport=53)).reason == "cut"
    guest_frame = udp(src_mac=GUEST_MAC, src_ip=GUEST_IP, dst_ip=PEER_IP, dport=53)
    assert h.switch.from_guest(guest_frame).reason == "cut"
    assert h.switch.from_wire(udp()).verdict is Verdict.FOR_HYPERVISOR
    h.switch.send_from_hypervisor(b"nack" * 15)
    assert h.guest == [] and h.wire == [b"nack" * 15] and len(h.updates) == 1
    assert h.switch.counters["from_wire.drop.cut"] == 1
    assert h.switch.counters["from_guest.drop.cut"] == 1
    h.switch.cut = False
    h.switch.from_guest(guest_frame)
    assert h.wire[-1] == guest_frame


def test_tap_sees_every_frame_with_its_direction(h: Harness) -> None:
    inbound, outbound = udp(), udp(src_mac=GUEST_MAC, src_ip=GUEST_IP)
    h.switch.from_wire(inbound)
    h.switch.from_guest(outbound)  # dropped, but still captured
    h.switch.send_from_hypervisor(b"x" * 60)
    assert h.tapped == [
        (Direction.FROM_WIRE, inbound),
        (Direction.FROM_GUEST, outbound),
        (Direction.FROM_HYPERVISOR, b"x" * 60),
    ]


def test_rejected_update_is_counted_not_raised() -> None:
    def reject(dg: UdpDatagram) -> None:
        raise UpdateRejected(1, "bad magic")

    switch = NetSwitch(
        NetConfig(), to_guest=lambda f: None, to_wire=lambda f: None, on_update_datagram=reject
    )
    switch.from_wire(udp())
    assert switch.counters["from_wire.update_rejected"] == 1


def test_custom_config() -> None:
    cfg = NetConfig(hv_ip=IPv4Address("192.168.7.7"), update_port=7777, extra_dsts=frozenset())
    h = Harness(cfg)
    h.switch.from_wire(udp(dst_ip="192.168.7.7", dport=7777))
    h.switch.from_wire(udp())  # the default address is now an ordinary host
    h.switch.from_wire(udp(dst_ip="255.255.255.255", dport=7777))
    assert len(h.updates) == 1 and len(h.guest) == 2


def test_end_to_end_over_loopback_with_capture() -> None:
    """A sender on one UDP backend, the hypervisor's switch on another, capture in pcap."""
    sender = UdpBackend(("127.0.0.1", 0))
    phys = UdpBackend(("127.0.0.1", 0), peer=sender.local_address)
    sender.peer = phys.local_address
    cap = io.BytesIO()
    writer = PcapWriter(cap, clock_us=lambda: 1_000_000)
    h = Harness()
    switch = NetSwitch(
        NetConfig(),
        to_guest=h.guest.append,
        to_wire=phys.send_frame,
        on_update_datagram=h.updates.append,
        tap=lambda d, f: writer.write(f),
    )
    try:
        sent = [udp(), udp(dport=53), fragment(udp())]
        for f in sent:
            sender.send_frame(f)
        received: list[bytes] = []
        while len(received) < len(sent) and select.select([phys.fileno()], [], [], 5.0)[0]:
            received += phys.recv_frames(8)
        for f in received:
            switch.from_wire(f)
        switch.from_guest(udp(src_mac=GUEST_MAC, src_ip=GUEST_IP, dst_ip=PEER_IP, dport=53))
        select.select([sender.fileno()], [], [], 5.0)
        echoed = sender.recv_frames(8)
    finally:
        sender.close()
        phys.close()
    assert received == sent
    assert [d.dst_port for d in h.updates] == [UPDATE_UDP_PORT]
    assert h.guest == [sent[1]]
    assert len(echoed) == 1
    assert [r.data for r in read_pcap(io.BytesIO(cap.getvalue()))] == [*sent, echoed[0]]


# ------------------------------------------------------------------------- ARP
def test_arp_who_has_hypervisor_is_answered(h: Harness) -> None:
    request = arp(1, PEER_MAC, PEER_IP, HV_IPV4)
    assert h.switch.from_wire(request).verdict is Verdict.FOR_GUEST
    assert h.guest == [request]  # ARP goes to both, as in ippassfilter
    (reply,) = h.wire
    assert len(reply) == 60 and reply[:12] == PEER_MAC + HV_MAC and reply[12:14] == b"\x08\x06"
    packet = ArpPacket.from_bytes(reply[14:])
    assert packet == ArpPacket(2, HV_MAC, IPv4Address(HV_IPV4), PEER_MAC, IPv4Address(PEER_IP))
    assert packet.to_bytes() == reply[14:42]
    assert h.switch.counters["from_wire.arp_answered"] == 1
    assert h.tapped[-1] == (Direction.FROM_HYPERVISOR, reply)


def test_arp_answered_even_when_cut(h: Harness) -> None:
    h.switch.cut = True
    h.switch.from_wire(arp(1, PEER_MAC, PEER_IP, HV_IPV4))
    assert h.guest == [] and len(h.wire) == 1


@pytest.mark.parametrize(
    "frame",
    [
        arp(1, PEER_MAC, PEER_IP, GUEST_IP),  # someone else's address
        arp(2, PEER_MAC, PEER_IP, HV_IPV4),  # a reply, not a request
        arp(1, b"\x01" + PEER_MAC[1:], PEER_IP, HV_IPV4),  # multicast requester
        arp(1, PEER_MAC, HV_IPV4, HV_IPV4),  # requester claims our address
        arp(1, PEER_MAC, PEER_IP, HV_IPV4, htype=6),  # not Ethernet
        arp(1, PEER_MAC, PEER_IP, HV_IPV4)[:30],  # truncated
    ],
    ids=["other ip", "reply", "multicast sha", "claims hv ip", "htype 6", "truncated"],
)
def test_arp_not_answered(h: Harness, frame: bytes) -> None:
    h.switch.from_wire(frame)
    assert h.wire == [] and h.guest == [frame]


def test_arp_answering_can_be_turned_off() -> None:
    h = Harness(NetConfig(answer_arp=False))
    h.switch.from_wire(arp(1, PEER_MAC, PEER_IP, HV_IPV4))
    assert h.wire == []


def test_arp_errors() -> None:
    with pytest.raises(ArpError) as err:
        ArpPacket.from_bytes(bytes(27))
    assert err.value.reason == "arp_truncated"
    with pytest.raises(ArpError) as err:
        ArpPacket.from_bytes(arp(1, PEER_MAC, PEER_IP, HV_IPV4, htype=6)[14:])
    assert err.value.reason == "arp_unsupported"


def test_scapy_reads_our_arp_reply() -> None:
    scapy_all = pytest.importorskip("scapy.all")
    request = scapy_all.Ether(src="02:00:00:00:aa:01", dst="ff:ff:ff:ff:ff:ff") / scapy_all.ARP(
        op=1, hwsrc="02:00:00:00:aa:01", psrc=PEER_IP, pdst=HV_IPV4
    )
    reply = arp_reply_to(bytes(request), HV_MAC, IPv4Address(HV_IPV4))
    assert reply is not None
    pkt = scapy_all.Ether(reply)
    assert pkt[scapy_all.ARP].op == 2 and pkt[scapy_all.ARP].psrc == HV_IPV4
    assert pkt[scapy_all.ARP].hwsrc == "52:54:00:c0:ff:ee" and pkt[scapy_all.ARP].pdst == PEER_IP
    assert pkt.dst == "02:00:00:00:aa:01"
