"""Ethernet II, IPv4 and UDP headers: their fields, their checks, the Internet checksum.

Models: the three headers of the hypervisor's network path as frozen dataclasses, each with a
``from_bytes`` (``from_segment`` for UDP) that checks its own layer and raises one ``FrameError``
naming the layer, field, expected and got values, and a ``to_bytes``; the RFC 1071 checksum
(``internet_checksum``, and ``ones_complement_residue`` for the fast path); the wire constants
and offsets the fast path and ``intercept.py`` read frames with. The frame parser and builder
that put the layers together are ``frames.py``.

Follows: IEEE 802.3 (Ethernet II framing, 60-byte minimum frame without FCS), IEEE 802.1Q (the
4-byte VLAN tag), RFC 791 (IPv4 header), RFC 768 (UDP, pseudo-header checksum, 0 = no checksum),
RFC 1071 (the Internet checksum).

Leaves out: the FCS, IPv6, IPv4 option parsing (options are carried as bytes), 802.3 length/LLC
frames, QinQ (``frames.py`` says how each is treated).

Network controls: every byte a header is parsed from. Each ``from_bytes`` checks the length
before each ``unpack`` and compares every length field with the bytes it was given before
slicing (IHL < 5, IHL or total length beyond the data, a UDP length other than the segment's);
both checksums are verified (UDP when non-zero); the work is one pass over at most the data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from ipaddress import IPv4Address

from hv_emu.errors import GuestFault

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
IPPROTO_UDP = 17
#: Minimum Ethernet frame without its 4-byte FCS (IEEE 802.3: 64 bytes on the wire).
MIN_FRAME = 60
IPV4_FLAG_DF = 0x4000
IPV4_FLAG_MF = 0x2000
IPV4_OFFSET_MASK = 0x1FFF
MAX_IPV4_TOTAL = 0xFFFF

_ETH = struct.Struct("!6s6sH")  # dst, src, ethertype
_VLAN = struct.Struct("!HH")  # TCI, inner ethertype
#: ver/ihl, tos, total length, id, flags/fragment offset, ttl, protocol, checksum, src, dst
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")  # sport, dport, length, checksum
_PSEUDO = struct.Struct("!4s4sBBH")  # RFC 768 pseudo-header
#: Header sizes: Ethernet II, an 802.1Q tag, IPv4 without options, UDP.
ETH_LEN, VLAN_LEN, IPV4_LEN, UDP_LEN = _ETH.size, _VLAN.size, _IPV4.size, _UDP.size
#: The fixed prefix of an untagged Ethernet II / IPv4 without options / UDP frame, read at once
#: by the fast path of ``classify`` and ``parse_udp_frame`` (42 bytes: _ETH + _IPV4 + _UDP).
PLAIN_PREFIX = struct.Struct("!6s6sHBBHHHBBH4s4sHHHH")
PLAIN_VIHL = 0x45  # version 4, IHL 5: no options
#: Named offsets inside the IPv4 header (RFC 791 3.1).
IPV4_OFF_PROTO = 9
IPV4_OFF_SRC = 12
IPV4_OFF_DST = 16
#: Named offset of the destination port inside the UDP header (RFC 768).
UDP_OFF_DPORT = 2


# ------------------------------------------------------------------------------------ errors
class FrameError(GuestFault):
    """A frame the hypervisor refuses; ``reason`` is the short name used by drop counters."""

    def __init__(self, layer: str, fld: str, expected: str, got: str, reason: str) -> None:
        self.layer = layer
        self.field = fld
        self.expected = expected
        self.got = got
        self.reason = f"{layer}_{reason}"
        super().__init__(f"{layer}: {fld}: expected {expected}, got {got}")


class EthernetError(FrameError):
    """A bad Ethernet II header (truncated frame or tag, wrong ethertype)."""


class VlanTagged(EthernetError):
    """An 802.1Q-tagged frame where untagged was required (policy decides)."""


class IPv4Error(FrameError):
    """A bad IPv4 header: version, IHL, total length, checksum, protocol."""


class IPv4Fragment(IPv4Error):
    """A fragment (MF set or offset != 0): reported, never reassembled."""


class UdpError(FrameError):
    """A bad UDP header: truncated, length or checksum."""


def _truncated(cls: type[FrameError], layer: str, need: int, got: int) -> FrameError:
    return cls(layer, "length", f">= {need} bytes", f"{got} bytes", "truncated")


# ------------------------------------------------------------------------------------ checksum
def ones_complement_residue(data: bytes) -> int:
    """The RFC 1071 sum of ``data``'s 16-bit big-endian words (odd length padded with a zero
    byte), modulo 0xFFFF: since 2**16 = 1 (mod 0xFFFF), that is ``int.from_bytes(data) % 0xFFFF``,
    one C-speed pass instead of a Python loop over the words. The folded one's-complement sum is
    this residue, except that a residue of 0 is 0xFFFF unless every word is zero."""
    value = int.from_bytes(data, "big")
    return (value << 8 if len(data) % 2 else value) % 0xFFFF


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 one's-complement checksum of ``data`` (odd length padded with a zero byte)."""
    value = int.from_bytes(data, "big")
    total = initial + (value << 8 if len(data) % 2 else value)
    folded = total % 0xFFFF or (0xFFFF if total else 0)
    return ~folded & 0xFFFF


def udp_checksum(src: IPv4Address, dst: IPv4Address, segment: bytes) -> int:
    """RFC 768 checksum of a UDP ``segment`` (its checksum field zeroed); 0 is sent as 0xFFFF."""
    pseudo = _PSEUDO.pack(src.packed, dst.packed, 0, IPPROTO_UDP, len(segment))
    csum = internet_checksum(pseudo + segment)
    return csum or 0xFFFF


# ------------------------------------------------------------------------------------ headers
@dataclass(frozen=True)
class EthernetHeader:
    """Ethernet II header, with the 802.1Q tag reported (``vlan_tci``) when present."""

    dst: bytes
    src: bytes
    ethertype: int  # the inner ethertype when tagged
    vlan_tci: int | None = None

    @property
    def size(self) -> int:
        return _ETH.size + (_VLAN.size if self.vlan_tci is not None else 0)

    @classmethod
    def from_bytes(cls, frame: bytes) -> EthernetHeader:
        if len(frame) < _ETH.size:
            raise _truncated(EthernetError, "ethernet", _ETH.size, len(frame))
        dst, src, ethertype = _ETH.unpack_from(frame)
        if ethertype != ETHERTYPE_VLAN:
            return cls(dst, src, ethertype)
        if len(frame) < _ETH.size + _VLAN.size:
            raise _truncated(EthernetError, "ethernet", _ETH.size + _VLAN.size, len(frame))
        tci, inner = _VLAN.unpack_from(frame, _ETH.size)
        return cls(dst, src, inner, tci)

    def to_bytes(self) -> bytes:
        if self.vlan_tci is None:
            return _ETH.pack(self.dst, self.src, self.ethertype)
        return _ETH.pack(self.dst, self.src, ETHERTYPE_VLAN) + _VLAN.pack(
            self.vlan_tci, self.ethertype
        )


@dataclass(frozen=True)
class IPv4Header:
    """RFC 791 header. ``from_bytes`` checks version, IHL, total length and the checksum."""

    src: IPv4Address
    dst: IPv4Address
    protocol: int
    total_length: int
    ttl: int = 64
    identification: int = 0
    flags_fragment: int = IPV4_FLAG_DF  # 3 flag bits + 13-bit offset (8-byte units)
    tos: int = 0
    checksum: int = 0
    options: bytes = b""

    @property
    def header_length(self) -> int:
        return _IPV4.size + len(self.options)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_fragment & (IPV4_FLAG_MF | IPV4_OFFSET_MASK))

    @classmethod
    def from_bytes(cls, data: bytes) -> IPv4Header:
        """Parse the header at the start of ``data`` (the rest of the frame, padding included)."""
        if len(data) < _IPV4.size:
            raise _truncated(IPv4Error, "ipv4", _IPV4.size, len(data))
        vihl, tos, total, ident, ff, ttl, proto, csum, src, dst = _IPV4.unpack_from(data)
        if vihl >> 4 != 4:
            raise IPv4Error("ipv4", "version", "4", str(vihl >> 4), "bad_version")
        hlen = (vihl & 0xF) * 4
        if hlen < _IPV4.size:
            raise IPv4Error("ipv4", "ihl", ">= 5", str(hlen // 4), "bad_ihl")
        if total < hlen:
            raise IPv4Error("ipv4", "total_length", f">= {hlen}", str(total), "bad_length")
        if total > len(data):
            raise IPv4Error(
                "ipv4", "total_length", f"<= {len(data)} (frame)", str(total), "bad_length"
            )
        if internet_checksum(data[:hlen]) != 0:
            want = internet_checksum(data[:10] + b"\0\0" + data[12:hlen])
            raise IPv4Error("ipv4", "checksum", f"{want:#06x}", f"{csum:#06x}", "bad_checksum")
        # fmt: off
        return cls(IPv4Address(src), IPv4Address(dst), proto, total, ttl, ident, ff, tos, csum,
                   bytes(data[_IPV4.size : hlen]))
        # fmt: on

    def to_bytes(self) -> bytes:
        """Serialise with the stored checksum (see ``with_checksum``)."""
        if len(self.options) % 4 or len(self.options) > 40:
            raise ValueError("IPv4 options must be a multiple of 4 bytes, at most 40")
        vihl = 0x40 | (self.header_length // 4)
        # fmt: off
        return _IPV4.pack(vihl, self.tos, self.total_length, self.identification,
                          self.flags_fragment, self.ttl, self.protocol, self.checksum,
                          self.src.packed, self.dst.packed) + self.options
        # fmt: on

    def with_checksum(self) -> IPv4Header:
        """A copy whose checksum field is correct for its other fields."""
        return replace(self, checksum=internet_checksum(replace(self, checksum=0).to_bytes()))


@dataclass(frozen=True)
class UdpHeader:
    """RFC 768 header; ``length`` covers header and payload."""

    src_port: int
    dst_port: int
    length: int
    checksum: int = 0

    @classmethod
    def from_segment(cls, segment: bytes, src: IPv4Address, dst: IPv4Address) -> UdpHeader:
        """Parse and check the UDP header of ``segment`` (exactly the IPv4 payload)."""
        if len(segment) < _UDP.size:
            raise _truncated(UdpError, "udp", _UDP.size, len(segment))
        sport, dport, length, csum = _UDP.unpack_from(segment)
        if length != len(segment):
            raise UdpError(
                "udp", "length", f"{len(segment)} (IPv4 payload)", str(length), "bad_length"
            )
        if csum:
            want = udp_checksum(src, dst, segment[:6] + b"\0\0" + segment[8:])
            if csum != want:
                raise UdpError("udp", "checksum", f"{want:#06x}", f"{csum:#06x}", "bad_checksum")
        return cls(sport, dport, length, csum)

    def to_bytes(self) -> bytes:
        return _UDP.pack(self.src_port, self.dst_port, self.length, self.checksum)
