"""What each class of the one-process flood costs the hypervisor, per datagram, frame to verdict.

Each class of the loopback flood mix (``network_loopback.flood_frames``: garbage with valid
headers, bit-flipped copies of the genuine frames, replays of an older genuine update, forged
manifests) is timed alone through the path the I/O thread runs for every datagram it reads
(``GuestNetwork.handle_frame``: the switch, the update port's front path, the receiver), sans-IO, on
a receiver in the state of the loopback rows: the older update installed, the genuine update's
session open with its hash pages (so a bit-flipped symbol meets its commitment). Peer: one
``recvfrom`` of a datagram on loopback (what reading it costs anyway) and one SHA-256 of a
1,436-byte symbol (what an authenticated symbol costs at least). Best of 5 passes over each pool.
The forged manifests' pool reuses 2,000 distinct ones: a repeat within a pass costs what a fresh one
costs (``manifest_checking`` or a pool offer), not the check itself, which runs on the verifier.
The batch path (``NetSwitch.from_wire_batch``) is timed on the same pools in batches of
``recvmmsg.SLOTS``, and one datagram of a ``recvmmsg`` batch against one ``recvfrom``.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable

from benchmarks.common import Row
from benchmarks.network_fixtures import SOURCE, VERSION, one_megabyte_update, receiver
from benchmarks.network_loopback import flood_classes
from guest_tool.encoding import EncodedUpdate
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.net.recvmmsg import SLOTS, FrameBatch
from hv_emu.updates.batch import UpdateTriage
from hv_emu.updates.receiver import UpdateReceiver

#: Passes over each class's pool; the best one counts.
PASSES = 5


def _network(rx: UpdateReceiver, front: bool = True, batch: bool = False) -> GuestNetwork:
    """``rx`` behind a switch, with the update port's raw front path or without it (the layered
    path: ``classify``, ``UdpDatagram``, ``on_datagram``), and with the batch triage or not."""
    backend = UdpBackend(("127.0.0.1", 0))
    return GuestNetwork(backend, NetConfig(), guest_mac=bytes.fromhex("525400000001"),
                        on_update=lambda d: rx.on_datagram(d.payload, SOURCE), poll=rx.poll,
                        checks=rx, on_update_payload=rx.on_payload if front else None,
                        update_batch=UpdateTriage(rx) if batch else None)


def _batch_pass_us(network: GuestNetwork, frames: list[bytes]) -> float:
    """µs per datagram of ``frames`` through the batch path (``NetSwitch.from_wire_batch``), in
    batches of ``recvmmsg.SLOTS`` filled beforehand (filling is the kernel's copy: not timed)."""
    batch, total = FrameBatch(SLOTS), 0.0
    for at in range(0, len(frames), SLOTS):
        chunk = frames[at : at + SLOTS]
        batch.fill(chunk, [SOURCE] * len(chunk))
        start = time.perf_counter()
        network.switch.from_wire_batch(batch, lambda: False)
        total += time.perf_counter() - start
    return total / len(frames) * 1e6


def _recvmmsg_us(frames: list[bytes]) -> float:
    """One datagram of a ``recvmmsg`` batch of waiting datagrams on loopback (``BatchReader``),
    its length, source and the peer filter's comparison included (``UdpBackend.read_batch``)."""
    rx = UdpBackend(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    best = float("inf")
    try:
        for _ in range(PASSES):
            batch = frames[:SLOTS]
            for frame in batch:
                tx.sendto(frame, rx.local_address)
            start = time.perf_counter()
            got = rx.read_batch().count
            best = min(best, (time.perf_counter() - start) / max(got, 1) * 1e6)
    finally:
        rx.close()
        tx.close()
    return best


def _best_us(fn: Callable[[bytes], object], frames: list[bytes]) -> float:
    return min(_pass_us(fn, frames) for _ in range(PASSES))


def _pass_us(fn: Callable[[bytes], object], frames: list[bytes]) -> float:
    start = time.perf_counter()
    for frame in frames:
        fn(frame)
    return (time.perf_counter() - start) / len(frames) * 1e6


def _recvfrom_us(frames: list[bytes]) -> float:
    """One ``recvfrom`` of a waiting datagram on loopback (the frames sent first, in batches)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    best = float("inf")
    try:
        for _ in range(PASSES):
            batch = frames[:500]
            for frame in batch:
                tx.sendto(frame, rx.getsockname())
            start = time.perf_counter()
            for _ in batch:
                rx.recvfrom(65536)
            best = min(best, (time.perf_counter() - start) / len(batch) * 1e6)
    finally:
        rx.close()
        tx.close()
    return best


def _live(update: EncodedUpdate, older: EncodedUpdate) -> UpdateReceiver:
    rx = receiver(installed=older)
    for payload in (update.manifest, *update.pages):  # the live session, its pages in
        rx.on_datagram(payload, SOURCE)
        rx.poll()
    assert rx.sessions, "the genuine manifest opened no session"
    rx.offloaded = True  # as with the network running: the checks are the verifier's
    return rx


def class_costs(update: EncodedUpdate,
                older: EncodedUpdate) -> dict[str, tuple[float, float, float]]:  # fmt: skip
    """µs per datagram of each flood class: (through ``GuestNetwork.handle_frame`` with the raw
    front path, through the batch path, on the layered path), passes alternating, the best of
    ``PASSES`` each."""
    receivers = _live(update, older), _live(update, older), _live(update, older)
    front, layered = _network(receivers[0]), _network(receivers[1], front=False)
    batched = _network(receivers[2], batch=True)
    costs = {}
    try:
        for name, frames in flood_classes(update, older).items():
            pool = [bytes(f) for f in frames]
            best = [float("inf")] * 3
            for _ in range(PASSES):
                best[0] = min(best[0], _pass_us(front.handle_frame, pool))
                best[1] = min(best[1], _batch_pass_us(batched, pool))
                best[2] = min(best[2], _pass_us(layered.handle_frame, pool))
            costs[name] = (best[0], best[1], best[2])
    finally:
        front.close()
        layered.close()
        batched.close()
    # The same verdicts: the three receivers counted alike (every flood frame has a right
    # checksum or none, so the deferred checksum changes no reason), and nothing installed.
    assert receivers[0].counters == receivers[1].counters == receivers[2].counters
    assert all(rx.service.installed_version < VERSION for rx in receivers)
    return costs


def class_rows(update: EncodedUpdate | None = None) -> list[Row]:
    update = update or one_megabyte_update()
    older = one_megabyte_update(VERSION - 1)
    costs = class_costs(update, older)
    some = [bytes(f) for f in flood_classes(update, older)["garbage with valid headers"]]
    recv = _recvfrom_us(some)
    sha = min(_best_us(lambda s: hashlib.sha256(s).digest(), [update.symbols[0]] * 2000)
              for _ in range(2))
    rows = [Row(f"flood class per datagram, frame to verdict: {name}", us, "µs",
                "the layered path (classify, UdpDatagram, on_datagram), same frames", layered)
            for name, (us, _, layered) in costs.items()]
    rows += [Row(f"flood class per datagram, batch path: {name}", batch, "µs",
                 "the front path frame by frame (GuestNetwork.handle_frame), same frames", us)
             for name, (us, batch, _) in costs.items()]
    rows.append(Row("one recvfrom of a flood datagram on loopback", recv, "µs",
                    "one SHA-256 of a 1,436-byte symbol", sha))
    rows.append(Row(f"one datagram of a recvmmsg batch of {SLOTS} (UdpBackend.read_batch)",
                    _recvmmsg_us(some), "µs", "one recvfrom of a flood datagram", recv))
    return rows
