"""The receiver's raw front path (``UpdateReceiver.on_payload``, ``updates/front.py``) counts every
datagram as the layered path (``on_datagram``) does: on arbitrary and mutated datagrams of a live
update, the same counters, the same sessions, the same install. Its deferred UDP checksum
(``intact``) is asked at most once, only for a packet about to be taken, and a failed one leaves
the receiver as it was."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.encoding import carousel, stamp
from hv_emu.updates import packets
from hv_emu.updates.packets import HEADER_LEN, Packet, PacketType, parse_packet
from hv_emu.updates.receiver import ReceiverConfig
from tests.rigs.netupdate import SOURCE, Rig, encoded, rig

V = 3
GENUINE = encoded(V, lines=60)
OLDER = encoded(V - 1, lines=20)
#: Offsets in a MANIFEST payload of every field of the bundle header and the FEC parameters.
MANIFEST_OFFSETS = [0, 3, 4, 6, 8, 15, 16, 24, 32, 40, 41, 42, 44, 47, 48, 80, 81, 82, 83, 84,
                    87, 88, 91, 92, 93, 94, 95]
TEMPLATES = [GENUINE.manifest, *GENUINE.pages, *GENUINE.symbols[:40], OLDER.manifest,
             *OLDER.symbols[:5]]


@st.composite
def datagrams(draw: st.DrawFn) -> bytes:
    """A genuine packet, mutated: bit flips anywhere (the header most often), a header field set
    to an edge value, a truncation, or plain garbage."""
    kind = draw(st.sampled_from(["genuine", "flip", "field", "manifest", "cut", "garbage"]))
    if kind == "garbage":
        return draw(st.binary(max_size=1500))
    packet = bytearray(draw(st.sampled_from(TEMPLATES)))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, HEADER_LEN - 1) | st.integers(0, len(packet) - 1))
            packet[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "field":
        at = draw(st.sampled_from([4, 5, 6, 8, 12, 16, 24, 28, 30]))
        packet[at : at + 2] = draw(st.sampled_from([b"\0\0", b"\xff\xff", b"\0\1", b"\0\3"]))
    elif kind == "manifest":  # a field of the bundle header or the FEC parameters, or the length
        packet = bytearray(draw(st.sampled_from([GENUINE.manifest, OLDER.manifest])))
        at = HEADER_LEN + draw(st.integers(0, 96 + 16) | st.sampled_from(MANIFEST_OFFSETS))
        packet[at] = draw(st.sampled_from([0, 1, 2, 6, 8, 0xFF]) | st.integers(0, 255))
        if draw(st.booleans()):
            packet = packet[: len(packet) - draw(st.integers(0, 80))] + draw(st.binary(max_size=8))
            packet[28:30] = (len(packet) - HEADER_LEN).to_bytes(2, "big")  # payload_len agrees
    elif kind == "cut":
        packet = packet[: draw(st.integers(0, len(packet)))]
    return bytes(packet)


def opened() -> Rig:
    """A receiver with the genuine update's session open and its pages in."""
    r = rig(installed=0, seed=4)
    r.receiver.cpu_clock = lambda: 0.0
    r.feed([GENUINE.manifest, *GENUINE.pages])
    assert r.receiver.sessions
    return r


def state(r: Rig) -> tuple[dict[str, int], list[tuple[int, int]], int, int]:
    rx = r.receiver
    counts = {k: v for k, v in rx.counters.items() if v}
    return counts, sorted(rx.sessions), len(rx.pool), r.installed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datagrams(), max_size=40))
def test_the_front_path_counts_as_the_layered_path(packets: list[bytes]) -> None:
    fast, layered = opened(), opened()
    for payload in packets:
        assert fast.receiver.on_payload(payload) is True
        layered.receiver.on_datagram(payload, SOURCE)
        fast.receiver.poll()
        layered.receiver.poll()
        assert state(fast) == state(layered)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(datagrams(), st.booleans()), max_size=40))
def test_a_failed_checksum_is_asked_last_and_leaves_nothing(
    packets: list[tuple[bytes, bool]],
) -> None:
    fast, layered = opened(), opened()
    for payload, ok in packets:
        asked: list[bool] = []

        def intact(ok: bool = ok, asked: list[bool] = asked) -> bool:
            asked.append(ok)
            return ok

        before = state(fast)
        taken = fast.receiver.on_payload(payload, intact)
        assert len(asked) <= 1
        if not taken:  # only a failed check refuses, and then nothing changed
            assert asked == [False]
            assert state(fast) == before
            continue
        layered.receiver.on_datagram(payload, SOURCE)
        fast.receiver.poll()
        layered.receiver.poll()
        assert state(fast) == state(layered)


def test_a_genuine_update_installs_through_the_front_path_alone() -> None:
    r = rig(installed=0, seed=2)
    rng = random.Random(1)
    for payload in carousel(GENUINE, rounds=20):  # bounded: 20 rounds of the carousel
        if rng.random() < 0.2:
            continue
        assert r.receiver.on_payload(payload, lambda: True)
        r.receiver.poll()
        if r.installed == V:
            break
    assert r.installed == V
    assert r.receiver.counters["installed"] == 1
    assert r.receiver.counters["datagrams"] == sum(
        v for k, v in r.receiver.counters.items()
        if k in {"manifest_queued", "page_accepted", "symbol_accepted", "manifest_known",
                 "duplicate", "no_page_yet", "block_done", "manifest_checking"}
    )  # fmt: skip


def _forgeries() -> list[bytes]:
    """Stamped forgeries of GENUINE's manifest (fresh update id and version, trusted key id, a
    random signature), at 4 to 9 bits of work with the minimum lowered to 4 while they are made."""
    rng, genuine, saved = random.Random(11), parse_packet(GENUINE.manifest), packets.WORK_BITS
    packets.WORK_BITS = 4
    try:
        out = []
        for n in range(12):
            version = V + rng.randrange(1, 1000)
            payload = bytearray(genuine.payload)
            payload[8:16] = version.to_bytes(8, "big")
            payload[-72:-8] = rng.randbytes(63) + bytes([rng.randrange(16)])
            raw = Packet.build(PacketType.MANIFEST, rng.getrandbits(32), version, 0, 1,
                               bytes(payload)).raw  # fmt: skip
            out.append(stamp(raw, 4 + n % 6))
        return out
    finally:
        packets.WORK_BITS = saved


FORGED = _forgeries()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([*FORGED, GENUINE.manifest]) | datagrams(), max_size=40))
def test_the_front_path_ranks_work_as_the_layered_path(packets_in: list[bytes]) -> None:
    """A pool of 3 and stamped forgeries of several levels of work: both paths queue, refuse for
    less work, evict for more and draw the same candidates."""
    saved, packets.WORK_BITS = packets.WORK_BITS, 4
    try:
        small = ReceiverConfig(candidate_slots=3, check_batch=1, check_cost_floor=0.025,
                               verify_share=0.025, verify_burst_seconds=0.025)  # fmt: skip
        fast, layered = rig(installed=0, seed=4, config=small), rig(installed=0, seed=4,
                                                                    config=small)  # fmt: skip
        for r in (fast, layered):
            r.receiver.cpu_clock = lambda: 0.0
        for payload in packets_in:
            assert fast.receiver.on_payload(payload) is True
            layered.receiver.on_datagram(payload, SOURCE)
            for r in (fast, layered):
                r.clock.now += 0.01
                r.receiver.poll()
            assert state(fast) == state(layered)
            assert [f for f, _ in fast.receiver.pool.items] == [
                f for f, _ in layered.receiver.pool.items]  # fmt: skip
    finally:
        packets.WORK_BITS = saved
