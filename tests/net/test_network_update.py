"""Signature updates arriving over ``--net`` while a guest runs: on a loopback tunnel, after the
guest was cut off, and on a multicast segment shared by three emulated hosts."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from guest_tool.bundle import write_bundle
from guest_tool.encoding import encode_update
from guest_tool.keys import generate_keypair, load_private_key
from guest_tool.programs import build_program, build_update_program
from guest_tool.push import push
from hv_emu.cli.demo.network import network_story
from hv_emu.errors import ConfigError
from hv_emu.machine import Machine, MachineConfig
from hv_emu.net.backends import McastBackend, McastSpec, UdpBackend
from hv_emu.net.config import NetConfig, format_mac
from hv_emu.net.headers import MIN_FRAME
from hv_emu.updates.state import StateDir
from tests.rigs.commands import BIN, sh
from tests.rigs.nic import (
    PATIENCE,
    SAMPLE_DB,
    frame_to,
    guest_image,
    loopback_machine,
    run_until,
    send_update,
    signed_update,
    wait_frames,
)
from tests.rigs.processes import wait_for

GROUP = "239.255.77.1"


@pytest.fixture
def peer() -> Iterator[UdpBackend]:
    backend = UdpBackend(("127.0.0.1", 0))
    yield backend
    backend.close()


def test_an_update_arrives_over_the_network_while_the_guest_runs(
    tmp_path: Path, peer: UdpBackend
) -> None:
    """The guest sends its hello and waits; the publisher pushes v7; only after the hypervisor
    accepted it does the peer answer the guest, which then prints the answer and halts."""
    update = signed_update(tmp_path, version=7)
    machine = loopback_machine(peer, trust=[update.trust])
    machine.load(guest_image(rx_frames=1))

    def publisher() -> None:
        (hello,) = wait_frames(peer)
        send_update(update, peer)
        assert wait_for(lambda: machine.updates.accepted == 1, PATIENCE)
        peer.send_frame(frame_to(hello[6:12], b"v7 is in"))

    other = threading.Thread(target=publisher)
    other.start()
    result = machine.run()
    other.join()
    machine.close()
    assert result.halted
    assert machine.debugcon.text().splitlines()[-2].endswith(": v7 is in")
    assert machine.database.current.version == 7 and machine.database.current.count == 5
    kinds = [e["event"] for e in machine.events.records]
    assert kinds.index("update_accepted") < kinds.index("halt")  # the guest was still running
    assert machine.events.of("update_accepted")[0]["source"] == "network"
    assert machine.network is not None and machine.receiver is not None
    assert machine.receiver.counters["installed"] == 1
    # Every update datagram went to the hypervisor, none to the guest: the guest got one frame.
    counters = machine.network.switch.counters
    assert counters["from_wire.for_hypervisor"] >= len(update.encoded.symbols)
    assert counters["from_wire.for_guest"] == 1
    status = machine.status_text().splitlines()
    assert "db_version: 7" in status and "network: up" in status
    assert "frames_from_guest: 1" in status and "frames_to_guest: 1" in status
    assert f"update_datagrams: {counters['from_wire.for_hypervisor']}" in status
    # and the receiver's counters, taken under the network's lock (docs/ABI.md, get_status)
    stats = machine.receiver.stats()
    assert f"update_datagrams_taken: {stats.datagrams}" in status and stats.datagrams > 0
    assert "update_installed: 1" in status
    assert any(line.startswith("update_drops: ") for line in status)


def test_a_cut_guest_sends_and_receives_nothing_while_updates_install(
    tmp_path: Path, peer: UdpBackend
) -> None:
    update = signed_update(tmp_path, version=9)
    machine = loopback_machine(peer, trust=[update.trust], guest_mac=bytes.fromhex("525400abcdef"))
    machine.load(guest_image(rx_frames=1))
    machine.cut_network("test: malware written to disk")
    assert machine.network is not None

    send_update(update, peer)
    peer.send_frame(frame_to(b"\xff" * 6, b"are you there?"))
    result = run_until(machine, lambda: machine.database.current.version == 9)

    assert not result.halted  # the driver waits for its link to come back
    assert machine.database.current.version == 9 and machine.updates.accepted == 1
    assert machine.debugcon.text().splitlines()[-1] == "nic: link down"
    assert "received" not in machine.debugcon.text()
    counters = machine.network.switch.counters
    assert counters["from_guest.drop.cut"] == 1 and counters["from_guest.for_wire"] == 0
    assert counters["from_wire.drop.cut"] == 1 and counters["from_wire.for_guest"] == 0
    assert machine.network.backend.stats["tx"] == 0  # type: ignore[attr-defined]
    assert peer.recv_frames(1) == []  # nothing from the guest ever reached the wire
    assert [e["reason"] for e in machine.events.of("network_cut")] == [
        "test: malware written to disk"]
    # What the guest itself learns from get_status (asm/programs/status64.s prints the text).
    machine.load(build_program("status"))
    machine.config.timeout = PATIENCE
    assert machine.run().halted
    machine.close()
    shown = machine.debugcon.text().splitlines()
    assert "network: cut" in shown and "frames_from_guest: 0" in shown and "db_version: 9" in shown


def test_cutting_mid_run_stops_a_guest_that_was_talking(peer: UdpBackend) -> None:
    """Frames flow both ways, then the cut: the frame the peer sent just before it never reaches
    the guest, and the driver sees its link go down."""
    machine = loopback_machine(peer)
    machine.load(guest_image(rx_frames=2))
    assert machine.network is not None
    network = machine.network

    run_until(machine, lambda: network.switch.counters["from_guest.for_wire"] == 1)
    (hello,) = wait_frames(peer)
    peer.send_frame(frame_to(hello[6:12], b"one"))
    run_until(machine, lambda: "received" in machine.debugcon.text())
    peer.send_frame(frame_to(hello[6:12], b"two"))
    machine.cut_network("test")
    run_until(machine, lambda: "link down" in machine.debugcon.text())
    machine.close()
    lines = machine.debugcon.text().splitlines()
    assert [line for line in lines if "received" in line] == [
        f"nic: received {14 + 3} bytes from 02:00:00:00:00:01: one"]
    assert lines[-1] == "nic: link down"


def free_port() -> int:
    """A UDP port that was free a moment ago (for the multicast group)."""
    probe = UdpBackend(("127.0.0.1", 0))
    port = probe.local_address[1]
    probe.close()
    return port


def _multicast_works(port: int) -> bool:
    try:
        a, b = McastBackend(GROUP, port), McastBackend(GROUP, port)
    except ConfigError:
        return False
    try:
        a.send_frame(bytes(MIN_FRAME))
        return bool(wait_frames(b, patience=2.0))
    finally:
        a.close()
        b.close()


def test_three_hosts_on_one_multicast_segment_install_one_pushed_update(tmp_path: Path) -> None:
    """Three machines, each running its guest in its own thread, share mcast:GROUP:PORT with
    their own hypervisor and guest addresses; one push to the broadcast address installs v11 on
    all three, and each guest hears the other two guests' hellos but never an update datagram."""
    port = free_port()
    if not _multicast_works(port):
        pytest.skip("this sandbox does not deliver IPv4 multicast on loopback")
    update = signed_update(tmp_path, version=11)
    guest_macs = [bytes.fromhex(f"5254001234{n:02x}") for n in range(3)]
    hosts = []
    for n, mac in enumerate(guest_macs):
        identity = NetConfig(hv_mac=bytes.fromhex(f"525400c0ff{n:02x}"),
                             hv_ip=IPv4Address(f"10.0.2.{240 + n}"))  # fmt: skip
        config = MachineConfig(net=McastSpec(GROUP, port), trust=[update.trust], guest_mac=mac,
                               net_config=identity)  # fmt: skip
        hosts.append(Machine(config))

    def heard(host: Machine) -> list[str]:
        lines = host.debugcon.text().splitlines()
        return sorted(line.split(" from ")[1][:17] for line in lines if "received" in line)

    def host_runs(host: Machine) -> None:
        # rx_frames=3: the guest never halts on its own (only two other guests say hello).
        host.load(guest_image(rx_frames=3))
        run_until(host, lambda: host.database.current.version == 11 and len(heard(host)) == 2)

    threads = [threading.Thread(target=host_runs, args=(host,)) for host in hosts]
    publisher = McastBackend(GROUP, port)
    try:
        for thread in threads:
            thread.start()
        send_update(update, publisher, dst_mac=b"\xff" * 6, dst_ip="255.255.255.255")
        for thread in threads:
            thread.join()
    finally:
        publisher.close()
        for host in hosts:
            host.close()
    for n, host in enumerate(hosts):
        assert host.database.current.version == 11, f"host {n}"
        assert heard(host) == sorted(format_mac(m) for m in guest_macs if m != guest_macs[n])
        assert host.network is not None
        assert host.network.switch.counters["from_wire.for_hypervisor"] >= 1


def test_the_demo_network_chapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, pub = generate_keypair(tmp_path / "demo")
    network_story(tmp_path, key, pub, SAMPLE_DB)
    out = capsys.readouterr().out
    assert re.findall(r"update from the network accepted: database v(\d+)", out) == ["3", "4"]
    running, cut = out.split("\n12. ", 1)
    # Step 11: the guest was answered only after v3 was accepted, so it ran through the update.
    assert "guest | nic: received 28 bytes from 02:00:00:00:00:01: v3 is in force" in running
    assert re.search(r"publisher: \d+ packets sent, [1-9]\d* lost on purpose", running)
    assert "network up: 1 frames sent by the guest, 1 received" in running
    # Step 12: cut; the guest's hello and the frame for it dropped; v4 installed regardless.
    assert "guest | nic: link down" in cut and "received" not in cut.split("state |")[0]
    assert "dropped by the cut: 1 from the guest, 1 to it" in cut
    assert "database in force: v4; the guest's link: down" in cut


def test_the_command_lines_end_to_end_on_a_multicast_segment(tmp_path: Path) -> None:
    """Two processes and the test on one segment: ``hv-emu run --net mcast:...`` runs the NIC
    guest, ``guest-tool push --to mcast:...`` sends v5; once the events file shows it accepted,
    the test answers the guest, which prints the answer and halts."""
    port = free_port()
    if not _multicast_works(port):
        pytest.skip("this sandbox does not deliver IPv4 multicast on loopback")
    spec = f"mcast:{GROUP}:{port}"
    for argv in (["guest-tool", "keygen", "demo"],
                 ["guest-tool", "bundle", "--db", str(SAMPLE_DB), "--version", "5", "--key",
                  "demo.key", "-o", "v5.hvdb"],
                 ["guest-tool", "build", "--nic", "-o", "nic-guest.bin"]):  # fmt: skip
        assert sh(*argv, cwd=tmp_path).returncode == 0, argv
    member = McastBackend(GROUP, port)
    events = tmp_path / "events.jsonl"
    hv = subprocess.Popen(
        [str(BIN / "hv-emu"), "run", "nic-guest.bin", "--net", spec, "--trust", "demo.pub",
         "--events", str(events), "--timeout", str(PATIENCE)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        (hello,) = wait_frames(member)  # the guest is up and waiting
        # the least work receivers admit: this test is about multicast, not the default stamp
        pushed = sh("guest-tool", "push", "v5.hvdb", "--key", "demo.key", "--to", spec,
                    "--work-bits", "18", cwd=tmp_path)  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr
        # --events streams into events.jsonl itself once the guest started (hv_emu/cli/outputs.py;
        # an installed hv-emu from before that streamed into a temporary beside it): watch both.
        def accepted() -> bool:
            for streaming in [events, *tmp_path.glob(".events.jsonl.*.tmp")]:
                with contextlib.suppress(FileNotFoundError):  # renamed in between
                    if "update_accepted" in streaming.read_text():
                        return True
            return False

        assert wait_for(accepted, PATIENCE)
        member.send_frame(frame_to(hello[6:12], b"v5 arrived"))
        out, err = hv.communicate(timeout=PATIENCE)
    finally:
        member.close()
        if hv.poll() is None:
            hv.kill()
            hv.communicate()
    assert hv.returncode == 0, err
    assert out.splitlines()[-2].endswith(": v5 arrived")
    assert "database v5 (5 signatures)" in err and "network up" in err
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds.index("update_accepted") < kinds.index("halt")


def test_a_vmcall_update_and_a_network_update_at_once_leave_the_newest_persisted(
    tmp_path: Path, peer: UdpBackend
) -> None:
    """The guest hands v5 over by VMCALL (vCPU thread) while v6 arrives on the wire (I/O
    thread): whichever order the service sees them in, v6 ends up in force and on disk, and v5
    is either accepted first or refused as stale, never installed over v6."""
    key, pub = generate_keypair(tmp_path / "publisher")
    v5, v5_sig = write_bundle(SAMPLE_DB, version=5, key_path=key, out=tmp_path / "v5.hvdb")
    v6, v6_sig = write_bundle(SAMPLE_DB, version=6, key_path=key, out=tmp_path / "v6.hvdb")
    state = tmp_path / "state"
    machine = loopback_machine(peer, trust=[pub], state_dir=state)
    machine.load(build_update_program(v5.read_bytes(), v5_sig.read_bytes()))
    push(encode_update(v6.read_bytes(), v6_sig.read_bytes(), load_private_key(key)), peer,
         rounds=2, progress_to=io.StringIO())  # fmt: skip
    assert machine.run().halted
    with machine.serving_network():  # the hypervisor stays on the wire after its guest halted
        assert wait_for(lambda: machine.updates.installed_version == 6, PATIENCE)
    machine.updates.wait_active()
    machine.close()
    assert machine.database.current.version == 6
    code = machine.debugcon.text()
    assert code in ("hvupdate: rc=0 (OK)\n", "hvupdate: rc=5 (STALE_VERSION)\n")
    assert machine.updates.accepted == (2 if "OK" in code else 1)
    loaded = StateDir(state).load()
    assert loaded is not None and loaded[0].db_version == 6
