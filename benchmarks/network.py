"""Network updates: FEC efficiency under loss, install time under a flood, rejection costs, memory.

The loopback rows are in ``network_loopback.py``, what all share in ``network_fixtures.py``.
All other runs are sans-IO: payloads go straight into ``UpdateReceiver.on_datagram`` (the loopback
sockets and frame parsing add the same cost with or without a flood). The object is a 1 MB body
(K = 714 symbols of 1400 bytes). Packet counts are in percent of K. Peers, measured in the same
run:

- packets per source packet: the 2012 design's plain repetition carousel (every chunk once per
  round, round after round, until the receiver has them all), same loss, same seeds;
- install time under a 50:1 flood of docs/PROTOCOL.md's flood mix, and under 50 forged MANIFESTs
  per genuine packet, in simulated time (the genuine sender at ``GENUINE_PPS``, 20 % loss; the
  verification budget charged the real CPU time of each check): the same install without a flood;
- install time over loopback sockets (``GuestNetwork``: I/O thread, verifier thread) while one
  flood process sends as fast as it can (garbage with valid headers, bit-flipped copies of the
  genuine frames, replays of an older genuine update, forged manifests) and ``push`` sends the
  update at ``GENUINE_PPS`` with 20 % loss: the same install without the flood process;
- rejection costs: one SHA-256 of a 1436-byte symbol (the hash every data packet costs) and one
  Ed25519 verification (what a forged manifest would cost without the pre-filter and LRU);
- peak memory: ``memory_bound()``, the receiver's configured ceiling.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from benchmarks.common import Row
from benchmarks.network_fixtures import (
    FLOOD_LEAD,
    GENUINE_PPS,
    KEY,
    LOSS,
    SEEDS,
    SOURCE,
    VERSION,
    Forger,
    one_megabyte_update,
    per_call_us,
    per_packet_us,
    receiver,
)
from benchmarks.network_loopback import io_path_rows, loopback_rows
from guest_tool.bundle import make_bundle
from guest_tool.encoding import EncodedUpdate, carousel, encode_update
from guest_tool.push import frame_for
from hv_emu import layout
from hv_emu.net.backends import UdpBackend
from hv_emu.updates import packets as wire
from hv_emu.updates.packets import Manifest, PacketType, parse_packet

__all__ = ["io_path_rows", "loopback_rows", "one_megabyte_update", "run"]


# ------------------------------------------------------------------------------ loss
def fec_needed(update: EncodedUpdate, loss: float, seed: int) -> tuple[float, float]:
    """(SYMBOL packets sent, all packets sent) per source packet until the receiver installed."""
    rx, rng = receiver(), random.Random(seed)
    symbols = sent = 0
    for payload in carousel(update, rounds=None):
        sent += 1
        symbols += parse_packet(payload).header.type is PacketType.SYMBOL
        if rng.random() < loss:
            continue
        rx.on_datagram(payload, SOURCE)
        rx.poll()
        if rx.service.installed_version == VERSION:
            return symbols / update.source_symbols, sent / update.source_symbols
    raise RuntimeError("unreachable: the carousel is endless")


def repetition_needed(k: int, loss: float, seed: int) -> float:
    """The 2012 design: chunks 0..K-1 round after round until every one arrived once."""
    rng, have, sent = random.Random(seed), bytearray(k), 0
    missing = k
    while True:
        for chunk in range(k):
            sent += 1
            if rng.random() >= loss and not have[chunk]:
                have[chunk], missing = 1, missing - 1
                if missing == 0:
                    return sent / k


class SimClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulated_install(update: EncodedUpdate, ratio: int, make: Callable[[], bytes] | None,
                      seed: int) -> tuple[float, int, float]:
    """(simulated seconds until installed, peak memory, real seconds spent): the genuine carousel
    at GENUINE_PPS with LOSS, ``ratio`` packets of ``make()`` around each genuine one. The
    budget refills with simulated time and is charged the real CPU time of every check."""
    clock, rng = SimClock(), random.Random(seed)
    rx = receiver(clock)
    step = 1.0 / (GENUINE_PPS * (ratio + 1))
    real = time.perf_counter()
    if make is not None:  # the flood runs before the update starts: budget spent, pool full
        for _ in range(int(FLOOD_LEAD / step)):
            clock.now += step
            rx.on_datagram(make(), SOURCE)
            rx.poll()
    peak, start = 0, clock.now
    for payload in carousel(update, rounds=None):
        batch = [make() for _ in range(ratio)] if make is not None else []
        if rng.random() >= LOSS:
            batch.insert(rng.randrange(len(batch) + 1), payload)
        for packet in batch:
            clock.now += step
            rx.on_datagram(packet, SOURCE)
            rx.poll()
        clock.now += step * (ratio + 1 - len(batch))
        peak = max(peak, rx.memory_in_use())
        if rx.service.installed_version == VERSION:
            return clock.now - start, peak, time.perf_counter() - real
    raise RuntimeError("unreachable: the carousel is endless")


def simulated_rows(update: EncodedUpdate, forger: Forger) -> list[Row]:
    runs = {name: [simulated_install(update, ratio, make, seed) for seed in SEEDS]
            for name, ratio, make in (("quiet", 0, None), ("mix", 50, forger.mixed),
                                      ("manifests", 50, forger.manifest))}
    quiet = statistics.median(t for t, _, _ in runs["quiet"])
    rows = []
    for name, label in (("mix", "50:1 flood mix (5 forged manifests per genuine packet)"),
                        ("manifests", "50 forged MANIFESTs per genuine packet")):
        rows.append(Row(f"install a 1 MB update, {label}, 20% loss, {GENUINE_PPS:,} genuine "
                        f"packets/s, simulated time (median of {len(SEEDS)})",
                        statistics.median(t for t, _, _ in runs[name]), "s",
                        "same, no flood", quiet))
    bound = receiver().memory_bound()
    peak = max(p for rs in runs.values() for _, p, _ in rs)
    rows.append(Row("receiver peak memory, simulated floods above", peak / 1e6, "MB",
                    "memory_bound() (configured cap)", bound / 1e6))
    return rows


# ------------------------------------------------------------------------------ costs
def budget_rows(forger: Forger) -> list[Row]:
    """What a forged manifest costs us (one check, on the verifier's CPU clock) and its sender
    (building nothing: one sendto of a prepared datagram on loopback), and the checks a second
    the default budget pays for."""
    rx = receiver()
    forged = [forger.manifest() for _ in range(2000)]
    checks = []
    # A forger who paid for work stamps (2^18 SHA-256 each, docs/PROTOCOL.md): what a check of
    # his manifests costs, with the stamp rule waived here instead of stamping 2,000 of them.
    saved, wire.WORK_BITS = wire.WORK_BITS, 0
    try:
        for raw in forged:
            rx.on_datagram(raw, SOURCE)
            checks += rx.take_checks()
    finally:
        wire.WORK_BITS = saved
    ours = statistics.median(rx.check(c).cost for c in checks) * 1e6
    sock = UdpBackend(("127.0.0.1", 0), ("127.0.0.1", 9))  # discard port: nobody reads
    frame = frame_for(forged[0], dst_mac=layout.HV_MAC, dst_ip=IPv4Address(layout.HV_IPV4),
                      port=layout.UPDATE_UDP_PORT)
    theirs = per_call_us(lambda: sock.send_frame(frame), 20000)
    sock.close()
    share = rx.config.verify_share
    return [
        Row("check one forged MANIFEST (CPU time on the verifier)", ours, "µs",
            "its sender: one sendto on loopback", theirs),
        Row(f"forged MANIFEST checks a second at verify_share = {share}",
            share / (ours / 1e6), "checks/s", "forged MANIFESTs one sender sends a second",
            1e6 / theirs),
    ]


def rejection_rows(update: EncodedUpdate, forger: Forger) -> list[Row]:
    rx = receiver()
    rx.on_datagram(update.manifest, SOURCE)
    rx.poll()
    for page in update.pages:
        rx.on_datagram(page, SOURCE)
    sha = per_call_us(lambda: hashlib.sha256(forger.symbols[0]).digest(), 20000)
    public = KEY.public_key()
    message, signature = b"m" * 32, KEY.sign(b"m" * 32)
    ed25519 = per_call_us(lambda: public.verify(signature, message), 500)
    bad = forger.manifests[0]  # no work stamp: dropped after one hash (no_work)
    cases = [
        ("forged SYMBOL for the live session (hash_mismatch)", forger.symbols, sha),
        ("garbage datagram (bad_magic etc.)", forger.garbage, sha),
        ("SYMBOL for an unknown update (no_session)",
         [bytes(p[:8]) + b"\xff" * 4 + bytes(p[12:]) for p in forger.symbols[:2000]], sha),
        ("forged MANIFEST without a work stamp (no_work)", [bad] * 2000, ed25519),
    ]
    rows = []
    for label, packets, peer in cases:
        ours = statistics.median(per_packet_us(rx, packets) for _ in range(3))
        peer_name = "one SHA-256 of the packet" if peer is sha else "one Ed25519 verify"
        rows.append(Row(f"reject {label}", ours, "µs/packet", peer_name, peer))
    return rows


# ------------------------------------------------------------------------------ large updates
#: Signatures in the large update: a database the size issue 11 asks for.
LARGE_SIGNATURES = 100_000


def large_update() -> EncodedUpdate:
    """100,000 body signatures in the style of rfxn.ndb (unique names, 12-40 bytes of hex
    pattern each): 7.7 MB, several source blocks, index pages."""
    rng = random.Random(VERSION)
    body = b"".join(
        b"Gen.Php.Inject.%d:0:*:%s\n" % (i, rng.randbytes(rng.randrange(12, 40)).hex().encode())
        for i in range(LARGE_SIGNATURES))
    now = int(time.time())
    bundle, sig = make_bundle(body, kind="ndb", version=VERSION, private_key=KEY,
                              issued_at=now - 60, expires_at=now + 86400)
    return encode_update(bundle, sig, KEY, update_id=0xB16)


def large_rows(small: EncodedUpdate) -> list[Row]:
    """The 100,000-signature update against the 1 MB one: simulated install time at
    ``GENUINE_PPS`` and 20 % loss, the receiver's real CPU seconds, its peak memory, and all
    packets per source symbol at 30 % loss."""
    big = large_update()
    manifest = parse_packet(big.manifest)
    m = Manifest.from_payload(manifest.header, manifest.payload)
    t_big, peak, cpu = simulated_install(big, 0, None, 1)
    t_small, _, cpu_small = simulated_install(small, 0, None, 1)
    _, all_big = fec_needed(big, 0.3, 1)
    bound = receiver().memory_bound()
    label = (f"{LARGE_SIGNATURES:,}-signature update ({m.header.body_len / 1e6:.1f} MB, "
             f"{m.block_count} blocks, {m.index_pages} index pages)")
    return [
        Row(f"install the {label}, 20% loss, {GENUINE_PPS:,} packets/s, simulated time", t_big,
            "s", "the 1 MB update", t_small),
        Row("receiver CPU for that install (submit included)", cpu, "s", "the 1 MB update",
            cpu_small),
        Row(f"receiver peak memory, the {label}", peak / 1e6, "MB", "memory_bound()",
            bound / 1e6),
        Row(f"all packets until installed, 30% loss, the {label}", 100 * all_big, "% of K",
            "the 1.5 K goal", 150.0),
    ]


def run() -> list[Row]:
    update = one_megabyte_update()
    k = update.source_symbols
    rows = []
    for loss in (0.1, 0.2, 0.3):
        ours = [fec_needed(update, loss, seed) for seed in SEEDS]
        plain = statistics.mean(repetition_needed(k, loss, seed) for seed in SEEDS)
        rows.append(Row(f"SYMBOL packets sent until installed, {loss:.0%} loss (K = {k})",
                        100 * statistics.mean(s for s, _ in ours), "% of K",
                        "plain repetition carousel", 100 * plain))
        rows.append(Row(f"all packets (+ manifests, pages) until installed, {loss:.0%} loss",
                        100 * statistics.mean(a for _, a in ours), "% of K",
                        "plain repetition carousel", 100 * plain))
    forger = Forger(update)
    rows += budget_rows(forger)
    rows += simulated_rows(update, forger)
    rows += io_path_rows(update)
    rows += loopback_rows(update)
    rows += rejection_rows(update, forger)
    rows += large_rows(update)
    return rows
