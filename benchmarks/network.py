"""Network updates: FEC efficiency under loss, install time under a flood, rejection costs, memory.

All runs are sans-IO: payloads go straight into ``UpdateReceiver.on_datagram`` (the loopback
sockets and frame parsing add the same cost with or without a flood). The object is a 1 MB body
(K = 714 symbols of 1400 bytes). Packet counts are in percent of K. Peers, measured in the same
run:

- packets per source packet: the 2012 design's plain repetition carousel (every chunk once per
  round, round after round, until the receiver has them all), same loss, same seeds;
- install time under a 50:1 flood of docs/PROTOCOL.md's flood mix: the same install without a flood;
- rejection costs: one SHA-256 of a 1436-byte symbol (the hash every data packet costs) and one
  Ed25519 verification (what a forged manifest would cost without the pre-filter and LRU);
- peak memory: ``memory_bound()``, the receiver's configured ceiling.
"""

from __future__ import annotations

import hashlib
import random
import statistics
import time
from collections.abc import Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from benchmarks.common import Row
from guest_tool.bundle import make_bundle
from guest_tool.push import EncodedUpdate, carousel, encode_update
from hv_emu.events import EventLog
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates.packets import Packet, PacketType, parse_packet
from hv_emu.updates.receiver import UpdateReceiver
from hv_emu.updates.service import UpdateService
from hv_emu.updates.verify import TrustStore

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
VERSION = 2
SOURCE = ("10.0.2.2", 0xDB01)
SEEDS = range(5)


def one_megabyte_update() -> EncodedUpdate:
    """A 1 MB .ndb body in 6,000-byte signatures (quick to parse and compile)."""
    rng = random.Random(1)
    body = b"".join(b"Bench.Net.%d:0:*:%s\n" % (i, rng.randbytes(3000).hex().encode())
                    for i in range(166))
    now = int(time.time())
    bundle, sig = make_bundle(body, kind="ndb", version=VERSION, private_key=KEY,
                              issued_at=now - 60, expires_at=now + 86400)
    return encode_update(bundle, sig, KEY, update_id=0xBE7C4)


def receiver() -> UpdateReceiver:
    trust = TrustStore()
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    trust.add_pem(pem, "bench key")
    events = EventLog(keep=False)
    service = UpdateService(trust, ActiveDatabase(SignatureDatabase.empty()), events,
                            max_size=16 << 20)
    return UpdateReceiver(service, rng=random.Random(7))


def feed_until_installed(rx: UpdateReceiver, packets: Iterator[bytes]) -> tuple[int, int]:
    """Deliver packets (polling after each) until installed: (packets fed, peak memory)."""
    peak = 0
    for fed, payload in enumerate(packets, 1):
        rx.on_datagram(payload, SOURCE)
        rx.poll()
        peak = max(peak, rx.memory_in_use())
        if rx.service.installed_version == VERSION:
            return fed, peak
    raise RuntimeError("the carousel ended before the update was installed")


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


# ------------------------------------------------------------------------------ flood
class Forger:
    """Pools of forged packets for the live update (the flood mix of docs/PROTOCOL.md: 50 %
    symbols, 10 % manifests with fresh uid/version and bad signatures, 20 % garbage, 20 % hash
    pages)."""

    def __init__(self, update: EncodedUpdate, pool: int = 4000) -> None:
        rng = random.Random(3)
        manifest, symbol = parse_packet(update.manifest), parse_packet(update.symbols[0])
        h, pages = symbol.header, len(update.pages)
        self.symbols = [Packet.build(PacketType.SYMBOL, h.update_id, h.db_version,
                                     rng.randrange(h.count), h.count,
                                     b"\0" + rng.randbytes(len(symbol.payload) - 1)).raw
                        for _ in range(pool)]  # source block 0: the attacker pays us a hash
        self.pages = [Packet.build(PacketType.HASHPAGE, h.update_id, h.db_version,
                                   rng.randrange(pages), pages, rng.randbytes(44 * 32)).raw
                      for _ in range(pool)]
        self.garbage = [rng.randbytes(rng.randrange(1500)) for _ in range(pool)]
        self.manifests = []
        for _ in range(pool):
            version = VERSION + rng.randrange(1, 1000)
            payload = bytearray(manifest.payload)
            payload[8:16] = version.to_bytes(8, "big")
            payload[-64:] = rng.randbytes(64)
            self.manifests.append(Packet.build(PacketType.MANIFEST, rng.getrandbits(32), version,
                                               0, 1, bytes(payload)).raw)
        self.rng = rng

    def mixed(self) -> bytes:
        roll, i = self.rng.random(), self.rng.randrange(len(self.symbols))
        if roll < 0.5:
            return self.symbols[i]
        if roll < 0.6:
            return self.manifests[i]
        return self.garbage[i] if roll < 0.8 else self.pages[i]


def flooded(update: EncodedUpdate, ratio: int, forger: Forger) -> Iterator[bytes]:
    for payload in carousel(update, rounds=None):
        for _ in range(ratio):
            yield forger.mixed()
        yield payload


def install_seconds(update: EncodedUpdate, ratio: int, forger: Forger) -> tuple[float, int]:
    rx = receiver()
    packets = flooded(update, ratio, forger) if ratio else carousel(update, rounds=None)
    start = time.perf_counter()
    _, peak = feed_until_installed(rx, packets)
    return time.perf_counter() - start, peak


# ------------------------------------------------------------------------------ costs
def per_packet_us(rx: UpdateReceiver, packets: list[bytes]) -> float:
    start = time.perf_counter()
    for payload in packets:
        rx.on_datagram(payload, SOURCE)
    return (time.perf_counter() - start) / len(packets) * 1e6


def per_call_us(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


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
    bad = forger.manifests[0]
    rx.on_datagram(bad, SOURCE)
    rx.budget.tokens = 1.0
    rx.poll()  # now in the known-bad LRU
    cases = [
        ("forged SYMBOL for the live session (hash_mismatch)", forger.symbols, sha),
        ("garbage datagram (bad_magic etc.)", forger.garbage, sha),
        ("SYMBOL for an unknown update (no_session)",
         [bytes(p[:8]) + b"\xff" * 4 + bytes(p[12:]) for p in forger.symbols[:2000]], sha),
        ("replayed forged MANIFEST (known_bad_manifest)", [bad] * 2000, ed25519),
    ]
    rows = []
    for label, packets, peer in cases:
        ours = statistics.median(per_packet_us(rx, packets) for _ in range(3))
        peer_name = "one SHA-256 of the packet" if peer is sha else "one Ed25519 verify"
        rows.append(Row(f"reject {label}", ours, "µs/packet", peer_name, peer))
    return rows


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
    # The flood's cost is a lottery (the real manifest against ~250 forged ones per copy at
    # 50:1): the median of three runs.
    quiet_runs = [install_seconds(update, 0, forger) for _ in range(3)]
    noisy_runs = [install_seconds(update, 50, forger) for _ in range(3)]
    quiet = statistics.median(t for t, _ in quiet_runs)
    noisy = statistics.median(t for t, _ in noisy_runs)
    rows.append(Row("install a 1 MB update, 50:1 forged flood (median of 3)", noisy, "s",
                    "same, no flood", quiet))
    rows += rejection_rows(update, forger)
    bound = receiver().memory_bound()
    rows.append(Row("receiver peak memory, 1 MB install under the 50:1 flood",
                    max(peak for _, peak in quiet_runs + noisy_runs) / 1e6, "MB",
                    "memory_bound() (configured cap)", bound / 1e6))
    return rows
