"""A multi-block update with index pages, pushed over a loopback UDP tunnel to a running
``hv-emu`` (``GuestNetwork``: the I/O thread and the verifier thread) at 20 % loss: it installs,
and the receiver stayed within ``memory_bound()``."""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from guest_tool.bundle import write_bundle
from guest_tool.encoding import encode_update
from guest_tool.keys import generate_keypair, load_private_key
from guest_tool.push import push
from hv_emu import layout
from hv_emu.net.backends import UdpBackend
from hv_emu.updates.packets import Manifest, parse_packet
from tests.rigs.nic import PATIENCE, guest_image, loopback_machine, run_until

V = 9


@pytest.fixture
def peer() -> Iterator[UdpBackend]:
    backend = UdpBackend(("127.0.0.1", 0))
    yield backend
    backend.close()


def test_a_multi_block_update_installs_over_loopback_at_20_percent_loss(
    tmp_path: Path, peer: UdpBackend
) -> None:
    rng = random.Random(V)
    db = tmp_path / "big.ndb"
    db.write_bytes(b"".join(b"Gen.Net.%d:0:*:%s\n" % (i, rng.randbytes(3000).hex().encode())
                            for i in range(200)))  # 1.2 MB in 6,000-byte signatures
    key, pub = generate_keypair(tmp_path / "publisher")
    bundle, sig = write_bundle(db, version=V, key_path=key, out=tmp_path / "big.hvdb")
    # Small blocks and more symbols than one manifest's page hashes: 4 blocks, index pages.
    update = encode_update(bundle.read_bytes(), sig.read_bytes(), load_private_key(key),
                           block_source=256, symbol_count=6800)
    packet = parse_packet(update.manifest)
    manifest = Manifest.from_payload(packet.header, packet.payload)
    assert manifest.block_count == 4 and manifest.index_pages == 2
    machine = loopback_machine(peer, trust=[pub])
    machine.load(guest_image(rx_frames=1))  # the guest waits for a frame that never comes
    done = threading.Event()

    def publisher() -> None:
        deadline, draws = time.monotonic() + PATIENCE, random.Random(1)
        while not done.is_set() and time.monotonic() < deadline:
            push(update, peer, rounds=1, loss=0.2, rate=8000, rng=draws,
                 dst_mac=layout.HV_MAC, dst_ip=IPv4Address(layout.HV_IPV4),
                 progress_to=io.StringIO())  # fmt: skip

    sender = threading.Thread(target=publisher)
    sender.start()
    try:
        run_until(machine, lambda: machine.updates.accepted == 1)
    finally:
        done.set()
        sender.join()
        machine.close()
    assert machine.updates.accepted == 1 and machine.database.current.version == V
    receiver = machine.receiver
    assert receiver is not None
    assert receiver.counters["block_decoded"] == 4 and receiver.counters["installed"] == 1
    assert receiver.memory_in_use() <= receiver.memory_bound()
    assert machine.events.of("update_accepted")[0]["source"] == "network"
