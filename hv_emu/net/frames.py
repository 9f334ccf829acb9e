"""Ethernet II / IPv4 / UDP frames: the UDP frame parser and builder.

Models: the bottom of the hypervisor's network path. ``parse_udp_frame`` turns a frame into a
``UdpDatagram`` or raises one ``FrameError`` naming the layer, field, expected and got values;
``build_udp_frame`` makes one (the publisher's tools and the tests). The common frame (untagged,
IPv4 without options, UDP) is read on a fast path first (``plain_udp``): one ``struct`` unpack of
the 42-byte prefix decides it, and the checksums are each one ``int.from_bytes`` and a remainder
modulo 0xFFFF, with no object built before they pass; every other frame, and every error, goes
layer by layer (``parse_layers``, with the headers of ``headers.py``; a Hypothesis test holds the
two paths equal). Where a frame goes is decided by ``intercept.py``.

Follows: IEEE 802.3 (Ethernet II framing, 60-byte minimum frame without FCS), IEEE 802.1Q (the
4-byte VLAN tag), RFC 791 (IPv4 header), RFC 768 (UDP, pseudo-header checksum, 0 = no checksum),
RFC 1071 (the Internet checksum).

Leaves out: the FCS (QEMU frames carry none), IPv6, IPv4 reassembly (never: fragments are reported
and dropped on the update path), IPv4 option parsing (options are carried as bytes and reported),
802.3 length/LLC frames (ethertype < 0x600 is "not IPv4"), QinQ (an 0x88A8 outer tag is not IPv4).

Network controls: every byte of the frame. Threat table:

| Threat                                         | Mitigation                                      |
|------------------------------------------------|-------------------------------------------------|
| Truncated frame at any layer                   | length checked before each ``unpack``           |
| Length fields larger than the frame            | compared with ``len(frame)`` before slicing     |
| IHL < 5, or IHL beyond the total length        | ``IPv4Error`` before options are sliced         |
| Trailing junk after the IP datagram            | only Ethernet padding up to 60 bytes allowed    |
| Forged header / UDP checksum                   | both verified (UDP when non-zero)               |
| Fragments (reassembly memory, overlap tricks)  | reported as ``IPv4Fragment``, never reassembled |
| VLAN tag hiding an update datagram from policy | tag reported; ``intercept.py`` drops it        |
| Huge frames (CPU)                              | work is one pass over at most the frame         |
| Aliasing of the caller's buffer                | the payload is copied to ``bytes`` once         |
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from hv_emu.net.headers import (
    ETH_LEN,
    ETHERTYPE_IPV4,
    ETHERTYPE_VLAN,
    IPPROTO_UDP,
    IPV4_FLAG_MF,
    IPV4_LEN,
    IPV4_OFF_SRC,
    IPV4_OFFSET_MASK,
    MAX_IPV4_TOTAL,
    MIN_FRAME,
    PLAIN_PREFIX,
    PLAIN_VIHL,
    UDP_LEN,
    EthernetError,
    EthernetHeader,
    IPv4Error,
    IPv4Fragment,
    IPv4Header,
    UdpHeader,
    VlanTagged,
    ones_complement_residue,
    udp_checksum,
)


# ------------------------------------------------------------------------------------ datagram
@dataclass(frozen=True)
class UdpDatagram:
    """One UDP datagram taken from a frame; ``payload`` is a private copy."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: IPv4Address
    dst_ip: IPv4Address
    src_port: int
    dst_port: int
    payload: bytes
    vlan_tci: int | None = None
    ip_options: bytes = b""
    ttl: int = 64


def parse_udp_frame(frame: bytes, *, allow_vlan: bool = False) -> UdpDatagram:
    """Ethernet II -> IPv4 -> UDP, every check of the module docstring; raises ``FrameError``.

    An 802.1Q tag raises ``VlanTagged`` unless ``allow_vlan`` (then it is reported in the result).
    IPv4 options are accepted and reported in ``ip_options``; policy decides (``classify`` drops).
    """
    frame = bytes(frame)  # one copy: the caller's buffer cannot change under the checks
    if len(frame) >= PLAIN_PREFIX.size:
        plain = plain_udp(frame, PLAIN_PREFIX.unpack_from(frame))
        if isinstance(plain, UdpDatagram):
            return plain
    return parse_layers(frame, allow_vlan)


def plain_udp(frame: bytes, fields: tuple[Any, ...]) -> UdpDatagram | str | None:
    """The fast path of ``parse_udp_frame`` for the common frame: untagged Ethernet II, IPv4
    without options, not a fragment, UDP, every length consistent (``fields``: ``PLAIN_PREFIX``
    unpacked from ``frame``). Returns the datagram when every check of the full parser passes,
    the drop reason when only a checksum fails (these are the first failing checks then), and
    None for any other frame: the full parser (``parse_layers``) decides those. No object is
    built before the checksums pass; each checksum is one ``int.from_bytes`` and one remainder."""
    # fmt: off
    (dst_mac, src_mac, ethertype, vihl, _tos, total, _ident, ff, ttl, proto, _ipsum, src, dst,
     sport, dport, ulen, usum) = fields
    # fmt: on
    n = len(frame)
    if (
        ethertype != ETHERTYPE_IPV4 or vihl != PLAIN_VIHL or proto != IPPROTO_UDP
        or ff & (IPV4_FLAG_MF | IPV4_OFFSET_MASK)
        or ulen != total - IPV4_LEN or ulen < UDP_LEN  # total >= 28 and the UDP length fits
        or ETH_LEN + total > n or n > max(MIN_FRAME, ETH_LEN + total)
    ):  # fmt: skip
        return None
    # Header checksum: the sum over the header, its checksum included, is 0xFFFF (never 0 here:
    # the version byte is not zero), i.e. 0 modulo 0xFFFF.
    if ones_complement_residue(frame[ETH_LEN : ETH_LEN + IPV4_LEN]):
        return "ipv4_bad_checksum"
    end = ETH_LEN + total
    # UDP checksum: the pseudo-header (addresses, protocol, length) and the segment, checksum
    # field included, sum to 0xFFFF (0 modulo 0xFFFF); the addresses and the segment are
    # contiguous in the frame. The protocol word makes the sum non-zero, so the residue is exact.
    if usum and (ones_complement_residue(frame[ETH_LEN + IPV4_OFF_SRC : end])
                 + IPPROTO_UDP + ulen) % 0xFFFF:  # fmt: skip
        return "udp_bad_checksum"
    # fmt: off
    return UdpDatagram(src_mac, dst_mac, IPv4Address(src), IPv4Address(dst), sport, dport,
                       frame[PLAIN_PREFIX.size : end], None, b"", ttl)
    # fmt: on


def udp_intact(frame: bytes, end: int) -> bool:
    """The UDP checksum of a common frame (``PLAIN_PREFIX``, IPv4 without options) whose IPv4
    datagram ends at ``end``, as ``plain_udp`` checks it: True when it is 0 (none sent) or right.
    The caller has checked the shape and the lengths (``intercept.update_port_end``)."""
    if frame[40] == 0 and frame[41] == 0:
        return True
    residue = ones_complement_residue(frame[ETH_LEN + IPV4_OFF_SRC : end])
    return (residue + IPPROTO_UDP + end - ETH_LEN - IPV4_LEN) % 0xFFFF == 0


def parse_layers(frame: bytes, allow_vlan: bool) -> UdpDatagram:
    """``parse_udp_frame`` layer by layer: every frame, with the precise ``FrameError``."""
    eth = EthernetHeader.from_bytes(frame)
    if eth.vlan_tci is not None and not allow_vlan:
        raise VlanTagged(
            "ethernet", "ethertype", f"{ETHERTYPE_IPV4:#06x}", f"{ETHERTYPE_VLAN:#06x}", "vlan"
        )
    if eth.ethertype != ETHERTYPE_IPV4:
        raise EthernetError(
            "ethernet", "ethertype", f"{ETHERTYPE_IPV4:#06x}", f"{eth.ethertype:#06x}", "not_ipv4"
        )
    rest = frame[eth.size :]
    ip = IPv4Header.from_bytes(rest)
    # Padding may fill the frame to 60 bytes, counted before a VLAN tag was inserted (802.1Q).
    if len(frame) > max(MIN_FRAME + eth.size - ETH_LEN, eth.size + ip.total_length):
        raise IPv4Error(
            "ipv4", "total_length", f"{len(rest)} (frame)", str(ip.total_length), "bad_length"
        )
    if ip.is_fragment:
        raise IPv4Fragment(
            "ipv4", "flags_fragment", "no MF, offset 0", f"{ip.flags_fragment:#06x}", "fragment"
        )
    if ip.protocol != IPPROTO_UDP:
        raise IPv4Error("ipv4", "protocol", str(IPPROTO_UDP), str(ip.protocol), "not_udp")
    segment = rest[ip.header_length : ip.total_length]
    udp = UdpHeader.from_segment(segment, ip.src, ip.dst)
    # fmt: off
    return UdpDatagram(eth.src, eth.dst, ip.src, ip.dst, udp.src_port, udp.dst_port,
                       segment[UDP_LEN :], eth.vlan_tci, ip.options, ip.ttl)
    # fmt: on


def build_udp_frame(
    *,
    src_mac: bytes,
    dst_mac: bytes,
    src_ip: IPv4Address | str,
    dst_ip: IPv4Address | str,
    src_port: int,
    dst_port: int,
    payload: bytes,
    ttl: int = 64,
    identification: int = 0,
    udp_checksum_on: bool = True,
    vlan_tci: int | None = None,
    pad: bool = True,
) -> bytes:
    """An Ethernet II / IPv4 (DF, no options) / UDP frame with both checksums computed.

    ``pad`` fills the frame to the 60-byte minimum (IEEE 802.3). Raises ``ValueError`` (a bug of
    the caller, not the network's fault) for bad MACs, ports or a payload over 65507 bytes.
    """
    if len(src_mac) != 6 or len(dst_mac) != 6:
        raise ValueError("MAC addresses are 6 bytes")
    if not (0 <= src_port <= 0xFFFF and 0 <= dst_port <= 0xFFFF):
        raise ValueError("UDP ports are 16-bit")
    src, dst = IPv4Address(src_ip), IPv4Address(dst_ip)
    udp_len = UDP_LEN + len(payload)
    total = IPV4_LEN + udp_len
    if total > MAX_IPV4_TOTAL:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit one IPv4 datagram")
    body = UdpHeader(src_port, dst_port, udp_len).to_bytes() + payload
    if udp_checksum_on:
        csum = udp_checksum(src, dst, body)
        body = UdpHeader(src_port, dst_port, udp_len, csum).to_bytes() + payload
    ip = IPv4Header(src, dst, IPPROTO_UDP, total, ttl, identification).with_checksum()
    frame = EthernetHeader(dst_mac, src_mac, ETHERTYPE_IPV4, vlan_tci).to_bytes()
    frame += ip.to_bytes() + body
    return frame.ljust(MIN_FRAME, b"\0") if pad else frame
