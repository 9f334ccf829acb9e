"""Differential tests against scapy: it reads our frames (and recomputes the same checksums), we
read its frames, bad checksums, options and fragments. Skipped when scapy is not installed."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.net.frames import build_udp_frame, parse_udp_frame
from hv_emu.net.headers import FrameError, IPv4Fragment
from hv_emu.net.intercept import Verdict, classify

scapy_all = pytest.importorskip("scapy.all")
Ether, Dot1Q, IP, UDP, Raw = (
    scapy_all.Ether,
    scapy_all.Dot1Q,
    scapy_all.IP,
    scapy_all.UDP,
    scapy_all.Raw,
)

HV_IP = IPv4Address("10.0.2.250")
PORT = 0xDB00
MAC_A = bytes.fromhex("525400123456")
MAC_B = bytes.fromhex("525400c0ffee")
ipv4s = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)
ports = st.integers(min_value=0, max_value=0xFFFF)


@settings(max_examples=60, deadline=None)
@given(ipv4s, ipv4s, ports, ports, st.binary(max_size=200), st.integers(1, 255))
def test_scapy_reads_our_frames(
    src: IPv4Address, dst: IPv4Address, sport: int, dport: int, payload: bytes, ttl: int
) -> None:
    frame = build_udp_frame(
        src_mac=MAC_A,
        dst_mac=MAC_B,
        src_ip=src,
        dst_ip=dst,
        src_port=sport,
        dst_port=dport,
        payload=payload,
        ttl=ttl,
    )
    pkt = Ether(frame)
    assert (pkt[IP].src, pkt[IP].dst, pkt[IP].ttl) == (str(src), str(dst), ttl)
    assert (pkt[UDP].sport, pkt[UDP].dport, pkt[UDP].len) == (sport, dport, 8 + len(payload))
    assert bytes(pkt[UDP].payload)[: len(payload)] == payload
    fresh = pkt.copy()
    del fresh[IP].chksum
    del fresh[UDP].chksum
    rebuilt = Ether(bytes(fresh))
    assert rebuilt[IP].chksum == pkt[IP].chksum
    assert rebuilt[UDP].chksum == pkt[UDP].chksum


@settings(max_examples=60, deadline=None)
@given(ipv4s, ipv4s, ports, ports, st.binary(max_size=200), st.booleans())
def test_we_read_scapy_frames(
    src: IPv4Address, dst: IPv4Address, sport: int, dport: int, payload: bytes, vlan: bool
) -> None:
    inner = IP(src=str(src), dst=str(dst)) / UDP(sport=sport, dport=dport) / Raw(payload)
    eth = Ether(src="52:54:00:12:34:56", dst="52:54:00:c0:ff:ee")
    pkt = eth / Dot1Q(vlan=7) / inner if vlan else eth / inner
    dg = parse_udp_frame(bytes(pkt), allow_vlan=True)
    assert (dg.src_ip, dg.dst_ip, dg.src_port, dg.dst_port) == (src, dst, sport, dport)
    assert dg.payload == payload
    assert dg.vlan_tci == (7 if vlan else None)


def test_scapy_bad_checksums_options_and_fragments() -> None:
    eth = Ether(src="52:54:00:12:34:56", dst="52:54:00:c0:ff:ee")
    udp = UDP(sport=1, dport=PORT)
    with pytest.raises(FrameError) as err:
        parse_udp_frame(bytes(eth / IP(dst=str(HV_IP), chksum=0x1234) / udp / b"x"))
    assert err.value.reason == "ipv4_bad_checksum"
    with pytest.raises(FrameError) as err:
        parse_udp_frame(bytes(eth / IP(dst=str(HV_IP)) / UDP(sport=1, dport=PORT, chksum=7) / b"x"))
    assert err.value.reason == "udp_bad_checksum"
    no_sum = eth / IP(dst=str(HV_IP)) / UDP(sport=1, dport=PORT, chksum=0) / b"x"
    assert parse_udp_frame(bytes(no_sum)).payload == b"x"
    opts = eth / IP(dst=str(HV_IP), options=[scapy_all.IPOption_RR(routers=["1.2.3.4"])]) / udp
    dg = parse_udp_frame(bytes(opts / b"hello"))
    assert dg.payload == b"hello" and len(dg.ip_options) % 4 == 0 and dg.ip_options
    assert classify(bytes(opts / b"hello"), HV_IP, PORT).verdict is Verdict.DROP
    big = IP(dst=str(HV_IP)) / udp / (b"A" * 3000)
    for piece in scapy_all.fragment(big, fragsize=1000):
        frame = bytes(eth / piece)
        with pytest.raises(IPv4Fragment):
            parse_udp_frame(frame)
        assert classify(frame, HV_IP, PORT).reason == "ipv4_fragment"
