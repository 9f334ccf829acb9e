"""The interception decision: where a frame from the wire goes, before the guest may see it.

Models: BitVisor's ``ippassfilter`` idea, applied to UDP. ``classify`` looks at every frame from the
wire: UDP to (hypervisor IP, update port) is consumed by the hypervisor; fragments and malformed
datagrams aimed there are dropped with the reason the parser (``frames.py``) names; everything else
goes to the guest untouched (wire semantics: the guest's stack judges). The common frame (untagged,
IPv4 without options, UDP) is decided by one ``struct`` unpack of its 42-byte prefix
(``headers.PLAIN_PREFIX``) before any object is built; every other frame goes layer by layer
(``_classify_layers``), and a Hypothesis test (``tests/net/test_frames_fast.py``) holds the two to
the same verdict and reason. ``peek_udp_dst_port`` is the conservative raw look the egress filter
shares.

Follows: docs/PROTOCOL.md ("Threats": no fragments, VLAN-tagged or option-carrying datagrams on
the update port), RFC 791, RFC 768.

Leaves out: IPv6 (never the hypervisor's), ports other than the update port (all the guest's).

Network controls: every byte of the frame. Threat table:

| Threat                                         | Mitigation                                      |
|------------------------------------------------|-------------------------------------------------|
| An update datagram reaching the guest          | to the update port at our address: never passed |
| A fragment hiding the port                     | any UDP fragment to our addresses is dropped    |
| VLAN tag or IPv4 options hiding a datagram     | dropped on the update port (``ethernet_vlan``)  |
| Runts                                          | dropped (``ethernet_truncated``)                |
| Per-frame cost of configuration work           | our addresses worked out once per configuration |
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hv_emu.net.frames import UdpDatagram, parse_layers, plain_udp
from hv_emu.net.headers import (
    ETH_LEN,
    ETHERTYPE_IPV4,
    ETHERTYPE_VLAN,
    IPPROTO_UDP,
    IPV4_FLAG_MF,
    IPV4_LEN,
    IPV4_OFF_DST,
    IPV4_OFF_PROTO,
    IPV4_OFFSET_MASK,
    MIN_FRAME,
    PLAIN_PREFIX,
    PLAIN_VIHL,
    UDP_OFF_DPORT,
    VLAN_LEN,
    FrameError,
    IPv4Fragment,
    ones_complement_residue,
)


class Verdict(enum.Enum):
    """Where a frame goes. ``FOR_WIRE`` is the switch's verdict on guest frames let out."""

    FOR_HYPERVISOR = "for_hypervisor"
    FOR_GUEST = "for_guest"
    FOR_WIRE = "for_wire"
    DROP = "drop"


@dataclass(frozen=True)
class FrameClass:
    """The interception decision for one frame; ``datagram`` is set for ``FOR_HYPERVISOR`` by
    ``classify`` (not by the switch's raw front path, which builds none)."""

    verdict: Verdict
    reason: str
    datagram: UdpDatagram | None = field(default=None, compare=False)


def peek_udp_dst_port(frame: bytes) -> tuple[bytes, int | None] | None:
    """Raw look at an IPv4/UDP frame (one optional VLAN tag), no checksum or length checks.

    Returns ``(dst_ip_bytes, dst_port)`` for IPv4 carrying UDP, ``dst_port`` being None when the
    UDP header is not visible (a non-first fragment, bad IHL, truncation); None for anything else.
    Used where being conservative matters more than being right: the egress filter and the
    ingress decision on malformed frames aimed at the hypervisor.
    """
    if len(frame) < ETH_LEN:
        return None
    off = ETH_LEN
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETHERTYPE_VLAN:
        if len(frame) < off + VLAN_LEN:
            return None
        ethertype = int.from_bytes(frame[16:18], "big")
        off += VLAN_LEN
    if ethertype != ETHERTYPE_IPV4 or len(frame) < off + IPV4_LEN:
        return None
    if frame[off + IPV4_OFF_PROTO] != IPPROTO_UDP:
        return None
    dst_ip = bytes(frame[off + IPV4_OFF_DST : off + IPV4_OFF_DST + 4])
    hlen = (frame[off] & 0xF) * 4
    ff = int.from_bytes(frame[off + 6 : off + 8], "big")
    port_at = off + hlen + UDP_OFF_DPORT
    if hlen < IPV4_LEN or ff & IPV4_OFFSET_MASK or len(frame) < port_at + 2:
        return dst_ip, None
    return dst_ip, int.from_bytes(frame[port_at : port_at + 2], "big")


@functools.lru_cache(maxsize=8)  # keyed by configuration, never by traffic
def _our_destinations(
    hv_ip: IPv4Address | str, extra_dsts: frozenset[IPv4Address]
) -> frozenset[bytes]:
    """The raw destination addresses whose update-port datagrams are the hypervisor's: worked out
    once per configuration, not for every frame (it was most of ``classify``'s time)."""
    return frozenset({IPv4Address(hv_ip).packed, *(a.packed for a in extra_dsts)})


def classify(
    frame: bytes,
    hv_ip: IPv4Address | str,
    update_port: int,
    *,
    extra_dsts: frozenset[IPv4Address] = frozenset(),
) -> FrameClass:
    """Decide where a frame from the wire goes (the hypervisor sees every frame first).

    UDP to ``update_port`` at ``hv_ip`` (or one of ``extra_dsts``: broadcast, a multicast group) is
    hypervisor-only: a clean datagram is ``FOR_HYPERVISOR``; a fragment, a VLAN-tagged or
    option-carrying one, or one failing any check is ``DROP`` and never reaches the guest. Any UDP
    fragment to those addresses is dropped, since a non-first fragment hides its port. Runts are
    dropped. Everything else is ``FOR_GUEST``, untouched (wire semantics: the guest's stack judges).
    """
    frame = bytes(frame)
    if len(frame) < ETH_LEN:
        return _DROP_TRUNCATED
    ours = _our_destinations(hv_ip, extra_dsts)
    if len(frame) >= PLAIN_PREFIX.size:
        # Fast path: one unpack of the fixed prefix decides the common frames before any object
        # is built; anything it does not settle goes on to the full path below, which it
        # agrees with (tests/net/test_frames_fuzz.py checks it against ``_classify_layers``).
        fields = PLAIN_PREFIX.unpack_from(frame)
        ethertype, vihl, ff, proto, dst, dport = (
            fields[2],
            fields[3],
            fields[7],
            fields[9],
            fields[12],
            fields[14],
        )
        if ethertype != ETHERTYPE_IPV4 and ethertype != ETHERTYPE_VLAN:
            return _PASS  # not IPv4: ``peek_udp_dst_port`` is None
        if ethertype == ETHERTYPE_IPV4:
            if proto != IPPROTO_UDP or dst not in ours:
                return _PASS  # not UDP, or not to us: ``peek_udp_dst_port`` says so
            if vihl == PLAIN_VIHL and dport != update_port and not ff & _FRAGMENT_BITS:
                return _PASS  # the port is visible and another: the guest's, valid or not
            if vihl == PLAIN_VIHL and dport == update_port:
                plain = plain_udp(frame, fields)
                if isinstance(plain, UdpDatagram):
                    return FrameClass(Verdict.FOR_HYPERVISOR, "update", plain)
                if plain is not None:
                    return _DROPS[plain]
    return _classify_layers(frame, ours, update_port)


def update_port_end(frame: bytes, ours: frozenset[bytes], port: bytes) -> int:
    """The raw front path of the update port: the end of the IPv4 datagram (the UDP payload is
    ``frame[42:end]``) when ``frame`` is the common shape aimed at us (untagged Ethernet II, IPv4
    without options, not a fragment, UDP, destination one of ``ours``, destination port ``port``,
    two bytes big-endian, every length consistent, the IPv4 header checksum right); 0 for every
    other frame, which ``classify`` decides. Reads bytes at fixed offsets and builds nothing. The
    UDP checksum is left to the caller (``frames.udp_intact``): ``classify`` would drop a frame
    this accepts only as ``udp_bad_checksum`` (``tests/net/test_update_port.py``)."""
    n = len(frame)
    if (
        n < 42 or frame[12] != 8 or frame[13] != 0 or frame[14] != PLAIN_VIHL
        or frame[23] != IPPROTO_UDP or frame[36:38] != port or frame[30:34] not in ours
        or frame[20] & 0x3F or frame[21]  # MF or a fragment offset
    ):  # fmt: skip
        return 0
    total = frame[16] << 8 | frame[17]
    end = ETH_LEN + total
    if (
        (frame[38] << 8 | frame[39]) != total - IPV4_LEN or total < IPV4_LEN + 8
        or end > n or n > max(MIN_FRAME, end)
        or ones_complement_residue(frame[ETH_LEN : ETH_LEN + IPV4_LEN])
    ):  # fmt: skip
        return 0
    return end


_FRAGMENT_BITS = IPV4_FLAG_MF | IPV4_OFFSET_MASK
_PASS = FrameClass(Verdict.FOR_GUEST, "pass")
_DROP_TRUNCATED = FrameClass(Verdict.DROP, "ethernet_truncated")
_DROPS = {r: FrameClass(Verdict.DROP, r) for r in ("ipv4_bad_checksum", "udp_bad_checksum")}


def _classify_layers(frame: bytes, ours: frozenset[bytes], update_port: int) -> FrameClass:
    """``classify`` for every frame (at least an Ethernet header), with the full parser."""
    peek = peek_udp_dst_port(frame)
    if peek is None or peek[0] not in ours:
        return _PASS
    _, raw_port = peek
    try:
        dgram = parse_layers(frame, True)
    except FrameError as err:
        if raw_port is None or raw_port == update_port or isinstance(err, IPv4Fragment):
            return FrameClass(Verdict.DROP, err.reason)
        return _PASS
    if dgram.dst_port != update_port:
        return _PASS
    if dgram.vlan_tci is not None:
        return FrameClass(Verdict.DROP, "ethernet_vlan")
    if dgram.ip_options:
        return FrameClass(Verdict.DROP, "ipv4_options")
    return FrameClass(Verdict.FOR_HYPERVISOR, "update", dgram)
