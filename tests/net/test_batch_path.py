"""The switch's batch path (``net/triage.py``, ``updates/batch.py``) decides as the per-frame path
does: ``update_port_ends`` agrees with ``intercept.update_port_end`` row by row, and a batch walked
through ``NetSwitch.from_wire_batch`` leaves the switch, the receiver and the guest's card exactly
as ``from_wire`` frame by frame leaves them (the same counters, sessions, install, and the same
frames delivered to the guest in the same order), over arbitrary, mutated and mixed batches:
batch boundaries anywhere, a stop (the hand-off to the verifier) after any row, truncated and
oversize frames, rows the backend's filter refused, VLAN-tagged and option-carrying frames, an
install in the middle of a batch."""

from __future__ import annotations

from ipaddress import IPv4Address

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.push import frame_for
from hv_emu import layout
from hv_emu.net.config import NetConfig
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.intercept import update_port_end
from hv_emu.net.recvmmsg import SLOT, FrameBatch
from hv_emu.net.switch import NetSwitch
from hv_emu.net.triage import update_port_ends
from hv_emu.updates.batch import UpdateTriage
from hv_emu.updates.packets import HEADER_LEN, Packet, PacketType
from tests.rigs.netupdate import Rig, encoded, rig, signed

CFG = NetConfig()
PORT = CFG.update_port
OURS = frozenset({CFG.hv_ip.packed, *(a.packed for a in CFG.extra_dsts)})
OURS_U32 = np.array(sorted(int.from_bytes(a, "big") for a in OURS), np.uint32)
HV = IPv4Address(layout.HV_IPV4)
MAC = bytes.fromhex("525400123456")
V = 3
GENUINE = encoded(V, lines=60)
OLDER = encoded(V - 1, lines=20)
PAYLOADS = [GENUINE.manifest, *GENUINE.pages, *GENUINE.symbols, OLDER.manifest,
            *OLDER.symbols[:5]]  # fmt: skip


def _udp(payload: bytes, *, dst: IPv4Address = HV, port: int = PORT, vlan: int | None = None,
         checksum: bool = True, pad: bool = False) -> bytes:  # fmt: skip
    return build_udp_frame(src_mac=MAC, dst_mac=CFG.hv_mac, src_ip=layout.PUSH_SENDER_IPV4,
                           dst_ip=dst, src_port=layout.PUSH_SENDER_UDP_PORT, dst_port=port,
                           payload=payload, vlan_tci=vlan, udp_checksum_on=checksum,
                           pad=pad)  # fmt: skip


def _with_options(frame: bytes) -> bytes:
    """``frame`` with 4 bytes of IPv4 options (NOPs) and the IPv4 lengths and checksum fixed:
    the update port drops it (``ipv4_options``)."""
    f = bytearray(frame[:14] + bytes([0x46]) + frame[15:34] + b"\x01\x01\x01\x01" + frame[34:])
    total = int.from_bytes(f[16:18], "big") + 4
    f[16:18], f[24:26] = total.to_bytes(2, "big"), b"\0\0"
    s = sum(int.from_bytes(f[i : i + 2], "big") for i in range(14, 38, 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    f[24:26] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(f)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """An update payload: genuine, bit-flipped, a header field at an edge, cut, or garbage."""
    kind = draw(st.sampled_from(["genuine", "genuine", "flip", "field", "index", "cut",
                                 "garbage"]))  # fmt: skip
    if kind == "garbage":
        return draw(st.binary(max_size=1500))
    packet = bytearray(draw(st.sampled_from(PAYLOADS)))
    if kind == "index":  # index at, just below or just above count (step 9's edge)
        count = int.from_bytes(packet[24:28], "big")
        index = max(0, count + draw(st.integers(-1, 1)))
        packet[20:24] = index.to_bytes(4, "big")
    if kind == "flip":
        at = draw(st.integers(0, HEADER_LEN - 1) | st.integers(0, len(packet) - 1))
        packet[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "field":
        at = draw(st.sampled_from([4, 5, 6, 8, 12, 16, 20, 24, 28, 30]))
        packet[at : at + 2] = draw(st.sampled_from([b"\0\0", b"\xff\xff", b"\0\1", b"\0\3"]))
    elif kind == "cut":
        packet = packet[: draw(st.integers(0, len(packet)))]
    return bytes(packet)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame from the wire: mostly the update port's, in every shape the switch knows, some
    of them mutated at any byte; guest traffic; runts; a frame longer than a slot."""
    payload = draw(payloads())
    kind = draw(st.sampled_from(["plain"] * 6 + ["nosum", "vlan", "options", "guest", "other_ip",
                                                 "padded", "runt", "long", "mutated"]))
    if kind == "runt":
        return draw(st.binary(max_size=60))
    if kind == "long":
        return _udp(payload + bytes(SLOT + draw(st.integers(0, 1000))))
    if kind == "options":
        return _with_options(_udp(payload))
    frame = _udp(payload, checksum=kind != "nosum", vlan=0x64 if kind == "vlan" else None,
                 port=53 if kind == "guest" else PORT, pad=kind == "padded",
                 dst=IPv4Address("10.0.2.15") if kind == "other_ip" else HV)  # fmt: skip
    if kind == "mutated":
        f = bytearray(frame)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, min(len(f), 42) - 1) | st.integers(0, len(f) - 1))
            f[at] = draw(st.integers(0, 255))
        frame = bytes(f[: draw(st.just(len(f)) | st.integers(0, len(f)))])
    return frame


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(frames(), min_size=1, max_size=40))
def test_update_port_ends_agrees_with_update_port_end(batch_frames: list[bytes]) -> None:
    batch = FrameBatch(64)
    batch.fill(batch_frames, [("127.0.0.1", 1)] * len(batch_frames))
    ends = update_port_ends(batch.frames, batch.lengths[: batch.count], OURS_U32, PORT)
    want = [update_port_end(f, OURS, PORT.to_bytes(2, "big")) if len(f) <= SLOT else 0
            for f in batch_frames]  # fmt: skip
    assert ends.tolist() == want


def _opened() -> Rig:
    """A receiver with the older update installed and the genuine update's session open, its
    pages in (so its symbols are taken and it installs)."""
    r = rig(installed=V - 1, seed=4)
    r.receiver.cpu_clock = lambda: 0.0
    r.feed([GENUINE.manifest, *GENUINE.pages])
    assert r.receiver.sessions
    r.receiver.offloaded = True  # as with the verifier thread running: checks only in poll()
    return r


def _switch(r: Rig, delivered: list[bytes], batched: bool) -> NetSwitch:
    rx = r.receiver
    return NetSwitch(CFG, to_guest=delivered.append, to_wire=lambda f: None,
                     on_update_datagram=lambda d: rx.on_datagram(d.payload, ("10.0.2.2", 1)),
                     on_update_payload=rx.on_payload,
                     update_batch=UpdateTriage(rx) if batched else None)  # fmt: skip


def _state(r: Rig, switch: NetSwitch, delivered: list[bytes]) -> object:
    rx = r.receiver
    return ({k: v for k, v in rx.counters.items() if v}, sorted(rx.sessions), len(rx.pool),
            r.installed, {k: v for k, v in switch.counters.items() if v}, delivered)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(frames(), st.booleans()), min_size=1, max_size=80),
       st.lists(st.integers(1, 30), min_size=1, max_size=10),
       st.lists(st.integers(0, 6), min_size=1, max_size=10))  # fmt: skip
def test_a_batch_counts_and_delivers_as_frame_by_frame(
    rows: list[tuple[bytes, bool]], sizes: list[int], stops: list[int],
) -> None:
    fast, slow = _opened(), _opened()
    to_fast: list[bytes] = []
    to_slow: list[bytes] = []
    batched, per_frame = _switch(fast, to_fast, True), _switch(slow, to_slow, False)
    batch = FrameBatch(32)
    at = turn = 0
    while at < len(rows):
        size = sizes[turn % len(sizes)]
        chunk = rows[at : at + size]
        at += len(chunk)
        batch.fill([f for f, _ in chunk], [("127.0.0.1", 1)] * len(chunk))
        batch.keep[: len(chunk)] = [keep for _, keep in chunk]  # the backend's filter
        while not batch.done:  # stopped after some rows handed on, then continued
            left = [stops[turn % len(stops)]]
            turn += 1

            def stop(left: list[int] = left) -> bool:
                left[0] -= 1
                return left[0] < 0

            batched.from_wire_batch(batch, stop)
        for frame, keep in chunk:
            if keep:
                per_frame.from_wire(frame)
        for r in (fast, slow):  # the verifier's turn, between batches
            r.clock.now += 0.01
            r.receiver.poll()
        assert _state(fast, batched, to_fast) == _state(slow, per_frame, to_slow)


def test_a_filtered_copy_of_a_taken_symbol_is_not_counted() -> None:
    """A symbol taken, then a bit-flipped copy of it the backend filtered out (a foreign
    source): the copy is no datagram of the receiver's, not a ``duplicate`` (Hypothesis found
    the batch counting it once)."""
    r = _opened()
    switch = _switch(r, [], True)
    flipped = bytearray(GENUINE.symbols[0])
    flipped[-1] ^= 1
    batch = FrameBatch(4)
    batch.fill([_udp(GENUINE.symbols[0]), _udp(bytes(flipped))], [("127.0.0.1", 1)] * 2)
    batch.keep[:2] = [True, False]
    before = dict(r.receiver.counters)
    switch.from_wire_batch(batch, lambda: False)
    after = r.receiver.counters
    assert after["datagrams"] - before.get("datagrams", 0) == 1
    assert after["symbol_accepted"] - before.get("symbol_accepted", 0) == 1
    assert after["duplicate"] == before.get("duplicate", 0)


@pytest.mark.parametrize("batched", [True, False])
def test_an_install_by_the_guest_during_a_walk_recodes_the_rest(
    batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest's VMCALL installs (on the vCPU thread, without the network's lock) after a
    batch was coded and before its survivor is taken: the survivor and the rows after it are
    judged under the new version, as frame by frame at that moment."""
    r = _opened()
    switch = _switch(r, [], batched)
    nobody = Packet.build(PacketType.SYMBOL, 0x1234, V, 0, 1, b"x" * 40).raw
    rows = [_udp(GENUINE.symbols[0]), _udp(nobody)]

    def vmcall() -> None:
        bundle, signature = signed(V)
        assert r.service.submit(bundle, signature, "vmcall") == 0

    if batched:
        calls = [0]
        state = UpdateTriage.state

        def state_then_install(self: UpdateTriage) -> object:
            calls[0] += 1
            if calls[0] == 2:  # the first is the coding's own; the second, before the survivor
                vmcall()
            return state(self)

        monkeypatch.setattr(UpdateTriage, "state", state_then_install)
        batch = FrameBatch(2)
        batch.fill(rows, [("127.0.0.1", 1)] * 2)
        switch.from_wire_batch(batch, lambda: False)
    else:
        vmcall()
        for frame in rows:
            switch.from_wire(frame)
    counters = r.receiver.counters
    assert (counters["stale"], counters["no_session"]) == (2, 0)


def test_an_install_in_the_middle_of_a_batch_makes_the_rest_stale() -> None:
    """The symbols that complete the update and, in the same batch, replays of them and of the
    older update: after the install the rest of the batch is coded again (``stale``)."""
    r = _opened()
    delivered: list[bytes] = []
    switch = _switch(r, delivered, True)
    nobody = Packet.build(PacketType.SYMBOL, 0x1234, V, 0, 1, b"x" * 40).raw  # no_session, then
    rows = [frame_for(p, dst_mac=CFG.hv_mac, dst_ip=HV, port=PORT)  # stale once V installed
            for p in [*GENUINE.symbols, *GENUINE.symbols, *OLDER.symbols[:3], nobody]]
    batch = FrameBatch(len(rows))
    batch.fill(rows, [("127.0.0.1", 1)] * len(rows))
    rx = r.receiver
    before = rx.counters["datagrams"]
    switch.from_wire_batch(batch, lambda: False)
    assert r.installed == V
    taken = rx.counters["symbol_accepted"]
    assert rx.counters["stale"] == len(rows) - taken
    assert rx.counters["no_session"] == 0
    assert rx.counters["datagrams"] - before == len(rows)
    assert switch.counters["from_wire.for_hypervisor"] == len(rows)


def test_garbage_headers_are_counted_by_reason_without_the_front_path() -> None:
    """Each stateless reason, one frame each, and a packet for no session: counted exactly."""
    header = Packet.build(PacketType.SYMBOL, 7, V + 1, 0, 1, b"x" * 40).raw
    cases = {
        "truncated": header[:20],
        "bad_magic": b"XVDB" + header[4:],
        "bad_version": header[:4] + b"\x01" + header[5:],
        "bad_type": header[:5] + b"\x09" + header[6:],
        "bad_flags": header[:6] + b"\x00\x01" + header[8:],
        "bad_reserved": header[:30] + b"\x00\x01" + header[32:],
        "length_mismatch": header + b"z",
        "index_oob": Packet.build(PacketType.SYMBOL, 7, V + 1, 5, 5, b"x" * 40).raw,
        "stale": Packet.build(PacketType.SYMBOL, 7, V - 1, 0, 1, b"x" * 40).raw,
        "no_session": header,
    }
    r = rig(installed=V - 1, seed=1)
    switch = _switch(r, [], True)
    rows = [_udp(p) for p in cases.values()]
    batch = FrameBatch(len(rows))
    batch.fill(rows, [("127.0.0.1", 1)] * len(rows))
    switch.from_wire_batch(batch, lambda: False)
    assert {k: v for k, v in r.receiver.counters.items() if v} == {
        "datagrams": len(cases), **dict.fromkeys(cases, 1)}


def test_a_copy_behind_its_genuine_symbol_in_one_batch_is_a_duplicate() -> None:
    """A symbol's bit-flipped copy right behind it: coded before the genuine one was taken, it
    is judged when the walk reaches it (``duplicate``, as frame by frame), not ``hash_mismatch``."""
    fast, slow = _opened(), _opened()
    to_fast: list[bytes] = []
    to_slow: list[bytes] = []
    batched, per_frame = _switch(fast, to_fast, True), _switch(slow, to_slow, False)
    rows = []
    for symbol in GENUINE.symbols[:2]:
        flipped = bytearray(symbol)
        flipped[-1] ^= 1
        rows += [_udp(symbol), _udp(bytes(flipped))]
    batch = FrameBatch(len(rows))
    batch.fill(rows, [("127.0.0.1", 1)] * len(rows))
    batched.from_wire_batch(batch, lambda: False)
    for frame in rows:
        per_frame.from_wire(frame)
    assert fast.receiver.counters["duplicate"] >= 1
    assert _state(fast, batched, to_fast) == _state(slow, per_frame, to_slow)


def test_symbols_behind_their_hash_page_in_one_batch_are_taken() -> None:
    """A session without its hash pages: symbols, the page symbols, the same symbols again, in
    one batch. The first copies are ``no_page_yet``; once a page is known the rest is coded
    again and the later copies are taken, as frame by frame."""
    def fresh() -> Rig:
        r = rig(installed=V - 1, seed=4)
        r.receiver.cpu_clock = lambda: 0.0
        r.feed([GENUINE.manifest])
        assert r.receiver.sessions
        r.receiver.offloaded = True
        return r

    fast, slow = fresh(), fresh()
    to_fast: list[bytes] = []
    to_slow: list[bytes] = []
    batched, per_frame = _switch(fast, to_fast, True), _switch(slow, to_slow, False)
    payloads = [*GENUINE.symbols[:3], *GENUINE.pages, *GENUINE.symbols[:3]]
    rows = [_udp(p) for p in payloads]
    batch = FrameBatch(len(rows))
    batch.fill(rows, [("127.0.0.1", 1)] * len(rows))
    batched.from_wire_batch(batch, lambda: False)
    for frame in rows:
        per_frame.from_wire(frame)
    assert fast.receiver.counters["no_page_yet"] == 3
    assert fast.receiver.counters["symbol_accepted"] + fast.receiver.counters["stale"] >= 1
    assert _state(fast, batched, to_fast) == _state(slow, per_frame, to_slow)


def test_the_network_shortens_the_switch_interval_while_it_runs() -> None:
    """The I/O thread holds the GIL under a flood: while it runs, other threads wait at most
    ``SWITCH_INTERVAL`` for it; the interpreter's own interval comes back at ``stop()``."""
    import sys

    from hv_emu.net.attachment import GuestNetwork
    from hv_emu.net.backends import UdpBackend
    from hv_emu.net.switch_interval import SWITCH_INTERVAL

    def network() -> GuestNetwork:
        rx = rig(installed=V - 1, seed=1).receiver
        return GuestNetwork(UdpBackend(("127.0.0.1", 0)), CFG,
                            guest_mac=bytes.fromhex("525400000001"), on_update=lambda d: None,
                            poll=rx.poll, checks=rx, on_update_payload=rx.on_payload,
                            update_batch=UpdateTriage(rx))  # fmt: skip

    before = sys.getswitchinterval()
    first, second = network(), network()
    try:
        first.start()
        assert sys.getswitchinterval() == min(before, SWITCH_INTERVAL) < before
        second.start()
        first.close()  # networks that overlap: the interval stays short while one runs
        assert sys.getswitchinterval() == min(before, SWITCH_INTERVAL)
    finally:
        first.close()
        second.close()
    assert sys.getswitchinterval() == before


def test_the_io_thread_takes_batches_from_a_real_socket() -> None:
    """End to end through the I/O thread: replays, garbage and guest frames from the peer, a
    few from a foreign source, then the genuine update, all over a loopback socket. The update
    installs; every datagram the backend let in is counted once by the switch, every update
    datagram once by the receiver; the foreign ones are the backend's ``rx_foreign``; the
    guest's frames reach its card. Bounded by ``PATIENCE`` and by the datagrams sent."""
    import io
    import random
    import socket
    import time

    from guest_tool.encoding import carousel
    from guest_tool.push import push
    from hv_emu.net.attachment import GuestNetwork
    from hv_emu.net.backends import UdpBackend
    from tests.rigs.processes import PATIENCE

    r = rig(installed=V - 1, seed=2)
    rx = r.receiver
    rx.clock = rx.budget.clock = time.monotonic
    rx.budget.stamp = time.monotonic()
    backend = UdpBackend(("127.0.0.1", 0))
    network = GuestNetwork(backend, CFG, guest_mac=bytes.fromhex("525400000001"),
                           on_update=lambda d: rx.on_datagram(d.payload, ("10.0.2.2", 1)),
                           poll=rx.poll, checks=rx, on_update_payload=rx.on_payload,
                           update_batch=UpdateTriage(rx))  # fmt: skip
    sender = UdpBackend(("127.0.0.1", 0), backend.local_address)
    foreign = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(3)
    replays = [_udp(p) for p in carousel(OLDER, rounds=3)]
    guest = [_udp(b"for the guest %d" % i, port=53) for i in range(5)]
    try:
        network.start()
        for i, frame in enumerate(replays):
            sender.send_frame(frame)
            if i % 50 == 0:
                sender.send_frame(_udp(rng.randbytes(rng.randrange(40, 400))))
        for frame in guest:
            sender.send_frame(frame)
        for frame in replays[:7]:
            foreign.sendto(frame, backend.local_address)
        push(GENUINE, sender, rounds=3, progress_to=io.StringIO(), sleep=lambda s: None)
        end = time.monotonic() + PATIENCE
        while r.installed != V and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        sender.close()
        foreign.close()
        network.close()
    assert r.installed == V
    assert network.switch.takes_batches
    switch = network.switch.counters
    taken = sum(v for k, v in switch.items() if k.startswith("from_wire.") and k != (
        "from_wire.arp_answered"))  # fmt: skip
    assert backend.stats["rx"] == taken
    assert rx.counters["datagrams"] == switch["from_wire.for_hypervisor"]
    assert backend.stats["rx_foreign"] == 7
    assert switch["from_wire.for_guest"] == len(guest)
    assert rx.counters["stale"] >= 1 and rx.counters["installed"] == 1
