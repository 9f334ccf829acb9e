"""Shared pieces of the network tests: a loopback peer, a signed update, runs in slices."""

from __future__ import annotations

import io
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

from guest_tool.bundle import write_bundle
from guest_tool.encoding import EncodedUpdate, encode_update
from guest_tool.keys import generate_keypair, load_private_key
from guest_tool.programs import build_program
from guest_tool.push import push
from hv_emu import layout
from hv_emu.machine import Machine, MachineConfig, RunResult
from hv_emu.net.backends import FrameBackend, UdpBackend, UdpSpec

SAMPLE_DB = Path(__file__).resolve().parents[2] / "hv_emu" / "data" / "sample.db"
#: The EtherType nic64.s sends (IEEE 802 local experimental 1), and the peer answers with.
ETHERTYPE_TEST = b"\x88\xb5"
PEER_MAC = bytes.fromhex("020000000001")
#: Generous bound on waiting for the other side; never asserted on.
PATIENCE = 30.0


def wait_frames(backend: FrameBackend, count: int = 1, patience: float = PATIENCE) -> list[bytes]:
    """Block until ``count`` frames arrived on ``backend`` (or ``patience`` ran out)."""
    got: list[bytes] = []
    end = time.monotonic() + patience
    while len(got) < count and time.monotonic() < end:
        select.select([backend.fileno()], [], [], 0.05)
        got += backend.recv_frames(count - len(got))
    return got


def drain(backend: FrameBackend) -> list[bytes]:
    """Every frame that arrives on ``backend`` until it has been quiet for half a second."""
    frames: list[bytes] = []
    while select.select([backend.fileno()], [], [], 0.5)[0]:
        frames += backend.recv_frames(256)
    return frames


def frame_to(dst: bytes, text: bytes, src: bytes = PEER_MAC) -> bytes:
    """A frame for the guest in nic64.s's own format."""
    return dst + src + ETHERTYPE_TEST + text


def guest_image(rx_frames: int = 1) -> bytes:
    return build_program("nic", equates={"RX_FRAMES": rx_frames})


def loopback_machine(peer: UdpBackend, **config: object) -> Machine:
    """A machine whose ``--net`` is ``udp:127.0.0.1:0,peer=<peer>``; ``peer`` sends back to it."""
    base = MachineConfig(net=UdpSpec(("127.0.0.1", 0), peer.local_address), timeout=PATIENCE)
    machine = Machine(replace(base, **config))  # type: ignore[arg-type]
    assert machine.network is not None
    peer.peer = machine.network.backend.local_address  # type: ignore[attr-defined]
    return machine


@dataclass(frozen=True)
class SignedUpdate:
    trust: Path
    encoded: EncodedUpdate
    version: int


def signed_update(tmp_path: Path, version: int = 7) -> SignedUpdate:
    """The sample database signed as ``version`` and encoded into update packets."""
    key, pub = generate_keypair(tmp_path / "publisher")
    bundle, sig = write_bundle(SAMPLE_DB, version=version, key_path=key,
                               out=tmp_path / f"v{version}.hvdb")  # fmt: skip
    encoded = encode_update(bundle.read_bytes(), sig.read_bytes(), load_private_key(key))
    return SignedUpdate(pub, encoded, version)


def send_update(update: SignedUpdate, backend: FrameBackend, *, rounds: int = 2,
                dst_mac: bytes = layout.HV_MAC, dst_ip: str = layout.HV_IPV4) -> None:  # fmt: skip
    """``guest-tool push`` through ``backend`` (two carousel rounds: loopback may drop one)."""
    push(update.encoded, backend, rounds=rounds, dst_mac=dst_mac, dst_ip=IPv4Address(dst_ip),
         progress_to=io.StringIO())  # fmt: skip


def run_until(machine: Machine, done: Callable[[], bool], *, slice_s: float = 0.2) -> RunResult:
    """Run the guest in watchdog slices until it halts or ``done()`` (or PATIENCE runs out).
    Between slices the backend's socket keeps what arrives; the guest resumes where it was."""
    machine.config.timeout = slice_s
    end = time.monotonic() + PATIENCE
    while True:
        result = machine.run()
        if result.halted or done() or time.monotonic() > end:
            return result


def cli_run_receiving_update(tmp_path: Path, *extra: str) -> tuple[list[int], Path]:
    """``hv-emu run --net udp:...`` of a guest that waits for one frame, in a thread of this
    process: a signed v7 update is pushed to it, and once the events file (``--events``, which
    streams: cli/outputs.py) shows it accepted the guest gets its frame and halts. ``extra``
    joins the command line. Returns the exit codes (one once it ended) and the events file."""
    from hv_emu.cli.main import main

    update = signed_update(tmp_path, version=7)
    image = tmp_path / "nic.bin"
    image.write_bytes(guest_image(rx_frames=1))
    events = tmp_path / "events.jsonl"
    peer = UdpBackend(("127.0.0.1", 0))
    probe = UdpBackend(("127.0.0.1", 0))
    port = probe.local_address[1]
    probe.close()
    peer.peer = ("127.0.0.1", port)
    argv = ["run", str(image), "--net", f"udp:127.0.0.1:{port},peer=127.0.0.1:"
            f"{peer.local_address[1]}", "--trust", str(update.trust), "--events", str(events),
            *extra, "--timeout", str(PATIENCE)]  # fmt: skip
    codes: list[int] = []
    hv = threading.Thread(target=lambda: codes.append(main(argv)))
    hv.start()
    try:
        (hello,) = wait_frames(peer)
        send_update(update, peer)
        end = time.monotonic() + PATIENCE
        while "update_accepted" not in events.read_text() and time.monotonic() < end:
            time.sleep(0.01)
        peer.send_frame(frame_to(hello[6:12], b"v7 is in"))
        hv.join(PATIENCE)
    finally:
        peer.close()
    return codes, events
