"""Network benchmarks over loopback sockets: the one-process flood, the I/O path, the frame path.

``GuestNetwork`` (I/O thread, verifier thread) on a loopback socket takes a 1 MB update that
``push`` sends at ``GENUINE_PPS`` with 20 % loss while one flood process sends as fast as it can
(garbage with valid headers, bit-flipped copies of the genuine frames, replays of an older genuine
update, forged manifests): against the same install without the flood process, in the same run.
``io_path_rows`` measures what the I/O thread reads of that flood, and what one datagram of it
costs the switch.
"""

from __future__ import annotations

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
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from benchmarks.common import Row
from benchmarks.network_fixtures import (
    FLOOD_LEAD,
    GENUINE_PPS,
    LOSS,
    SOURCE,
    VERSION,
    Forger,
    one_megabyte_update,
    receiver,
)
from guest_tool.encoding import EncodedUpdate, carousel
from guest_tool.push import frame_for, push
from hv_emu import layout
from hv_emu.net import intercept as frame_path
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.recvmmsg import FrameBatch, Mask
from hv_emu.net.switch import NetSwitch
from hv_emu.updates.batch import UpdateTriage
from hv_emu.updates.packets import Packet, PacketType, parse_packet

#: The flood process: sends the pickled frames round and round, as fast as it can; every
#: forged manifest (a bytearray: no UDP checksum) gets a fresh counter in its last 8 bytes (the
#: manifest signature) before each send, so no two are alike and none is a known failure.
FLOOD_SENDER = """
import pickle, signal, socket, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
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

    def _accept_batch(self, batch: FrameBatch, keep: Mask) -> Mask:
        return keep


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


#: The four classes of ``flood_frames``, in the order they take turns there.
FLOOD_CLASSES = ("garbage with valid headers", "bit-flipped genuine packets",
                 "replays of the older update", "forged manifests")


def flood_classes(update: EncodedUpdate, older: EncodedUpdate,
                  pool: int = 8000) -> dict[str, list[bytes | bytearray]]:
    """``flood_frames`` by class (each a quarter of the pool)."""
    frames = flood_frames(update, older, pool)
    return {name: frames[k::4] for k, name in enumerate(FLOOD_CLASSES)}


def stop_flood(flood: subprocess.Popen[str]) -> str:
    """Stop a flood process (SIGINT: it prints what it sent); killed if it does not stop within
    10 s (a loaded machine), and then what it sent is unknown (empty)."""
    flood.send_signal(signal.SIGINT)
    try:
        out, _ = flood.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        flood.kill()
        flood.communicate()
        return ""
    return out


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
                           checks=rx, on_update_payload=rx.on_payload,
                           update_batch=UpdateTriage(rx))
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
            out = stop_flood(flood)
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


def flood_goal_rows(update: EncodedUpdate | None = None, runs: int = 3,
                    rate: float = 0.0) -> list[Row]:  # fmt: skip
    """Issue 11's goal: the install under the fastest one-process flood (``rate`` 0; else paced
    at ``rate`` datagrams a second) against the same install without it, the runs alternating
    (quiet, flood, quiet, flood...) so both see the same load."""
    update = update or one_megabyte_update()
    older = one_megabyte_update(VERSION - 1)
    quiet, noisy = [], []
    with tempfile.TemporaryDirectory() as tmp:
        frames_file = Path(tmp) / "flood.pickle"
        frames_file.write_bytes(pickle.dumps(flood_frames(update, older)))
        for _ in range(runs):
            quiet.append(loopback_install(update, older, None))
            noisy.append(loopback_install(update, older, frames_file, rate))
    sent = statistics.median(r["flood_per_s"] for r in noisy)
    taken = statistics.median(r["taken_per_s"] for r in noisy)
    reinstalled = sum(r["older_reinstalled"] for r in noisy)
    return [
        Row(f"install a 1 MB update over loopback, mixed flood "
            f"{'as fast as one process sends' if not rate else f'paced at {rate:,.0f}/s'} "
            f"({sent:,.0f} datagrams/s sent, {taken:,.0f}/s read), 20% loss, {GENUINE_PPS:,} "
            f"genuine packets/s (median of {runs}, alternating; older version reinstalled "
            f"{reinstalled:.0f} times)", statistics.median(r["seconds"] for r in noisy), "s",
            "same, no flood", statistics.median(r["seconds"] for r in quiet)),
        Row("receiver peak memory, that flood", max(r["peak"] for r in noisy) / 1e6, "MB",
            "memory_bound() (configured cap)", receiver().memory_bound() / 1e6),
    ]


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
                           checks=rx, on_update_payload=rx.on_payload,
                           update_batch=UpdateTriage(rx))
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
        out = stop_flood(flood)
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
