"""Network updates: FEC efficiency under loss, install time under a flood, rejection costs, memory.

All runs are sans-IO: payloads go straight into ``UpdateReceiver.on_datagram`` (the loopback
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
import io
import pickle
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from benchmarks.common import Row
from guest_tool.bundle import make_bundle
from guest_tool.encoding import EncodedUpdate, carousel, encode_update
from guest_tool.push import frame_for, push
from hv_emu import layout
from hv_emu.events import EventLog
from hv_emu.net import frames as frame_path
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.switch import NetSwitch
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates import packets as wire
from hv_emu.updates.packets import Manifest, Packet, PacketType, parse_packet
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


# ------------------------------------------------------------------------------ simulated time
#: Genuine packets a second from the sender (simulated and loopback runs): a 1 MB update at 20 %
#: loss then takes about half a second without a flood.
GENUINE_PPS = 2000
LOSS = 0.2
#: Seconds the flood runs before the update starts.
FLOOD_LEAD = 0.5


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


# ------------------------------------------------------------------------------ loopback flood
#: The flood process: sends the pickled frames round and round, as fast as it can; every
#: forged manifest (a bytearray: no UDP checksum) gets a fresh counter in its last 8 bytes (the
#: manifest signature) before each send, so no two are alike and none is a known failure.
FLOOD_SENDER = """
import pickle, socket, sys, time
frames = pickle.load(open(sys.argv[1], "rb"))
addr, seconds, most = ("127.0.0.1", int(sys.argv[2])), float(sys.argv[3]), int(sys.argv[4])
rate = float(sys.argv[5])  # datagrams a second; 0: as fast as it can
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setblocking(False)
sent, start, counter = 0, time.perf_counter(), 0
end = start + seconds
try:
    while sent < most and time.perf_counter() < end:
        for frame in frames:
            if type(frame) is bytearray:
                counter += 1
                frame[-8:] = counter.to_bytes(8, "big")
            try:
                sock.sendto(frame, addr)
            except OSError:
                pass
            sent += 1
            if rate and sent % 100 == 0:
                ahead = sent / rate - (time.perf_counter() - start)
                if ahead > 0:
                    time.sleep(ahead)
except KeyboardInterrupt:
    pass
print(sent, time.perf_counter() - start, flush=True)
"""
#: Bounds of a flood process: seconds and datagrams.
FLOOD_SECONDS = 60.0
FLOOD_MOST = 20_000_000
#: Longest one loopback install may take before the run counts as failed.
LOOPBACK_PATIENCE = 40.0


class _AnySource(UdpBackend):
    """The hypervisor's socket, taking datagrams from any source (a spoofing attacker's model:
    on loopback the flood cannot spoof the pusher's address, so the address check is off)."""

    def _accept(self, frame: bytes, source: tuple[str, int]) -> bool:
        self.stats["rx"] += 0
        return True


def flood_frames(update: EncodedUpdate, older: EncodedUpdate,
                 pool: int = 8000) -> list[bytes | bytearray]:
    """The mixed flood, as frames to the hypervisor: a quarter each of garbage with valid
    headers, bit-flipped copies of the genuine frames, replays of an older genuine update, and
    forged manifests (fresh update id and version, trusted key id, bad signatures)."""
    rng, forger = random.Random(11), Forger(update, pool=pool // 4)
    genuine = [update.manifest, *update.pages, *update.symbols]
    replays = list(carousel(older, rounds=1))
    payloads = []
    for i in range(pool):
        kind = i % 4
        if kind == 0:
            h = parse_packet(update.symbols[0]).header
            payloads.append(Packet.build(rng.choice(list(PacketType)), rng.getrandbits(32),
                                         h.db_version + rng.randrange(-2, 3), 0, 1,
                                         rng.randbytes(rng.randrange(1400))).raw)
        elif kind == 1:
            packet = bytearray(rng.choice(genuine))
            bit = rng.randrange(8 * len(packet))
            packet[bit // 8] ^= 1 << (bit % 8)
            payloads.append(bytes(packet))
        elif kind == 2:
            payloads.append(replays[i % len(replays)])
        else:
            payloads.append(forger.manifests[i // 4 % len(forger.manifests)])
    hv = IPv4Address(layout.HV_IPV4)
    frames: list[bytes | bytearray] = []
    for i, payload in enumerate(payloads):
        if i % 4 == 3:  # a forged manifest: no checksum, so the sender can vary its signature
            frames.append(bytearray(build_udp_frame(
                src_mac=layout.PUSH_SENDER_MAC, dst_mac=layout.HV_MAC,
                src_ip=layout.PUSH_SENDER_IPV4, dst_ip=hv, src_port=layout.PUSH_SENDER_UDP_PORT,
                dst_port=layout.UPDATE_UDP_PORT, payload=payload, udp_checksum_on=False)))
        else:
            frames.append(frame_for(payload, dst_mac=layout.HV_MAC, dst_ip=hv,
                                    port=layout.UPDATE_UDP_PORT))
    return frames


class _Installed(Exception):
    pass


def loopback_install(update: EncodedUpdate, older: EncodedUpdate,
                     frames_file: Path | None, flood_rate: float = 0.0) -> dict[str, float]:
    """Push ``update`` over loopback into a GuestNetwork (with a flood process if
    ``frames_file``): seconds until installed, peak memory, versions installed, flood rates."""
    rx = receiver(keep_events=True, installed=older)
    backend = _AnySource(("127.0.0.1", 0))
    port = backend.local_address[1]
    network = GuestNetwork(backend, NetConfig(), guest_mac=bytes.fromhex("525400000001"),
                           on_update=lambda d: rx.on_datagram(d.payload, SOURCE), poll=rx.poll,
                           checks=rx)
    network.start()
    flood = None
    result: dict[str, float] = {}
    try:
        if frames_file is not None:
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOOD_SENDER, str(frames_file), str(port),
                 str(FLOOD_SECONDS), str(FLOOD_MOST), str(flood_rate)],
                stdout=subprocess.PIPE, text=True)
            time.sleep(FLOOD_LEAD)  # the flood is at full rate before the update starts
        before = network.under_lock(lambda: rx.counters["datagrams"])
        start = time.perf_counter()
        peak = 0

        def paced(seconds: float) -> None:
            nonlocal peak
            time.sleep(seconds)
            if rx.service.installed_version == VERSION:
                raise _Installed
            if time.perf_counter() - start > LOOPBACK_PATIENCE:
                raise RuntimeError("the update did not install in time")

        def watch() -> None:
            nonlocal peak
            while rx.service.installed_version != VERSION and time.perf_counter() - start < 60:
                peak = max(peak, network.under_lock(rx.memory_in_use))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        sender = UdpBackend(("127.0.0.1", 0), ("127.0.0.1", port))
        try:
            push(update, sender, rounds=1000, loss=LOSS, rate=GENUINE_PPS,
                 rng=random.Random(5), sleep=paced, progress_to=io.StringIO())
        except _Installed:
            pass
        finally:
            sender.close()
        elapsed = time.perf_counter() - start
        watcher.join()
        taken = network.under_lock(lambda: rx.counters["datagrams"]) - before
        result = {"seconds": elapsed, "peak": peak, "taken_per_s": taken / elapsed,
                  "checks": rx.counters["verifications"]}
    finally:
        if flood is not None:
            flood.send_signal(signal.SIGINT)
            out, _ = flood.communicate(timeout=10)
            sent, duration = [*out.split(), "0", "1"][:2]
            result["flood_per_s"] = int(sent) / float(duration) if float(duration) else 0.0
        network.close()
    versions = [int(str(e["db_version"])) for e in rx.service.events.of("update_accepted")]
    old = parse_packet(older.manifest).header.db_version
    result["older_reinstalled"] = float(any(v <= old for v in versions[1:]))
    return result


#: A flood the receiver's Python frame path can read in full on the standard machine.
READABLE_FLOOD = 10_000


def loopback_rows(update: EncodedUpdate) -> list[Row]:
    older = one_megabyte_update(VERSION - 1)
    quiet = [loopback_install(update, older, None) for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        frames_file = Path(tmp) / "flood.pickle"
        frames_file.write_bytes(pickle.dumps(flood_frames(update, older)))
        floods = {rate: [loopback_install(update, older, frames_file, rate) for _ in range(3)]
                  for rate in (0.0, READABLE_FLOOD)}
    quiet_s = statistics.median(r["seconds"] for r in quiet)
    bound = receiver().memory_bound()
    rows = []
    for rate, noisy in floods.items():
        sent = statistics.median(r["flood_per_s"] for r in noisy)
        taken = statistics.median(r["taken_per_s"] for r in noisy)
        reinstalled = sum(r["older_reinstalled"] for r in noisy)
        how = "as fast as one process sends" if not rate else f"paced at {rate:,.0f}/s"
        rows.append(Row(
            f"install a 1 MB update over loopback, mixed flood {how} ({sent:,.0f} datagrams/s "
            f"sent, {taken:,.0f}/s read), 20% loss, {GENUINE_PPS:,} genuine packets/s (median "
            f"of 3; older version reinstalled {reinstalled:.0f} times)",
            statistics.median(r["seconds"] for r in noisy), "s", "same, no flood", quiet_s))
        rows.append(Row(f"receiver peak memory, loopback mixed flood {how}",
                        max(r["peak"] for r in noisy) / 1e6, "MB",
                        "memory_bound() (configured cap)", bound / 1e6))
    return rows


# ------------------------------------------------------------------------------ I/O path
#: Seconds the I/O path is timed under the flood (after FLOOD_LEAD).
IO_SECONDS = 3.0


def frame_path_rows(update: EncodedUpdate, older: EncodedUpdate) -> list[Row]:
    """What one datagram of the loopback flood mix costs the switch (``NetSwitch.from_wire``:
    classify and parse, update datagrams to a sink that keeps nothing), against the layered path
    alone (``_classify_layers``: the parser the fast path skips), same frames, best of 5."""
    frames = [bytes(f) for f in flood_frames(update, older)]
    cfg = NetConfig()
    switch = NetSwitch(cfg, to_guest=lambda f: None, to_wire=lambda f: None,
                       on_update_datagram=lambda d: None)
    ours = frozenset({cfg.hv_ip.packed, *(a.packed for a in cfg.extra_dsts)})

    def best(fn: Callable[[bytes], object]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for frame in frames:
                fn(frame)
            times.append((time.perf_counter() - start) / len(frames) * 1e6)
        return min(times)

    fast = best(switch.from_wire)
    layered = best(lambda f: frame_path._classify_layers(f, ours, cfg.update_port))
    return [Row("frame path per datagram, loopback flood mix (NetSwitch.from_wire: classify + "
                "parse)", fast, "µs", "the layered parser alone (_classify_layers), same frames",
                layered)]


def io_path_rate(older: EncodedUpdate, frames_file: Path) -> dict[str, float]:
    """Datagrams a second the I/O thread takes from the socket through the switch into the
    receiver (``GuestNetwork`` with its verifier thread) while one process floods as fast as it
    can, against what that process sends; ``IO_SECONDS`` long, bounded by FLOOD_MOST."""
    rx = receiver(installed=older)
    backend = _AnySource(("127.0.0.1", 0))
    network = GuestNetwork(backend, NetConfig(), guest_mac=bytes.fromhex("525400000001"),
                           on_update=lambda d: rx.on_datagram(d.payload, SOURCE), poll=rx.poll,
                           checks=rx)
    network.start()
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD_SENDER, str(frames_file), str(backend.local_address[1]),
         str(FLOOD_LEAD + IO_SECONDS + 5), str(FLOOD_MOST), "0"],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(FLOOD_LEAD)
        before, start = network.under_lock(lambda: rx.counters["datagrams"]), time.perf_counter()
        time.sleep(IO_SECONDS)
        taken = network.under_lock(lambda: rx.counters["datagrams"]) - before
        elapsed = time.perf_counter() - start
    finally:
        flood.send_signal(signal.SIGINT)
        out, _ = flood.communicate(timeout=10)
        network.close()
    sent, duration = [*out.split(), "0", "1"][:2]
    return {"read": taken / elapsed, "sent": int(sent) / float(duration)}


def io_path_rows(update: EncodedUpdate) -> list[Row]:
    older = one_megabyte_update(VERSION - 1)
    rows = frame_path_rows(update, older)
    with tempfile.TemporaryDirectory() as tmp:
        frames_file = Path(tmp) / "flood.pickle"
        frames_file.write_bytes(pickle.dumps(flood_frames(update, older)))
        runs = [io_path_rate(older, frames_file) for _ in range(3)]
    read = statistics.median(r["read"] for r in runs)
    sent = statistics.median(r["sent"] for r in runs)
    rows.append(Row(f"datagrams a second the I/O thread reads through the switch into the "
                    f"receiver, loopback flood mix as fast as one process sends (median of 3 "
                    f"runs of {IO_SECONDS:.0f} s)", read, "datagrams/s",
                    "datagrams a second the flood process sends", sent))
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
