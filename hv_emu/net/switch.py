"""The hypervisor's two-endpoint frame switch: every frame between wire and guest passes it first.

Models: a BitVisor netapi module (include/net/netapi.h) between the "phys" endpoint (the host
backend) and the "virt" endpoint (the guest NIC). Like ``ippassfilter`` it lets everything through
except traffic for the hypervisor itself, which here is UDP to the update port: consumed by the
hypervisor (``on_update_datagram``) and never shown to the guest. Like the ``ip`` module with its
``pass`` flag, a run-time ``cut`` flag (set on malware detection) takes the guest's link down both
ways while the hypervisor stays online and keeps receiving updates. Like lwIP behind BitVisor, the
hypervisor answers ARP who-has for its own address (the request still reaches the guest). Given
``on_update_payload`` (the receiver's ``on_payload``), the update port's common frame takes a raw
front path: ``intercept.update_port_end`` reads it at fixed offsets, and its UDP payload goes to
the receiver with the UDP checksum check deferred (``frames.udp_intact``, asked before the
receiver takes the packet; a failure is counted here as ``udp_bad_checksum``), no ``UdpDatagram``
built; every other frame goes through ``classify``. Given also the receiver's batch triage
(``update_batch``) and no capture tap, ``from_wire_batch`` takes a whole batch read by
``recvmmsg`` the same way, the update port's drops judged by array operations (``triage.py``).

Follows: BitVisor include/net/netapi.h semantics (drop = do not call ``send``; inject = call the
other side's ``send``), the update receiver's step 0 (no fragments, egress filter:
docs/PROTOCOL.md, "Threats"), RFC 826 (ARP for Ethernet/IPv4).

Leaves out: an ARP cache and gratuitous ARP (the hypervisor never asks; it answers the requester),
rate limits (the update receiver's token buckets), the RX queue bound (the backend's
``max_frames`` per poll bounds the work instead).

Sans-IO: frames come in through ``from_wire``/``from_guest`` and leave through injected callables;
no sockets, no clocks. Who controls what: the network controls every frame from the wire, the guest
every frame it transmits; the hypervisor's configuration and the ``cut`` flag are ours. Threats:

| Threat                                            | Mitigation                                   |
|---------------------------------------------------|----------------------------------------------|
| Update datagrams reaching the guest               | ``classify``: hypervisor-only, never forward |
| Fragmented/VLAN/malformed datagrams to the port   | dropped, counted by reason                   |
| Guest forging updates to other hypervisors        | egress filter: guest UDP to the port dropped |
| Guest posing as the hypervisor (MAC, IPv4, ARP)   | egress filter: such frames dropped           |
| Infected guest keeps talking after detection      | ``cut``: both directions dropped             |
| A bad update datagram crashing the switch         | ``GuestFault`` from the callback is counted  |
| A flood costing a parse and a checksum a datagram | raw front path; checksum asked last          |
| ARP reply reflected to broadcast, or amplified    | unicast to a unicast requester, one for one  |
| Malformed ARP (other hardware, short)             | ``ArpError`` inside, not answered            |
"""

from __future__ import annotations

import collections
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

import numpy as np

from hv_emu.errors import GuestFault
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import UdpDatagram, udp_intact
from hv_emu.net.headers import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_VLAN,
    IPV4_OFF_SRC,
    MIN_FRAME,
    FrameError,
)
from hv_emu.net.intercept import (
    FrameClass,
    Verdict,
    classify,
    peek_udp_dst_port,
    update_port_end,
)
from hv_emu.net.recvmmsg import FrameBatch
from hv_emu.net.triage import UpdateBatch, walk

FrameSink = Callable[[bytes], None]
_ETH_HEADER = 14
_ARP_OFF_SPA = 14  # sender protocol address in an Ethernet/IPv4 ARP packet (RFC 826)
#: RFC 826 for Ethernet/IPv4: htype, ptype, hlen, plen, op, sha, spa, tha, tpa.
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ARP_ETH_IPV4 = (1, ETHERTYPE_IPV4, 6, 4)
ARP_REQUEST = 1
ARP_REPLY = 2


class ArpError(FrameError):
    """An ARP packet that is short or not Ethernet/IPv4."""


@dataclass(frozen=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP packet (RFC 826); ``from_bytes`` refuses any other kind."""

    op: int
    sha: bytes
    spa: IPv4Address
    tha: bytes
    tpa: IPv4Address

    @classmethod
    def from_bytes(cls, data: bytes) -> ArpPacket:
        if len(data) < _ARP.size:
            raise ArpError("arp", "length", f">= {_ARP.size} bytes", f"{len(data)}", "truncated")
        htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data)
        if (htype, ptype, hlen, plen) != _ARP_ETH_IPV4:
            got = f"{htype}/{ptype:#06x}/{hlen}/{plen}"
            raise ArpError("arp", "htype/ptype/hlen/plen", "1/0x0800/6/4", got, "unsupported")
        return cls(op, sha, IPv4Address(spa), tha, IPv4Address(tpa))

    def to_bytes(self) -> bytes:
        return _ARP.pack(
            *_ARP_ETH_IPV4, self.op, self.sha, self.spa.packed, self.tha, self.tpa.packed
        )


def arp_reply_to(frame: bytes, hv_mac: bytes, hv_ip: IPv4Address) -> bytes | None:
    """The is-at the hypervisor owes an untagged who-has for ``hv_ip``; None for anything else
    (other frames, malformed ARP, a multicast requester, a requester claiming ``hv_ip``)."""
    if len(frame) < _ETH_HEADER or int.from_bytes(frame[12:14], "big") != ETHERTYPE_ARP:
        return None
    try:
        req = ArpPacket.from_bytes(frame[_ETH_HEADER:])
    except ArpError:
        return None
    if req.op != ARP_REQUEST or req.tpa != hv_ip or req.sha[0] & 1 or req.spa == hv_ip:
        return None
    reply = ArpPacket(ARP_REPLY, hv_mac, hv_ip, req.sha, req.spa).to_bytes()
    return (req.sha + hv_mac + ETHERTYPE_ARP.to_bytes(2, "big") + reply).ljust(MIN_FRAME, b"\0")


class Direction(enum.Enum):
    """Where a frame entered the switch (for the capture tap)."""

    FROM_WIRE = "from_wire"
    FROM_GUEST = "from_guest"
    FROM_HYPERVISOR = "from_hypervisor"


Tap = Callable[[Direction, bytes], None]
UpdateSink = Callable[[UdpDatagram], None]
#: The update port's raw front path (``NetSwitch``'s ``on_update_payload``): the UDP payload and a
#: function that checks the frame's UDP checksum, to be called once the payload is about to be
#: taken; returns False when that check failed (the switch counts ``udp_bad_checksum``).
PayloadSink = Callable[[bytes, Callable[[], bool]], bool]


#: Counter names by (direction, verdict, reason), made once instead of formatted for each frame.
_COUNTER_KEYS: dict[tuple[str, Verdict, str], str] = {}


#: Bytes before the UDP payload in the common frame (Ethernet II, IPv4 without options, UDP).
_PLAIN_HEADERS = 42
#: What ``from_wire`` answers on the raw front path (no ``UdpDatagram`` is built there).
_RAW_UPDATE = FrameClass(Verdict.FOR_HYPERVISOR, "update")
_RAW_BAD_CHECKSUM = FrameClass(Verdict.DROP, "udp_bad_checksum")


def _no_tap(direction: Direction, frame: bytes) -> None:
    pass


def _claimed_src_ip(frame: bytes) -> bytes | None:
    """The raw IPv4 source an (optionally 802.1Q-tagged) IPv4 or ARP frame claims, else None."""
    off = _ETH_HEADER
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == ETHERTYPE_VLAN:
        ethertype = int.from_bytes(frame[16:18], "big")
        off += 4
    at = {ETHERTYPE_IPV4: IPV4_OFF_SRC, ETHERTYPE_ARP: _ARP_OFF_SPA}.get(ethertype)
    if at is None or len(frame) < off + at + 4:
        return None
    return bytes(frame[off + at : off + at + 4])


class NetSwitch:
    """Forwards frames between the wire and the guest, taking the hypervisor's own first.

    ``to_guest`` delivers to the guest NIC, ``to_wire`` to the backend, ``on_update_datagram``
    receives update datagrams, ``tap`` sees every frame that enters (before the decision).
    ``counters`` counts every delivery and every drop by ``<direction>.<reason>``.
    """

    def __init__(
        self,
        config: NetConfig,
        *,
        to_guest: FrameSink,
        to_wire: FrameSink,
        on_update_datagram: UpdateSink,
        tap: Tap | None = None,
        on_update_payload: PayloadSink | None = None,
        update_batch: UpdateBatch | None = None,
    ) -> None:
        self.config = config
        self._to_guest = to_guest
        self._to_wire = to_wire
        self._on_update = on_update_datagram
        self._tap = tap or _no_tap
        #: Set on malware detection: the guest's link is down both ways; updates still arrive.
        self.cut = False
        self.counters: collections.Counter[str] = collections.Counter()
        self._on_payload = on_update_payload
        self._ours = frozenset({config.hv_ip.packed, *(a.packed for a in config.extra_dsts)})
        self._port = config.update_port.to_bytes(2, "big")
        #: The receiver's batch triage (``updates/batch.py``): with it, and with the raw front path
        #: and no tap, ``from_wire_batch`` judges a whole batch at once (``triage.py``).
        self._batch = update_batch if on_update_payload is not None and tap is None else None
        self._ours_u32 = np.array(sorted(int.from_bytes(a, "big") for a in self._ours), np.uint32)

    @property
    def takes_batches(self) -> bool:
        """True when ``from_wire_batch`` judges batches by array operations."""
        return self._batch is not None

    def from_wire_batch(self, batch: FrameBatch, stop: Callable[[], bool]) -> None:
        """Rows ``batch.position`` ... of a batch read from the backend, in order: as
        ``from_wire`` would take each, the update port's drops judged by array operations
        (``triage.walk``; without a batch triage, one ``from_wire`` a row). ``stop()`` is asked
        after each row handed on; True leaves the rest for the next call."""
        if self._batch is not None:
            walk(self, batch, self._batch, self._ours_u32, stop)
            return
        while not batch.done:
            row = batch.position
            batch.position += 1
            if batch.keep[row]:
                self.from_wire(batch.frame(row))
                if stop():
                    return

    def _count(self, direction: str, result: FrameClass) -> FrameClass:
        key = _COUNTER_KEYS.get((direction, result.verdict, result.reason))
        if key is None:  # the reasons are the code's own few names: the cache stays small
            if result.verdict is Verdict.DROP:
                key = f"{direction}.drop.{result.reason}"
            else:
                key = f"{direction}.{result.verdict.value}"
            _COUNTER_KEYS[direction, result.verdict, result.reason] = key
        self.counters[key] += 1
        return result

    def from_wire(self, frame: bytes) -> FrameClass:
        """A frame received by the backend: to the hypervisor, to the guest, or dropped."""
        frame = bytes(frame)
        self._tap(Direction.FROM_WIRE, frame)
        if self._on_payload is not None:
            end = update_port_end(frame, self._ours, self._port)
            if end:  # the update port's common frame: its payload, before any object is built
                return self.take_update_payload(frame, end)
        cfg = self.config
        result = classify(frame, cfg.hv_ip, cfg.update_port, extra_dsts=cfg.extra_dsts)
        if result.verdict is Verdict.FOR_HYPERVISOR:
            assert result.datagram is not None  # classify sets it for FOR_HYPERVISOR
            try:
                self._on_update(result.datagram)
            except GuestFault:
                self.counters["from_wire.update_rejected"] += 1
        elif result.verdict is Verdict.FOR_GUEST:
            reply = arp_reply_to(frame, cfg.hv_mac, cfg.hv_ip) if cfg.answer_arp else None
            if reply is not None:  # answered even when cut: the hypervisor stays online
                self.counters["from_wire.arp_answered"] += 1
                self.send_from_hypervisor(reply)
            if self.cut:
                result = FrameClass(Verdict.DROP, "cut")
            else:
                self._to_guest(frame)
        return self._count("from_wire", result)

    def take_update_payload(self, frame: bytes, end: int) -> FrameClass:
        """The raw front path: the payload to ``on_update_payload`` with its UDP checksum check
        deferred until the receiver takes it (``docs/PROTOCOL.md``, "Check order", step 0)."""
        assert self._on_payload is not None
        try:
            taken = self._on_payload(frame[_PLAIN_HEADERS:end], lambda: udp_intact(frame, end))
        except GuestFault:
            self.counters["from_wire.update_rejected"] += 1
            taken = True
        if taken:
            self.counters["from_wire.for_hypervisor"] += 1
            return _RAW_UPDATE
        self.counters["from_wire.drop.udp_bad_checksum"] += 1
        return _RAW_BAD_CHECKSUM

    def from_guest(self, frame: bytes) -> FrameClass:
        """A frame the guest transmitted: to the wire, or dropped (cut, egress filter)."""
        frame = bytes(frame)
        self._tap(Direction.FROM_GUEST, frame)
        result = self._egress(frame)
        if result.verdict is Verdict.FOR_WIRE:
            self._to_wire(frame)
        return self._count("from_guest", result)

    def _egress(self, frame: bytes) -> FrameClass:
        if self.cut:
            return FrameClass(Verdict.DROP, "cut")
        if len(frame) < _ETH_HEADER:
            return FrameClass(Verdict.DROP, "ethernet_truncated")
        if frame[6:12] == self.config.hv_mac:
            return FrameClass(Verdict.DROP, "spoofed_hv_mac")
        if _claimed_src_ip(frame) == self.config.hv_ip.packed:
            return FrameClass(Verdict.DROP, "spoofed_hv_ip")
        # A non-first fragment hides its port and passes: receivers never reassemble on the port.
        peek = peek_udp_dst_port(frame)
        if peek is not None and peek[1] == self.config.update_port:
            return FrameClass(Verdict.DROP, "egress_update_port")
        return FrameClass(Verdict.FOR_WIRE, "pass")

    def send_from_hypervisor(self, frame: bytes) -> None:
        """A frame of the hypervisor's own (a NACK, a log): to the wire, even when cut."""
        frame = bytes(frame)
        self._tap(Direction.FROM_HYPERVISOR, frame)
        self._to_wire(frame)
        self.counters["from_hypervisor.for_wire"] += 1
