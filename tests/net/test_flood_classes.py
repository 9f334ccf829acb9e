"""A genuine update installs amid each class of the one-process flood (docs/PERFORMANCE.md, issue
11), frame by frame through the I/O thread's own step (``GuestNetwork.handle_frame``: the switch,
the update port's raw front path, the receiver) and in batches of 37 through its batch path
(``NetSwitch.from_wire_batch``, the receiver polled after each batch as the verifier would), and
every datagram is counted exactly once under one reason. Bounded by packets, not time: 20 flood
frames per genuine packet, at most 60 rounds of the carousel, the receiver on a fake clock."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from guest_tool.encoding import carousel
from guest_tool.push import frame_for
from hv_emu import layout
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.recvmmsg import FrameBatch
from hv_emu.updates import packets
from hv_emu.updates.batch import UpdateTriage
from hv_emu.updates.packets import Packet, PacketType, parse_packet
from tests.rigs.netupdate import Forger, Rig, encoded, rig

V = 3
GENUINE = encoded(V, lines=60)
OLDER = encoded(V - 1, lines=20)
HV = IPv4Address(layout.HV_IPV4)
FLOOD_PER_GENUINE = 20
ROUNDS = 60
#: Every counter a datagram can end under (docs/PROTOCOL.md, "Check order", steps 1-29 and what
#: passes); each datagram the receiver is given counts under exactly one of them.
OUTCOMES = frozenset({
    "truncated", "oversize", "bad_magic", "bad_version", "bad_type", "bad_flags", "bad_reserved",
    "length_mismatch", "index_oob", "stale", "no_work", "known_bad_manifest", "bad_manifest",
    "manifest_known", "manifest_checking", "version_jump", "too_large", "untrusted_key",
    "expired", "manifest_queued", "manifest_not_sampled", "manifest_less_work", "no_session",
    "count_mismatch",
    "duplicate", "no_page_yet", "bad_len", "bad_fec_id", "hash_mismatch", "block_done",
    "page_accepted", "symbol_accepted",
})  # fmt: skip


def frame(payload: bytes, checksum: bool = True) -> bytes:
    if checksum:
        return frame_for(payload, dst_mac=layout.HV_MAC, dst_ip=HV, port=layout.UPDATE_UDP_PORT)
    return build_udp_frame(src_mac=layout.PUSH_SENDER_MAC, dst_mac=layout.HV_MAC,
                           src_ip=layout.PUSH_SENDER_IPV4, dst_ip=HV,
                           src_port=layout.PUSH_SENDER_UDP_PORT, dst_port=layout.UPDATE_UDP_PORT,
                           payload=payload, udp_checksum_on=False)  # fmt: skip


def garbage(rng: random.Random) -> bytes:
    """Valid common headers (any type, update id, a version near the live one), random bytes."""
    return frame(Packet.build(rng.choice(list(PacketType)), rng.getrandbits(32),
                              V + rng.randrange(-2, 3), 0, 1,
                              rng.randbytes(rng.randrange(1400))).raw)  # fmt: skip


def bit_flipped(rng: random.Random) -> bytes:
    """A genuine packet with one bit flipped: in the payload before framing (the checksum then
    holds), or in the frame after it (the checksum then fails)."""
    genuine = [GENUINE.manifest, *GENUINE.pages, *GENUINE.symbols]
    packet = bytearray(rng.choice(genuine))
    late = rng.random() < 0.5
    if not late:
        bit = rng.randrange(8 * len(packet))
        packet[bit // 8] ^= 1 << (bit % 8)
    framed = bytearray(frame(bytes(packet)))
    if late:
        bit = rng.randrange(8 * 42, 8 * len(framed))
        framed[bit // 8] ^= 1 << (bit % 8)
    return bytes(framed)


def replay_source() -> Callable[[random.Random], bytes]:
    replays = [frame(p) for p in carousel(OLDER, rounds=2)]
    return lambda rng: rng.choice(replays)


def forged_source() -> Callable[[random.Random], bytes]:
    forger = Forger(GENUINE, random.Random(5))
    return lambda rng: frame(forger.manifest_packet(), checksum=False)


CLASSES: dict[str, Callable[[], Callable[[random.Random], bytes]]] = {
    "garbage with valid headers": lambda: garbage,
    "bit-flipped genuine packets": lambda: bit_flipped,
    "replays of the older update": replay_source,
    "forged manifests": forged_source,
}


@pytest.fixture
def network() -> Iterator[tuple[Rig, GuestNetwork]]:
    r = rig(installed=V - 1, seed=3)
    r.receiver.cpu_clock = lambda: 0.0  # every check costs the floor: 5,000 a second
    rx = r.receiver
    net = GuestNetwork(UdpBackend(("127.0.0.1", 0)), NetConfig(),
                       guest_mac=bytes.fromhex("525400000001"),
                       on_update=lambda d: rx.on_datagram(d.payload, ("10.0.2.2", 1)),
                       poll=rx.poll, checks=rx, on_update_payload=rx.on_payload,
                       update_batch=UpdateTriage(rx))  # fmt: skip
    yield r, net
    net.close()


#: Frames a batch holds on the batch path (not a divisor of 21: boundaries fall everywhere).
BATCH = 37


@pytest.mark.parametrize("batched", [False, True], ids=["frame by frame", "batches"])
@pytest.mark.parametrize("name", list(CLASSES))
def test_a_genuine_update_installs_amid_each_flood_class(
    name: str, batched: bool, network: tuple[Rig, GuestNetwork], monkeypatch: pytest.MonkeyPatch,
) -> None:
    r, net = network
    if name == "forged manifests":
        # A forger who paid for work stamps (docs/PROTOCOL.md, "Verification budget"): his
        # manifests reach the checks. One without a stamp is dropped after one hash
        # (tests/updates: no_work).
        monkeypatch.setattr(packets, "WORK_BITS", 0)
    rx, make = r.receiver, CLASSES[name]()
    rng, loss = random.Random(7), random.Random(8)
    fed = {"genuine": 0, "flood": 0}
    rows: list[bytes] = []
    batch = FrameBatch(BATCH)

    def take(f: bytes) -> None:
        if not batched:
            net.handle_frame(f)
            return
        rows.append(f)
        if len(rows) == BATCH:
            batch.fill(rows, [("127.0.0.1", 1)] * BATCH)
            rows.clear()
            net.switch.from_wire_batch(batch, lambda: False)
            assert batch.done
            rx.poll()

    for payload in carousel(GENUINE, rounds=ROUNDS):
        for _ in range(FLOOD_PER_GENUINE):
            take(make(rng))
            fed["flood"] += 1
            r.clock.now += 0.0001
        if loss.random() >= 0.2:
            take(frame(payload))
            fed["genuine"] += 1
        if r.installed == V:
            break
    for f in rows:  # the last, partial batch
        net.handle_frame(f)
    assert r.installed == V, rx.counters
    switch = net.switch.counters
    assert switch["from_wire.for_hypervisor"] + switch["from_wire.drop.udp_bad_checksum"] == sum(
        fed.values())
    assert rx.counters["datagrams"] == switch["from_wire.for_hypervisor"]
    # Every datagram under exactly one reason, and nothing else under those names.
    assert sum(rx.counters[k] for k in OUTCOMES) == rx.counters["datagrams"]
    assert rx.counters["installed"] == 1
    assert rx.memory_in_use() <= rx.memory_bound()
    if name == "replays of the older update":
        # Batched, the genuine packets behind the install in its batch are stale too.
        late = rx.counters["stale"] - fed["flood"]
        assert late == 0 or (batched and 0 < late < BATCH)
    # No flood packet is ever taken as a page or a symbol: those are the genuine packets' own.
    assert rx.counters["page_accepted"] + rx.counters["symbol_accepted"] <= fed["genuine"]
    if name == "bit-flipped genuine packets":
        # A flip after framing breaks the checksum too, but is refused by a cheaper check first
        # (a flipped symbol: hash_mismatch; the checksum is asked only of what would be taken).
        assert rx.counters["hash_mismatch"] > 0
    if name == "forged manifests":
        assert rx.counters["bad_signature"] > 0 and rx.counters["no_work"] == 0
        assert parse_packet(GENUINE.manifest).header.db_version == V
