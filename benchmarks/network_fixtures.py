"""What the network benchmarks share: the signing key, the 1 MB update, a receiver, the forger.

The object is a 1 MB body (K = 714 symbols of 1400 bytes), signed by a fixed Ed25519 key; the
receiver runs on a fresh service (sans-IO). ``Forger`` makes the pools of forged packets of
docs/PROTOCOL.md's flood mix; ``GENUINE_PPS``, ``LOSS`` and ``FLOOD_LEAD`` are the genuine
sender's pace, its loss and how long a flood runs before the update starts, in every flood row.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from guest_tool.bundle import make_bundle
from guest_tool.encoding import EncodedUpdate, carousel, encode_update
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


def one_megabyte_update(version: int = VERSION) -> EncodedUpdate:
    """A 1 MB .ndb body in 6,000-byte signatures (quick to parse and compile)."""
    rng = random.Random(version)
    body = b"".join(b"Bench.Net.%d:0:*:%s\n" % (i, rng.randbytes(3000).hex().encode())
                    for i in range(166))
    now = int(time.time())
    bundle, sig = make_bundle(body, kind="ndb", version=version, private_key=KEY,
                              issued_at=now - 60, expires_at=now + 86400)
    return encode_update(bundle, sig, KEY, update_id=0xBE7C0 + version)


def receiver(clock: Callable[[], float] = time.monotonic, *, keep_events: bool = False,
             installed: EncodedUpdate | None = None) -> UpdateReceiver:
    """A receiver on a fresh service (at ``installed``'s version if given)."""
    trust = TrustStore()
    pem = KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    trust.add_pem(pem, "bench key")
    events = EventLog(keep=keep_events)
    service = UpdateService(trust, ActiveDatabase(SignatureDatabase.empty()), events,
                            max_size=16 << 20)
    rx = UpdateReceiver(service, clock=clock, rng=random.Random(7))
    if installed is not None:  # installed by VMCALL before the run: its bundle, re-assembled
        old = rx.service
        feed = iter(carousel(installed, rounds=None))
        while old.installed_version < parse_packet(installed.manifest).header.db_version:
            rx.on_datagram(next(feed), SOURCE)
            rx.poll()
        rx.counters.clear()
    return rx


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


#: Genuine packets a second from the sender (simulated and loopback runs): a 1 MB update at 20 %
#: loss then takes about half a second without a flood.
GENUINE_PPS = 2000
LOSS = 0.2
#: Seconds the flood runs before the update starts.
FLOOD_LEAD = 0.5


class Forger:
    """Pools of forged packets for the live update (the flood mix of docs/PROTOCOL.md: 50 %
    symbols, 10 % manifests with fresh uid/version and bad signatures, 20 % garbage, 20 % hash
    pages)."""

    def __init__(self, update: EncodedUpdate, pool: int = 4000) -> None:
        rng = random.Random(3)
        manifest, symbol = parse_packet(update.manifest), parse_packet(update.symbols[0])
        h, pages = symbol.header, len(update.pages)
        indexes = [rng.randrange(h.count) for _ in range(pool)]
        # The FEC Payload ID the index names (one block: SBN 0, ESI = index): the attacker makes
        # us pay a hash, not just a comparison.
        self.symbols = [Packet.build(PacketType.SYMBOL, h.update_id, h.db_version, i, h.count,
                                     i.to_bytes(4, "big")
                                     + rng.randbytes(len(symbol.payload) - 4)).raw
                        for i in indexes]
        self.pages = [Packet.build(PacketType.HASHPAGE, h.update_id, h.db_version,
                                   rng.randrange(pages), pages, rng.randbytes(1408)).raw
                      for _ in range(pool)]
        self.garbage = [rng.randbytes(rng.randrange(1500)) for _ in range(pool)]
        self.manifests = []
        for _ in range(pool):
            version = VERSION + rng.randrange(1, 1000)
            payload = bytearray(manifest.payload)
            payload[8:16] = version.to_bytes(8, "big")
            # A canonical S (below the group order): else Ed25519 refuses it without the
            # costly part of a verification, and a forger who knows that sends canonical ones.
            payload[-72:-8] = rng.randbytes(63) + bytes([rng.randrange(16)])  # then the stamp
            self.manifests.append(Packet.build(PacketType.MANIFEST, rng.getrandbits(32), version,
                                               0, 1, bytes(payload)).raw)
        self.rng = rng

    def manifest(self) -> bytes:
        """A forged manifest never sent before (fresh update id): each one costs a check."""
        raw = bytearray(self.manifests[self.rng.randrange(len(self.manifests))])
        raw[8:12] = self.rng.randbytes(4)
        return bytes(raw)

    def mixed(self) -> bytes:
        roll, i = self.rng.random(), self.rng.randrange(len(self.symbols))
        if roll < 0.5:
            return self.symbols[i]
        if roll < 0.6:
            return self.manifest()
        return self.garbage[i] if roll < 0.8 else self.pages[i]


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
