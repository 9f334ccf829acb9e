"""Frame transports on the host side: raw Ethernet frames over UDP, one frame per datagram.

Models: the "phys" end of the hypervisor's switch. ``UdpBackend`` is QEMU's ``-netdev dgram`` /
``-netdev socket,udp=HOST:PORT,localaddr=HOST:PORT`` (a point-to-point UDP tunnel);
``McastBackend`` is QEMU's ``-netdev socket,mcast=GROUP:PORT`` (a hub of every member of a
multicast group). A real QEMU VM, another hv-emu or a Python test sender can be the other end.

``read_batch`` takes every datagram waiting (up to 1,024) with one ``recvmmsg`` into a
``FrameBatch`` (``recvmmsg.py``), filtered and counted as ``recv_frames`` does (a
``UdpBackend`` compares every source with its peer's at once).

Follows: QEMU net/dgram.c and net/socket.c framing: each UDP datagram carries exactly one whole
Ethernet frame, no header, no FCS (README.md, ``--net``). Multicast as QEMU's
``net_socket_mcast_create``: SO_REUSEADDR, bind to the group, IP_ADD_MEMBERSHIP, IP_MULTICAST_LOOP
on; here the TTL is 0 and the interface 127.0.0.1, so frames never leave the host.

Leaves out: the stream forms (4-byte length prefix), unix sockets, IPv6, hostnames (IPv4 literals
only), queues (non-blocking: a send that would block is dropped and counted, as a NIC would).

Network controls: the datagrams' bytes and their source address. Threat table:

| Threat                                      | Mitigation                                       |
|---------------------------------------------|--------------------------------------------------|
| Datagrams injected by another local sender  | only the configured (or first learned) peer      |
| Unbounded receive loop under a flood        | ``recv_frames`` returns after ``max_frames``      |
|                                             | (``read_batch``: 1,024 per ``recvmmsg`` at most) |
| Datagram larger than a frame buffer         | one fixed 64 KiB receive size, truncation counted |
| Multicast echo of our own frames            | recently sent frames are dropped once on receipt |
| Frame contents                              | not looked at here: ``frames.classify`` decides  |
"""

from __future__ import annotations

import collections
import contextlib
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from hv_emu.errors import ConfigError
from hv_emu.net.config import parse_ipv4, parse_port

if TYPE_CHECKING:  # numpy loads with the first batch read, never for a run without --net
    from hv_emu.net.recvmmsg import BatchReader, FrameBatch, Mask

#: Largest UDP payload over IPv4 (65535 - 20 - 8): the largest frame one datagram carries.
MAX_DATAGRAM = 65507
_RECV_SIZE = 65536  # one more than MAX_DATAGRAM can be: a longer datagram shows as truncated
#: How many of our own multicast frames are remembered to recognise their echo.
ECHO_MEMORY = 64

Address = tuple[str, int]


class FrameBackend(Protocol):
    """What the switch needs from a transport (all non-blocking)."""

    def recv_frames(self, max_frames: int) -> list[bytes]: ...
    def send_frame(self, frame: bytes) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class UdpSpec:
    """``udp:LOCAL_HOST:PORT[,peer=HOST:PORT]``."""

    local: Address
    peer: Address | None = None


@dataclass(frozen=True)
class McastSpec:
    """``mcast:GROUP:PORT``."""

    group: str
    port: int


NetSpec = UdpSpec | McastSpec


def _host_port(text: str, what: str, *, allow_zero: bool) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"bad {what} {text!r}: expected HOST:PORT")
    return str(parse_ipv4(host, f"{what} host")), parse_port(
        port, f"{what} port", allow_zero=allow_zero
    )


def parse_net_spec(spec: str) -> NetSpec:
    """Parse ``--net``: ``udp:LOCAL_HOST:PORT[,peer=HOST:PORT]`` or ``mcast:GROUP:PORT``."""
    kind, sep, rest = spec.partition(":")
    if kind == "udp" and sep:
        local_text, _, opts = rest.partition(",")
        local = _host_port(local_text, "local address", allow_zero=True)
        peer = None
        if opts:
            key, eq, value = opts.partition("=")
            if key != "peer" or not eq:
                raise ConfigError(f"bad --net option {opts!r}: only peer=HOST:PORT is known")
            peer = _host_port(value, "peer address", allow_zero=False)
        return UdpSpec(local, peer)
    if kind == "mcast" and sep:
        group, port = _host_port(rest, "multicast address", allow_zero=False)
        if not IPv4Address(group).is_multicast:
            raise ConfigError(f"bad multicast group {group}: expected 224.0.0.0-239.255.255.255")
        return McastSpec(group, port)
    raise ConfigError(
        f"bad --net {spec!r}: expected udp:LOCAL_HOST:PORT[,peer=HOST:PORT] or mcast:GROUP:PORT"
    )


def open_backend(spec: NetSpec) -> UdpBackend | McastBackend:
    """The backend a parsed ``--net`` names."""
    if isinstance(spec, UdpSpec):
        return UdpBackend(spec.local, spec.peer)
    return McastBackend(spec.group, spec.port)


class _DatagramBackend:
    """Shared receive/send loop over one non-blocking UDP socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.stats: collections.Counter[str] = collections.Counter()
        self._reader: BatchReader | None = None

    def _accept(self, frame: bytes, source: Address) -> bool:
        return True

    def _destination(self) -> Address | None:
        raise NotImplementedError

    def read_batch(self) -> FrameBatch:
        """The frames waiting now, up to ``recvmmsg.SLOTS``, as one ``FrameBatch`` read by one
        ``recvmmsg`` (never blocks); ``keep`` marks those this backend accepts (oversize and
        foreign datagrams counted and left out, as ``recv_frames`` counts them). The batch's
        buffers are reused by the next read: hand every row on first."""
        import numpy as np  # the batch path's alone: a run without --net never loads it

        from hv_emu.net.recvmmsg import BatchReader

        if self._reader is None:
            self._reader = BatchReader(self._sock)
        reader = self._reader
        batch = reader.read()
        if reader.icmp_errors:
            self.stats["rx_icmp_error"] += reader.icmp_errors
            reader.icmp_errors = 0
        n = batch.count
        if n:
            oversize = (batch.lengths[:n] > MAX_DATAGRAM) | reader.truncated
            if oversize.any():
                self.stats["rx_oversize"] += int(np.count_nonzero(oversize))
            keep = self._accept_batch(batch, ~oversize)
            batch.keep[:n] = keep
            self.stats["rx"] += int(np.count_nonzero(keep))
        return batch

    def _accept_batch(self, batch: FrameBatch, keep: Mask) -> Mask:
        """``_accept`` of every row in ``keep``, in order (a subclass may do it at once)."""
        import numpy as np

        for i in np.flatnonzero(keep).tolist():
            keep[i] = self._accept(batch.frame(i), batch.source(i))
        return keep

    def recv_frames(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` frames that are waiting now (never blocks)."""
        frames: list[bytes] = []
        while len(frames) < max_frames:
            try:
                data, source = self._sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:  # an ICMP error from an earlier send
                self.stats["rx_icmp_error"] += 1
                continue
            if len(data) > MAX_DATAGRAM:
                self.stats["rx_oversize"] += 1
            elif self._accept(data, source):  # AF_INET: already (str, int)
                self.stats["rx"] += 1
                frames.append(data)
        return frames

    def send_frame(self, frame: bytes) -> None:
        """Send one frame as one datagram; drops (and counts) when it cannot go now."""
        dest = self._destination()
        if dest is None:
            self.stats["tx_no_peer"] += 1
            return
        if len(frame) > MAX_DATAGRAM:
            self.stats["tx_oversize"] += 1
            return
        # Remembered before it goes: on loopback the echo can be read (by another thread)
        # before sendto returns.
        self._sending(frame)
        try:
            self._sock.sendto(frame, dest)
        except (BlockingIOError, InterruptedError):
            self.stats["tx_would_block"] += 1
            self._not_sent(frame)
            return
        except ConnectionRefusedError:
            self.stats["tx_icmp_error"] += 1
            self._not_sent(frame)
            return
        self.stats["tx"] += 1

    def _sending(self, frame: bytes) -> None:
        pass

    def _not_sent(self, frame: bytes) -> None:
        pass

    @property
    def local_address(self) -> Address:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()


class UdpBackend(_DatagramBackend):
    """Point-to-point tunnel: bound to ``local``, sending to ``peer`` (learned from the first
    datagram when None; afterwards, datagrams from other sources are dropped and counted)."""

    def __init__(self, local: Address, peer: Address | None = None) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(local)
        except OSError as err:
            sock.close()
            raise ConfigError(f"cannot bind UDP {local[0]}:{local[1]}: {err.strerror}") from None
        super().__init__(sock)
        self.peer = peer

    def _accept(self, frame: bytes, source: Address) -> bool:
        if self.peer is None:
            self.peer = source
        elif source != self.peer:
            self.stats["rx_foreign"] += 1
            return False
        return True

    def _accept_batch(self, batch: FrameBatch, keep: Mask) -> Mask:
        """``_accept`` of the whole batch at once: the first kept row's source is learned when
        no peer is known, then every source compared with the peer's (port and address)."""
        import numpy as np

        if self.peer is None:
            first = np.flatnonzero(keep)
            if not len(first):
                return keep
            self.peer = batch.source(int(first[0]))
        host, port = self.peer
        want = np.frombuffer(port.to_bytes(2, "big") + socket.inet_aton(host), np.uint8)
        same = (batch.sources[: len(keep), 2:8] == want).all(axis=1)
        foreign = keep & ~same
        if foreign.any():
            self.stats["rx_foreign"] += int(np.count_nonzero(foreign))
        kept: Mask = keep & same
        return kept

    def _destination(self) -> Address | None:
        return self.peer


class McastBackend(_DatagramBackend):
    """Hub of every socket in ``group:port`` on this host (loopback, TTL 0 by default)."""

    def __init__(
        self, group: str, port: int, *, interface: str = "127.0.0.1", ttl: int = 0
    ) -> None:
        if not IPv4Address(group).is_multicast:
            raise ConfigError(f"bad multicast group {group}: expected 224.0.0.0-239.255.255.255")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((group, port))
            ip = socket.IPPROTO_IP
            mreq = socket.inet_aton(group) + socket.inet_aton(interface)
            sock.setsockopt(ip, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(ip, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
            sock.setsockopt(ip, socket.IP_MULTICAST_LOOP, 1)
            sock.setsockopt(ip, socket.IP_MULTICAST_TTL, ttl)
        except OSError as err:
            sock.close()
            raise ConfigError(f"cannot join multicast {group}:{port}: {err.strerror}") from None
        super().__init__(sock)
        self.group = (group, port)
        self._recent: collections.deque[bytes] = collections.deque(maxlen=ECHO_MEMORY)

    def _accept(self, frame: bytes, source: Address) -> bool:
        # One step, not "in" then "remove": the vCPU thread appends to the deque meanwhile (and
        # may push the frame out of it), and a single remove scans it once instead of twice.
        try:
            self._recent.remove(frame)  # our own frame, looped back by IP_MULTICAST_LOOP
        except ValueError:
            return True
        self.stats["rx_echo"] += 1
        return False

    def _sending(self, frame: bytes) -> None:
        self._recent.append(bytes(frame))

    def _not_sent(self, frame: bytes) -> None:
        with contextlib.suppress(ValueError):
            self._recent.remove(frame)

    def _destination(self) -> Address | None:
        return self.group
