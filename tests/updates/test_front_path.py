"""The receiver's raw front path (``UpdateReceiver.on_payload``, ``updates/front.py``) counts every
datagram as the layered path (``on_datagram``) does: on arbitrary and mutated datagrams of a live
update, the same counters, the same sessions, the same install. Its deferred UDP checksum
(``intact``) is asked at most once, only for a packet about to be taken, and a failed one leaves
the receiver as it was."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.encoding import carousel
from hv_emu.updates.packets import HEADER_LEN
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
