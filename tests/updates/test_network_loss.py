"""Loss, bursts, reordering, duplicates, late joiners and floods (attack classes D and E of
docs/PROTOCOL.md): every case completes with the right database, the receiver's memory within its
bound on every packet (``Rig.feed``), and at 30 % random loss the sender sends at most 1.5 K symbols
on average."""

from __future__ import annotations

import hashlib
import itertools
import random
import statistics
from collections.abc import Iterable, Iterator

import pytest

from guest_tool.encoding import carousel
from hv_emu.updates import packets
from hv_emu.updates.packets import PacketType, parse_packet
from tests.rigs.netupdate import Forger, Rig, database_text, encoded, flooded, lossy, rig

V = 5
WIDTH = 6000  # bytes per signature: a large body that parses and compiles quickly
BIG = encoded(V, lines=35, width=WIDTH)  # K = 301 symbols of 1400 bytes
SMALL = encoded(V, lines=12, width=WIDTH)  # K = 103


def installed_right(r: Rig, lines: int) -> bool:
    """Installed version V, and the accepted body is the one that was pushed."""
    event = r.events.of("update_accepted")[-1]
    body = database_text(V, lines, WIDTH)
    return r.installed == V and event["sha256"] == hashlib.sha256(body).hexdigest()


def symbols_until_installed(loss: float, seed: int) -> float:
    """Symbols the sender sent (lost ones included) until the receiver installed, per K."""
    r, rng, symbols = rig(installed=2), random.Random(seed), 0
    for packet in carousel(BIG, rounds=None):
        symbols += parse_packet(packet).header.type is PacketType.SYMBOL
        if rng.random() >= loss:
            r.feed([packet])
            if r.installed == V:
                assert installed_right(r, 35)
                return symbols / BIG.source_symbols
    raise AssertionError("unreachable: the carousel is endless")


@pytest.mark.parametrize(("loss", "limit"), [(0.1, 1.2), (0.2, 1.35), (0.3, 1.5)])
def test_random_loss_needs_few_symbols(loss: float, limit: float) -> None:
    needed = [symbols_until_installed(loss, seed) for seed in range(6)]
    # RaptorQ needs about K received symbols: K / (1 - loss) sent, whatever was lost.
    assert statistics.mean(needed) <= limit, needed


def gilbert_elliott(packets: Iterable[bytes], rng: random.Random) -> Iterator[bytes]:
    """Bursty loss: a good state (2 % loss) and a bad one (80 %), bad ~29 % of the time."""
    bad = False
    for packet in packets:
        bad = rng.random() < (0.75 if bad else 0.1)
        if rng.random() >= (0.8 if bad else 0.02):
            yield packet


def test_bursty_loss_completes() -> None:
    r = rig(installed=2)
    r.feed(gilbert_elliott(carousel(BIG, rounds=4), random.Random(8)), until_installed=V)
    assert installed_right(r, 35)


def test_total_reordering_completes() -> None:
    packets = list(carousel(SMALL, rounds=4))
    random.Random(9).shuffle(packets)
    r = rig(installed=2)
    r.feed(packets, until_installed=V)
    assert installed_right(r, 12)


def test_every_packet_three_times_completes() -> None:
    tripled = (p for packet in carousel(SMALL, rounds=1) for p in (packet, packet, packet))
    r = rig(installed=2)
    r.feed(tripled, until_installed=V)
    assert installed_right(r, 12)
    assert r.receiver.counters["duplicate"] >= 2 * r.receiver.counters["symbol_accepted"]


def test_late_joiner_completes_in_the_next_round() -> None:
    one_round = len(list(carousel(SMALL, rounds=1)))
    late = itertools.islice(carousel(SMALL, rounds=3), one_round // 2, None)
    r = rig(installed=2)
    fed = r.feed(late, until_installed=V)
    assert installed_right(r, 12) and fed <= 2 * one_round


def test_one_manifest_copy_is_enough() -> None:
    packets = list(carousel(SMALL, rounds=3))
    manifests = [i for i, p in enumerate(packets) if p == SMALL.manifest]
    keep = manifests[len(manifests) // 2]
    r = rig(installed=2)
    r.feed((p for i, p in enumerate(packets) if p != SMALL.manifest or i == keep),
           until_installed=V)
    assert installed_right(r, 12)


@pytest.mark.parametrize("ratio", [50, 200])
def test_flood_of_forged_manifests_and_chunks(ratio: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Forged manifests that carry a work stamp (cheaper here: 2^4 hashes instead of 2^18), so
    # they reach the verifier; without one they would cost a hash each (``no_work``).
    monkeypatch.setattr(packets, "WORK_BITS", 4)
    forger = Forger(SMALL, random.Random(ratio), stamped=True)
    r = rig(installed=2)
    stream = flooded(lossy(carousel(SMALL, rounds=None), 0.3, random.Random(1)), ratio,
                     forger.mixed)
    start = r.clock.now
    fed = r.feed(stream, step=0.005, until_installed=V)
    assert installed_right(r, 12)
    elapsed = r.clock.now - start
    c = r.receiver.config
    assert r.receiver.counters["verifications"] <= c.verify_burst + c.verify_rate * elapsed
    assert r.receiver.counters["bad_signature"] > 0 and r.receiver.counters["hash_mismatch"] > 0
    assert fed > ratio * SMALL.source_symbols  # the flood really outnumbered the update
