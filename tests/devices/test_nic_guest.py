"""A real guest driving its NIC (asm/programs/nic64.s) over a loopback UDP backend: sending,
receiving, the hypervisor's interception in both directions, the capture file, and the CLI's
options."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.programs import INCLUDE_DIR, PORTS, parse_equates
from hv_emu import layout
from hv_emu.cli.main import main
from hv_emu.devices.nic import NIC_ID, Command, Reg, Status
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import format_mac
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.pcap import read_pcap
from tests.rigs.commands import one_line, sh
from tests.rigs.nic import (
    ETHERTYPE_TEST,
    PATIENCE,
    PEER_MAC,
    frame_to,
    guest_image,
    loopback_machine,
    wait_frames,
)

BROADCAST = b"\xff" * 6
HELLO = b"hello from the guest"


@pytest.fixture
def peer() -> Iterator[UdpBackend]:
    backend = UdpBackend(("127.0.0.1", 0))
    yield backend
    backend.close()


def test_nicregs_s_agrees_with_the_device_and_layout() -> None:
    equates = parse_equates((INCLUDE_DIR / "nicregs.s").read_text(encoding="utf-8"))
    assert "NIC_PORT" not in equates  # generated from layout.py in front of every program
    assert PORTS["NIC_PORT"] == layout.PORT_NIC
    assert equates["NIC_ID_VALUE"] == NIC_ID
    for reg in Reg:
        assert equates[f"NIC_REG_{reg.name}"] == reg.value
    for bit in Status:
        assert equates[f"NIC_{bit.name}"] == bit.value
    for command in Command:
        assert equates[f"NIC_CMD_{command.name}"] == command.value


def test_guest_sends_a_frame_and_prints_the_frames_it_receives(peer: UdpBackend) -> None:
    machine = loopback_machine(peer)
    machine.load(guest_image(rx_frames=2))
    replies = [b"first reply", b"second \x01 reply"]

    def the_other_end() -> None:
        (hello,) = wait_frames(peer)
        assert hello[:14] == BROADCAST + layout.GUEST_MAC + ETHERTYPE_TEST
        for text in replies:
            peer.send_frame(frame_to(hello[6:12], text))

    other = threading.Thread(target=the_other_end)
    other.start()
    result = machine.run()
    other.join()
    machine.close()
    assert result.halted
    assert machine.debugcon.text().splitlines() == [
        f"nic: mac {format_mac(layout.GUEST_MAC)}",
        f"nic: sent {14 + len(HELLO)} bytes",
        f"nic: received {14 + len(replies[0])} bytes from {format_mac(PEER_MAC)}: first reply",
        f"nic: received {14 + len(replies[1])} bytes from {format_mac(PEER_MAC)}: second . reply",
        "nic: done",
    ]
    assert machine.network is not None
    counters = machine.network.switch.counters
    assert counters["from_guest.for_wire"] == 1 and counters["from_wire.for_guest"] == 2


def test_update_port_datagrams_never_reach_the_guest(peer: UdpBackend) -> None:
    """scapy crafts the wire side: junk to the update port is the hypervisor's (counted as a
    bad packet), an ordinary UDP datagram right after it is the guest's."""
    scapy = pytest.importorskip("scapy.all")
    machine = loopback_machine(peer)
    machine.load(guest_image(rx_frames=1))
    ip = {"src": "10.0.2.2", "dst": layout.HV_IPV4}
    for_hv = scapy.Ether(dst=layout.HV_MAC, src=PEER_MAC) / scapy.IP(**ip) / scapy.UDP(
        sport=4000, dport=layout.UPDATE_UDP_PORT) / b"HVDB? not really"
    for_guest = scapy.Ether(dst=layout.GUEST_MAC, src=PEER_MAC) / scapy.IP(
        src="10.0.2.2", dst="10.0.2.15") / scapy.UDP(sport=4000, dport=7) / b"echo me"
    peer.send_frame(bytes(for_hv))
    peer.send_frame(bytes(for_guest))
    result = machine.run()
    machine.close()
    assert result.halted
    received = [line for line in machine.debugcon.text().splitlines() if "received" in line]
    assert len(received) == 1 and received[0].endswith(f"{format_mac(PEER_MAC)}: E")  # 0x45 0x00
    assert machine.receiver is not None and machine.receiver.counters["datagrams"] == 1
    assert machine.network is not None
    assert machine.network.switch.counters["from_wire.for_hypervisor"] == 1


def test_guest_frames_to_the_update_port_are_dropped(peer: UdpBackend) -> None:
    """The egress filter behind the card: a guest cannot feed other hypervisors updates."""
    machine = loopback_machine(peer)
    assert machine.network is not None
    forged = build_udp_frame(
        src_mac=layout.GUEST_MAC, dst_mac=BROADCAST, src_ip="10.0.2.15", dst_ip="255.255.255.255",
        src_port=1234, dst_port=layout.UPDATE_UDP_PORT, payload=b"forged update",
    )  # fmt: skip
    for byte in forged:  # as the driver does it: through the data port, then TRANSMIT
        machine.bus.write(layout.PORT_NIC + Reg.DATA, 1, byte)
    machine.bus.write(layout.PORT_NIC + Reg.STATUS, 1, Command.TRANSMIT)
    counters = machine.network.switch.counters
    assert counters["from_guest.drop.egress_update_port"] == 1
    assert machine.network.backend.recv_frames(1) == [] and peer.recv_frames(1) == []
    machine.close()


def test_no_net_means_no_card() -> None:
    from hv_emu.machine import Machine, MachineConfig

    machine = Machine(MachineConfig(timeout=PATIENCE))
    machine.load(guest_image())
    assert machine.run().halted
    assert machine.debugcon.text() == "nic: no card\n"


def _answer_once(sock: socket.socket, text: bytes) -> threading.Thread:
    """A plain-socket peer: reply to the first frame with one frame to its sender."""

    def serve() -> None:
        sock.settimeout(PATIENCE)
        hello, source = sock.recvfrom(65536)
        sock.sendto(frame_to(hello[6:12], text), source)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def test_documented_commands_capture_both_directions(tmp_path: Path) -> None:
    """docs/DEVICES.md's commands: build the driver guest, run it with --net and --capture."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "DEVICES.md").read_text()
    block = doc.split("Try it (a peer must answer on PEER_PORT):\n```\n", 1)[1].split("```")[0]
    commands = [line.split() for line in block.strip().splitlines()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
        answering = _answer_once(sock, b"hi from the wire")
        for argv in commands:
            done = sh(*[a.replace("PEER_PORT", port) for a in argv], cwd=tmp_path)
            assert done.returncode == 0, (argv, done.stderr)
        answering.join()
    assert done.stdout.splitlines()[2:] == [
        f"nic: received 30 bytes from {format_mac(PEER_MAC)}: hi from the wire", "nic: done"]
    assert "network up: 1 frames sent by the guest, 1 received" in done.stderr
    with (tmp_path / "nic.pcap").open("rb") as capture:
        frames = [record.data for record in read_pcap(capture)]
    assert [f[6:12] for f in frames] == [layout.GUEST_MAC, PEER_MAC]
    assert frames[0][14:34] == HELLO

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (Debian package tshark; .ci/run installs it)")
    fields = subprocess.run(
        [tshark, "-r", str(tmp_path / "nic.pcap"), "-T", "fields", "-e", "eth.src",
         "-e", "eth.type"], capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert fields == [format_mac(layout.GUEST_MAC), "0x88b5", format_mac(PEER_MAC), "0x88b5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--net", "tcp:127.0.0.1:5555"], "bad --net 'tcp:127.0.0.1:5555'"),
        (["--net", "udp:127.0.0.1:5555,peer=nowhere"], "bad peer address 'nowhere'"),
        (["--net", "mcast:10.0.0.1:5555"], "bad multicast group 10.0.0.1"),
        (["--capture", "x.pcap"], "--capture needs --net"),
        (["--net", "udp:127.0.0.1:0", "--hv-mac", "52:54"], "bad MAC address '52:54'"),
        (["--net", "udp:127.0.0.1:0", "--hv-mac", "01:00:5e:00:00:01"], "not a unicast"),
        (["--net", "udp:127.0.0.1:0", "--hv-ip", "10.0.2"], "bad --hv-ip '10.0.2'"),
        (["--net", "udp:127.0.0.1:0", "--update-port", "70000"], "bad --update-port '70000'"),
        (["--net", "udp:127.0.0.1:0", "--update-port", "\u00b2"], "bad --update-port '\u00b2'"),
        (["--net", "udp:127.0.0.1:\u00b2"], "bad"),
        (["--net", "udp:127.0.0.1:0", "--guest-mac", "52:54:00:c0:ff:ee"], "guest MAC"),
        (["--net", "udp:127.0.0.1:0", "--capture", "/nonexistent/dir/x.pcap"],
         "cannot write --capture"),
    ],
)
def test_bad_network_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    image = tmp_path / "nic.bin"
    image.write_bytes(guest_image())
    assert main(["run", str(image), *args]) == 2
    err = capsys.readouterr().err
    assert one_line(err).startswith("hv-emu: error: ") and message in err


def test_a_port_already_in_use_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "nic.bin"
    image.write_bytes(guest_image())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        assert main(["run", str(image), "--net", f"udp:127.0.0.1:{port}"]) == 2
    assert "cannot bind UDP 127.0.0.1" in one_line(capsys.readouterr().err)


def test_readme_states_the_layout_defaults() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"`--hv-mac` ({format_mac(layout.HV_MAC)})" in readme
    assert f"`--hv-ip` ({layout.HV_IPV4})" in readme
    assert f"`--update-port` ({layout.UPDATE_UDP_PORT})" in readme
    assert f"`--guest-mac` ({format_mac(layout.GUEST_MAC)})" in readme


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=2000), min_size=1, max_size=40))
def test_any_datagrams_on_the_wire_leave_the_io_thread_standing(frames: list[bytes]) -> None:
    """Whatever arrives, the I/O thread neither dies nor lets the card's queue grow past its
    bound; ``stop()`` raises if the thread died."""
    peer = UdpBackend(("127.0.0.1", 0))
    machine = loopback_machine(peer)
    network = machine.network
    assert network is not None
    try:
        network.start()
        for frame in frames:
            peer.send_frame(frame)
        end = time.monotonic() + PATIENCE
        while network.backend.stats["rx"] < len(frames) and time.monotonic() < end:  # type: ignore[attr-defined]
            time.sleep(0.001)
        network.stop()
        assert network.nic.rx_pending <= network.nic.rx_capacity
        assert sum(network.switch.counters.values()) >= len(frames)
    finally:
        machine.close()
        peer.close()


@pytest.mark.parametrize("module", ["hv_emu.devices.nic", "hv_emu.net.attachment",
                                    "hv_emu.cli.netopts", "hv_emu.cli.demo.network"])  # fmt: skip
def test_network_modules_say_what_they_model(module: str) -> None:
    doc = __import__(module, fromlist=["_"]).__doc__ or ""
    for section in ("Models:", "Follows:", "Leaves out:", "controls"):
        assert section in doc, f"{module}: no {section!r}"
    # they take guest or network input
    if module in ("hv_emu.devices.nic", "hv_emu.net.attachment"):
        assert "| Threat" in doc and "Mitigation" in doc


def test_docs_register_table_matches_the_code() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "DEVICES.md").read_text()
    rows = [line.split("|") for line in doc.splitlines() if line.startswith("| +0x")]
    offsets = {int(cells[1].strip()[1:].split("-")[0], 16) for cells in rows}
    assert offsets == {reg.value for reg in Reg}
    names = " ".join(cells[3] + cells[4] for cells in rows)
    documented = [f"{c.value:#04x} {c.name}" for c in Command]
    documented += [f"bit {s.value.bit_length() - 1} {s.name}" for s in Status]
    for text in documented:
        assert text in names
