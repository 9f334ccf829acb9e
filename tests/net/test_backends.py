"""Frame backends on loopback: ``--net`` parsing, UDP tunnel exchange and peer learning, loopback
multicast hub (skipped when the sandbox refuses multicast). Waits use select with a generous cap;
no assertion depends on timing."""

from __future__ import annotations

import random
import select
import socket
from collections.abc import Iterator

import pytest

from hv_emu.errors import ConfigError
from hv_emu.net.backends import (
    MAX_DATAGRAM,
    McastBackend,
    McastSpec,
    UdpBackend,
    UdpSpec,
    open_backend,
    parse_net_spec,
)

LO = "127.0.0.1"
WAIT_S = 5.0  # an upper bound for loopback delivery, never asserted on


def recv_wait(backend: UdpBackend | McastBackend, count: int = 1) -> list[bytes]:
    """Receive until ``count`` frames arrived (each select waits at most WAIT_S)."""
    got: list[bytes] = []
    while len(got) < count:
        ready, _, _ = select.select([backend.fileno()], [], [], WAIT_S)
        if not ready:
            break
        got += backend.recv_frames(count - len(got))
    return got


# ------------------------------------------------------------------------- --net parsing
def test_parse_specs() -> None:
    assert parse_net_spec("udp:127.0.0.1:5555") == UdpSpec((LO, 5555), None)
    assert parse_net_spec("udp:127.0.0.1:0,peer=127.0.0.1:6000") == UdpSpec((LO, 0), (LO, 6000))
    assert parse_net_spec("mcast:239.255.10.1:1234") == McastSpec("239.255.10.1", 1234)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "udp",
        "udp:",
        "tap:foo",
        "udp:127.0.0.1",
        "udp:localhost:5555",
        "udp:127.0.0.1:x",
        "udp:127.0.0.1:70000",
        "udp:127.0.0.1:1,peer=127.0.0.1:0",
        "udp:127.0.0.1:1,foo=bar",
        "udp:127.0.0.1:1,peer=nowhere",
        "mcast:10.0.0.1:1234",
        "mcast:239.1.1.1",
        "mcast:239.1.1.1:0",
        "udp::5555",
    ],
)
def test_bad_specs_give_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_net_spec(spec)
    assert "\n" not in str(err.value) and str(err.value)


# ------------------------------------------------------------------------- UDP tunnel
@pytest.fixture
def pair() -> Iterator[tuple[UdpBackend, UdpBackend]]:
    a = UdpBackend((LO, 0))
    b = UdpBackend((LO, 0), peer=a.local_address)
    a.peer = b.local_address
    yield a, b
    a.close()
    b.close()


def test_udp_exchange_one_frame_per_datagram(pair: tuple[UdpBackend, UdpBackend]) -> None:
    a, b = pair
    frames = [bytes([i]) * (60 + i) for i in range(5)]
    for f in frames:
        a.send_frame(f)
    assert recv_wait(b, 5) == frames
    b.send_frame(b"reply" * 20)
    assert recv_wait(a) == [b"reply" * 20]
    assert a.stats["tx"] == 5 and b.stats["rx"] == 5


def test_recv_is_non_blocking_and_bounded(pair: tuple[UdpBackend, UdpBackend]) -> None:
    a, b = pair
    assert b.recv_frames(10) == []
    for i in range(4):
        a.send_frame(bytes([i]) * 60)
    first = recv_wait(b, 1)
    rest = recv_wait(b, 3)
    assert first + rest == [bytes([i]) * 60 for i in range(4)]


def test_learns_peer_and_drops_foreigners() -> None:
    server = UdpBackend((LO, 0))
    client = UdpBackend((LO, 0), peer=server.local_address)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind((LO, 0))
    try:
        server.send_frame(b"nobody to send to")
        assert server.stats["tx_no_peer"] == 1
        client.send_frame(b"hello" * 12)
        assert recv_wait(server) == [b"hello" * 12]
        assert server.peer == client.local_address
        stranger.sendto(b"injected" * 8, server.local_address)
        client.send_frame(b"marker" * 10)
        assert recv_wait(server) == [b"marker" * 10]
        assert server.stats["rx_foreign"] == 1
        server.send_frame(b"back" * 15)
        assert recv_wait(client) == [b"back" * 15]
    finally:
        stranger.close()
        server.close()
        client.close()


def test_oversize_frame_is_counted_not_sent(pair: tuple[UdpBackend, UdpBackend]) -> None:
    a, _ = pair
    a.send_frame(bytes(MAX_DATAGRAM + 1))
    assert a.stats["tx_oversize"] == 1 and a.stats["tx"] == 0


def test_bind_conflict_is_config_error(pair: tuple[UdpBackend, UdpBackend]) -> None:
    a, _ = pair
    with pytest.raises(ConfigError, match="cannot bind UDP"):
        UdpBackend(a.local_address)


def test_open_backend_from_spec() -> None:
    backend = open_backend(parse_net_spec("udp:127.0.0.1:0,peer=127.0.0.1:9"))
    try:
        assert isinstance(backend, UdpBackend) and backend.peer == (LO, 9)
    finally:
        backend.close()


# ------------------------------------------------------------------------- multicast hub
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LO, 0))
        return int(s.getsockname()[1])


def test_multicast_hub() -> None:
    group = f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    port = free_port()
    try:
        a = McastBackend(group, port)
        b = McastBackend(group, port)
    except ConfigError as err:
        pytest.skip(f"sandbox refuses loopback multicast: {err}")
    try:
        a.send_frame(b"to the group" * 6)
        got = recv_wait(b)
        if not got:
            pytest.skip("multicast joined but nothing is delivered on loopback here")
        assert got == [b"to the group" * 6]
        b.send_frame(b"answer" * 10)
        assert recv_wait(a) == [b"answer" * 10]  # a's own frame was recognised as an echo
        assert a.stats["rx_echo"] == 1 and a.stats["rx"] == 1
    finally:
        a.close()
        b.close()


def test_multicast_rejects_unicast_group() -> None:
    with pytest.raises(ConfigError, match="multicast group"):
        McastBackend(LO, 5000)
