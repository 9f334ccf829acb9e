"""The network chapter of ``hv-emu demo``: an update arriving over the wire while the guest runs.

Models: the network path as a user would watch it, on loopback only. A machine with a NIC on a
UDP tunnel (``--net udp:...``) runs the NIC driver guest: it says hello and waits. A publisher on
the other end of the tunnel pushes version 3 with ``guest-tool push``'s carousel, losing a fifth
of the packets on purpose; the hypervisor's switch takes every update datagram for itself, the
receiver decodes and verifies them, and the database changes under the running guest, which is
then answered and prints the answer. Then the network is cut (what a detection's
``cut-network`` does): the guest's hello is dropped, nothing reaches it, and version 4 is pushed
and installed all the same.

Follows: docs/DEVICES.md (the card), docs/PROTOCOL.md (the packets), the README's walkthrough.

Leaves out: real networks (everything stays on 127.0.0.1), multicast (see the tests).

Guest controls: nothing; the demo builds its own guest. The network: only the demo's own sockets.
"""

from __future__ import annotations

import io
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from guest_tool.bundle import write_bundle
from guest_tool.encoding import EncodedUpdate, encode_update
from guest_tool.keys import load_private_key
from guest_tool.programs import build_program
from guest_tool.push import push
from hv_emu.machine import Machine, MachineConfig
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend, UdpSpec
from hv_emu.usage import plural

#: The publisher's loss rate: the receiver's forward error correction makes up for it.
LOSS = 0.2
#: How long the demo waits for the other side before it gives up (never reached on loopback).
PATIENCE = 20.0
#: The answering peer's MAC (locally administered).
PEER_MAC = bytes.fromhex("020000000001")
_ETHERTYPE = b"\x88\xb5"  # as asm/programs/nic64.s sends


def _say(text: str = "") -> None:
    print(text, flush=True)


def _wait(condition: Callable[[], bool]) -> bool:
    end = time.monotonic() + PATIENCE
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _encode(work: Path, key: Path, db: Path, version: int) -> EncodedUpdate:
    bundle, sig = write_bundle(db, version=version, key_path=key, out=work / f"v{version}.hvdb")
    return encode_update(bundle.read_bytes(), sig.read_bytes(), load_private_key(key))


def _push(update: EncodedUpdate, publisher: UdpBackend, seed: int) -> str:
    report = push(update, publisher, rounds=3, loss=LOSS, rng=random.Random(seed),
                  progress_to=io.StringIO())  # fmt: skip
    return (f"{plural(report.sent, 'packet')} sent, {report.dropped} lost on purpose "
            f"({LOSS:.0%} loss)")


def _tell(machine: Machine, network: GuestNetwork, printed: int, seen: int) -> None:
    for line in machine.debugcon.text()[printed:].splitlines():
        _say(f"    guest | {line}")
    for event in machine.events.records[seen:]:
        if event["event"] == "update_accepted":
            _say(f"    vmm   | update from the {event['source']} accepted: database "
                 f"v{event['db_version']}, {event['signatures']} signatures (in force once "
                 "compiled)")
        elif event["event"] == "network_cut":
            _say(f"    vmm   | network cut: {event['reason']}")
    _say(f"    state | network {network.summary()}")


def network_story(work: Path, key: Path, trust: Path, db: Path) -> None:
    """Steps 11-12 of the demo: ``db`` signed with ``key`` as versions 3 and 4, pushed by UDP."""
    publisher = UdpBackend(("127.0.0.1", 0))
    machine = Machine(MachineConfig(net=UdpSpec(("127.0.0.1", 0), publisher.local_address),
                                    trust=[trust], timeout=PATIENCE))  # fmt: skip
    network = machine.network
    assert network is not None  # built with --net
    publisher.peer = network.backend.local_address  # type: ignore[attr-defined]
    try:
        _say("11. The network: the guest has a NIC, and updates can come by UDP")
        _say("   (hv-emu run nic-guest.bin --net udp:127.0.0.1:0,peer=HOST:PORT --trust demo.pub;")
        _say("    guest-tool push v3.hvdb --key demo.key --to udp:HOST:PORT --loss 0.2)")
        _say("   the guest says hello and waits; the publisher pushes version 3 meanwhile:")
        v3 = _encode(work, key, db, 3)
        told: list[str] = []

        def publisher_side() -> None:
            hellos = _frames(publisher)
            told.append(_push(v3, publisher, seed=3))
            # Answer the guest only once v3 is in: it is still waiting, so it ran all along.
            if hellos and _wait(lambda: machine.updates.accepted == 1):
                publisher.send_frame(hellos[0][6:12] + PEER_MAC + _ETHERTYPE + b"v3 is in force")

        side = threading.Thread(target=publisher_side)
        side.start()
        machine.load(build_program("nic", equates={"RX_FRAMES": 1}))
        machine.run()
        side.join()
        _say(f"    net   | publisher: {''.join(told)}")
        _tell(machine, network, 0, 0)
        _say()

        _say("12. A detection cuts the guest off (cut-network); the hypervisor stays online:")
        printed, seen = len(machine.debugcon.text()), len(machine.events.records)
        machine.cut_network("the demo cuts the guest off")
        _push(_encode(work, key, db, 4), publisher, seed=4)
        publisher.send_frame(b"\xff" * 6 + PEER_MAC + _ETHERTYPE + b"anyone there?")
        machine.load(build_program("nic", equates={"RX_FRAMES": 1}))
        machine.config.timeout = 0.2  # the guest waits for its link: run it in slices until v4
        end = time.monotonic() + PATIENCE
        while machine.updates.accepted < 2 and time.monotonic() < end:
            machine.run()
        _tell(machine, network, printed, seen)
        _say(f"    state | database in force: v{machine.database.current.version}; "
             f"the guest's link: {'up' if network.nic.link_up else 'down'}")
    finally:
        machine.close()
        publisher.close()


def _frames(backend: UdpBackend) -> list[bytes]:
    """The first frame to arrive on ``backend`` (empty if none within PATIENCE)."""
    end = time.monotonic() + PATIENCE
    while time.monotonic() < end:
        frames = backend.recv_frames(1)
        if frames:
            return frames
        time.sleep(0.002)
    return []
