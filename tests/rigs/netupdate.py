"""Shared pieces of the network-update tests: a key, a service, updates, a fake clock, a channel,
a known body to encode."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from guest_tool.bundle import make_bundle
from guest_tool.encoding import EncodedUpdate, encode_symbols, encode_update
from hv_emu.events import EventLog
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates.receiver import ReceiverConfig, UpdateReceiver
from hv_emu.updates.service import UpdateService
from hv_emu.updates.verify import TrustStore

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SOURCE = ("10.0.2.2", 0xDB01)
NOW = int(time.time())


def trust_of(*keys: Ed25519PrivateKey) -> TrustStore:
    trust = TrustStore()
    for key in keys:
        pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        trust.add_pem(pem, "test key")
    return trust


def database_text(version: int, lines: int = 40, width: int = 12) -> bytes:
    """A ClamAV .ndb body that differs per version (so the installed hash says which arrived);
    ``width`` bytes per signature: long lines make a large body that is quick to parse."""
    rng = random.Random(version)
    return b"".join(
        b"Test.Net.v%d.%d:0:*:%s\n" % (version, i, rng.randbytes(width).hex().encode())
        for i in range(lines)
    )


def signed(version: int, *, body: bytes | None = None, key: Ed25519PrivateKey = KEY,
           issued_at: int = NOW - 60, expires_at: int = NOW + 86400) -> tuple[bytes, bytes]:
    """A bundle and its detached signature."""
    text = database_text(version) if body is None else body
    return make_bundle(text, kind="ndb", version=version, private_key=key,
                       issued_at=issued_at, expires_at=expires_at)


def encoded(version: int, *, lines: int = 40, width: int = 12, update_id: int = 0xC0FFEE00,
            **kw: object) -> EncodedUpdate:
    bundle, sig = signed(version, body=database_text(version, lines, width))
    return encode_update(bundle, sig, KEY, update_id=update_id + version, **kw)  # type: ignore[arg-type]


#: 64,000 bytes anyone can rebuild: SHA-256 of 0, 1, 2, ... 1999 as 4-byte big-endian numbers.
KNOWN_BODY = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2000))


def symbols_digest(body: bytes) -> str:
    """SHA-256 of the 2K + 1 RaptorQ symbols of ``body`` (FEC Payload IDs included), T = 1400."""
    k = -(-len(body) // 1400)
    return hashlib.sha256(b"".join(encode_symbols(body, 1400, 2 * k + 1))).hexdigest()


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """A service at some installed version and a receiver on a fake monotonic clock."""

    service: UpdateService
    receiver: UpdateReceiver
    clock: FakeClock
    events: EventLog
    sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def feed(self, packets: Iterable[bytes], *, step: float = 0.0005,
             until_installed: int | None = None) -> int:
        """Deliver ``packets`` (polling after each); stop once ``until_installed`` is in."""
        fed = 0
        for payload in packets:
            self.receiver.on_datagram(payload, SOURCE)
            self.clock.now += step
            self.receiver.poll()
            fed += 1
            assert self.receiver.memory_in_use() <= self.receiver.memory_bound()
            assert len(self.receiver.sessions) <= self.receiver.config.max_sessions
            if until_installed is not None and self.service.installed_version >= until_installed:
                break
        return fed

    @property
    def installed(self) -> int:
        return self.service.installed_version


def rig(*, installed: int = 0, config: ReceiverConfig | None = None, seed: int = 1,
        trust: TrustStore | None = None) -> Rig:
    events = EventLog()
    service = UpdateService(trust or trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()),
                            events, max_size=16 << 20)
    if installed:
        bundle, sig = signed(installed)
        assert service.submit(bundle, sig, "vmcall") == 0
        # Compiled before the test starts: a worker still compiling would be measured with the
        # receiver by tests that trace allocations, and race with tests that count events.
        assert service.wait_active(timeout=60)
    clock = FakeClock()
    receiver = UpdateReceiver(service, config=config or ReceiverConfig(), clock=clock,
                              rng=random.Random(seed))
    return Rig(service, receiver, clock, events)


def lossy(packets: Iterable[bytes], loss: float, rng: random.Random) -> Iterable[bytes]:
    return (p for p in packets if rng.random() >= loss)


# ------------------------------------------------------------------------------ forgeries
def stamp(raw: bytes) -> bytes:
    """A forged MANIFEST with the work stamp its forger pays for (``packets.has_work``)."""
    from guest_tool.encoding import stamp as work_stamp

    return work_stamp(raw)


def forged_manifests(genuine_manifest: bytes, n: int, seed: int = 1) -> list[bytes]:
    """Unique forgeries of ``genuine_manifest``: fresh update id and a version above it, the
    trusted key id, a canonical random manifest signature (so each costs a full verification),
    each stamped at the protocol minimum (``stamp``; the caller may lower ``WORK_BITS``)."""
    from hv_emu.updates.packets import Packet, PacketType, parse_packet

    rng, genuine = random.Random(seed), parse_packet(genuine_manifest)
    out = []
    for _ in range(n):
        version = genuine.header.db_version + rng.randrange(1, 1000)
        payload = bytearray(genuine.payload)
        payload[8:16] = version.to_bytes(8, "big")
        payload[-72:-8] = rng.randbytes(63) + bytes([rng.randrange(16)])
        out.append(stamp(Packet.build(PacketType.MANIFEST, rng.getrandbits(32), version, 0, 1,
                                      bytes(payload)).raw))
    return out


def reheader(packet: bytes, **fields: int) -> bytes:
    """``packet`` with common-header fields replaced (payload untouched)."""
    from hv_emu.updates.packets import Packet, parse_packet

    parsed = parse_packet(packet)
    h = parsed.header
    values = {"type": h.type, "update_id": h.update_id, "db_version": h.db_version,
              "index": h.index, "count": h.count}
    values.update(fields)
    return Packet.build(values["type"], values["update_id"], values["db_version"],  # type: ignore[arg-type]
                        values["index"], values["count"], parsed.payload).raw


class Forger:
    """An off-path attacker who has sniffed one genuine update: forged symbols and pages for the
    live session, forged manifests (fresh uid and version, bad signature), garbage."""

    def __init__(self, genuine: EncodedUpdate, rng: random.Random, *,
                 stamped: bool = False) -> None:
        from hv_emu.updates.packets import Manifest, parse_packet

        #: ``stamped``: the forger pays for a work stamp on every manifest (``packets.WORK_BITS``
        #: zero bits; tests that want many lower ``WORK_BITS`` first), else they are ``no_work``.
        self.genuine, self.rng, self.stamped = genuine, rng, stamped
        self.manifest = parse_packet(genuine.manifest)
        self.blocks = Manifest.from_payload(self.manifest.header, self.manifest.payload).block_count
        self.symbol = parse_packet(genuine.symbols[0])
        self.page_count = len(genuine.pages)

    def symbol_packet(self) -> bytes:
        from hv_emu.updates.packets import Packet, PacketType, block_of

        h = self.symbol.header
        index = self.rng.randrange(h.count)
        block, esi = block_of(index, self.blocks)  # the right FEC Payload ID: only the hash fails
        fec_id = ((block << 24) | esi).to_bytes(4, "big")
        return Packet.build(PacketType.SYMBOL, h.update_id, h.db_version, index, h.count,
                            fec_id + self.rng.randbytes(len(self.symbol.payload) - 4)).raw

    def page_packet(self) -> bytes:
        from hv_emu.updates.packets import Packet, PacketType

        h = self.symbol.header
        return Packet.build(PacketType.HASHPAGE, h.update_id, h.db_version,
                            self.rng.randrange(self.page_count), self.page_count,
                            self.rng.randbytes(1408)).raw

    def manifest_packet(self) -> bytes:
        """Valid structure, trusted key id, fresh uid and version: only signatures are wrong."""
        from hv_emu.updates.packets import Packet, PacketType

        h = self.manifest.header
        version = h.db_version + self.rng.randrange(1, 1000)
        payload = bytearray(self.manifest.payload)
        payload[8:16] = version.to_bytes(8, "big")
        payload[-72:-8] = self.rng.randbytes(64)  # the manifest signature; then the work stamp
        raw = Packet.build(PacketType.MANIFEST, self.rng.getrandbits(32), version, 0, 1,
                           bytes(payload)).raw
        return stamp(raw) if self.stamped else raw

    def garbage(self) -> bytes:
        return self.rng.randbytes(self.rng.randrange(0, 1500))

    def mixed(self) -> bytes:
        """docs/PROTOCOL.md's flood mix: 50 % symbols, 10 % manifests, 20 % garbage, 20 % pages."""
        roll = self.rng.random()
        if roll < 0.5:
            return self.symbol_packet()
        if roll < 0.6:
            return self.manifest_packet()
        if roll < 0.8:
            return self.garbage()
        return self.page_packet()


def flooded(legit: Iterable[bytes], ratio: int, make: Callable[[], bytes]) -> Iterator[bytes]:
    """``ratio`` forged packets (from ``make``) around every genuine one."""
    for packet in legit:
        for _ in range(ratio):
            yield make()
        yield packet
