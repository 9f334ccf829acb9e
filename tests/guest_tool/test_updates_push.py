"""``guest-tool push`` end to end: real UDP and multicast sockets on loopback, frames parsed as the
hypervisor's switch parses them, the receiver installing; the commands of docs/PROTOCOL.md; the
pcap it records decoded by tshark with contrib/wireshark/hvdb.lua (skipped without tshark)."""

from __future__ import annotations

import io
import random
import re
import shlex
import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from guest_tool.cli import main
from guest_tool.encoding import carousel
from guest_tool.push import Progress, frame_for, push
from hv_emu import layout
from hv_emu.errors import ConfigError
from hv_emu.net.backends import FrameBackend, McastBackend, UdpBackend
from hv_emu.net.frames import parse_udp_frame
from hv_emu.net.pcap import PcapWriter, read_pcap
from hv_emu.updates.packets import PacketType, parse_packet
from tests.rigs.netupdate import KEY, encoded, rig, signed
from tests.rigs.nic import drain

ROOT = Path(__file__).resolve().parents[2]
DISSECTOR = ROOT / "contrib" / "wireshark" / "hvdb.lua"
V = 5


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """demo.key and update.hvdb (+ .sig) in tmp_path, as the doc's commands expect."""
    (tmp_path / "demo.key").write_bytes(
        KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    bundle, sig = signed(V)
    (tmp_path / "update.hvdb").write_bytes(bundle)
    (tmp_path / "update.hvdb.sig").write_bytes(sig)
    return tmp_path


def deliver(frames: list[bytes]) -> int:
    """Feed frames to a receiver as the switch would; the version installed."""
    r = rig(installed=2)
    for frame in frames:
        datagram = parse_udp_frame(frame)
        assert datagram.dst_mac == layout.HV_MAC and datagram.dst_port == layout.UPDATE_UDP_PORT
        assert datagram.dst_ip == IPv4Address(layout.HV_IPV4)
        r.feed([datagram.payload])
    return r.installed


def doc_commands(tool: str) -> list[str]:
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    return [line.strip() for line in text.splitlines() if line.startswith(f"    {tool} ")]


def test_doc_push_commands_run_and_install(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The carousel's commands, and sign-once: ``guest-tool manifest`` then a push without key."""
    monkeypatch.chdir(files)
    (signing,) = doc_commands("guest-tool manifest")
    assert main(shlex.split(signing)[1:]) == 0 and (files / "update.hvdb.manifest").is_file()
    commands = doc_commands("guest-tool push")
    assert len(commands) == 4 and sum("--key" not in c for c in commands) == 1
    for command in commands:
        listener: FrameBackend
        if "mcast:" in command:
            group = f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
            try:
                listener = McastBackend(group, 0xDB10)
            except ConfigError as err:
                pytest.skip(f"sandbox refuses loopback multicast: {err}")
            command = command.replace("mcast:239.0.0.1:5555", f"mcast:{group}:{0xDB10}")
            command += " --seed 3"
        else:
            listener = UdpBackend(("127.0.0.1", 0))
            command = command.replace("5555", str(listener.local_address[1]))
        try:
            assert main(shlex.split(command)[1:]) == 0
            frames = drain(listener)
        finally:
            listener.close()
        if not frames and "mcast:" in command:
            pytest.skip("multicast joined but nothing is delivered on loopback here")
        assert deliver(frames) == V, command


def test_capture_decodes_with_the_lua_dissector(files: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (Debian package tshark; CI installs it)")
    listener = UdpBackend(("127.0.0.1", 0))
    pcap = files / "sent.pcap"
    try:
        assert main(["push", str(files / "update.hvdb"), "--key", str(files / "demo.key"),
                     "--to", f"udp:127.0.0.1:{listener.local_address[1]}", "--repeat", "1",
                     "--capture", str(pcap)]) == 0
    finally:
        listener.close()
    with pcap.open("rb") as f:
        frames = [record.data for record in read_pcap(f)]
    doc = [c for c in doc_commands("tshark")]
    assert doc == ["tshark -X lua_script:contrib/wireshark/hvdb.lua -r sent.pcap -V"]
    command = shlex.split(doc[0].replace("sent.pcap", str(pcap)))
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                         check=True).stdout
    update = encoded(V)
    sent = [parse_packet(p).header.type for p in carousel(update)]
    assert len(sent) == len(frames)
    for kind in PacketType:
        decoded = re.findall(rf"Type: {kind.name} \({kind.value}\)", out)
        assert len(decoded) == sent.count(kind), kind
    assert "Signature algorithm: Ed25519 (1)" in out and f"Database version: {V}" in out
    assert "Expert Info" not in out  # nothing malformed in what we send
    # A truncated and a mislabelled packet raise the dissector's expert info.
    bad = files / "bad.pcap"
    with PcapWriter.create(str(bad)) as writer:
        for payload in (update.symbols[0][:20], b"XXXX" + update.symbols[0][4:]):
            writer.write(frame_for(payload, dst_mac=layout.HV_MAC,
                                   dst_ip=IPv4Address(layout.HV_IPV4),
                                   port=layout.UPDATE_UDP_PORT))
    out = subprocess.run(["tshark", "-X", f"lua_script:{DISSECTOR}", "-r", str(bad), "-V"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "truncated header (20 < 32)" in out and "Wrong magic" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "tcp:1.2.3.4:5"], "bad --to"),
        (["--to", "udp:127.0.0.1:0"], "port"),
        (["--to", "udp:127.0.0.1:\u00b2"], "port"),
        (["--to", "udp:127.0.0.1:9", "--loss", "1.5"], "--loss"),
        (["--to", "udp:127.0.0.1:9", "--repeat", "0"], "--repeat"),
        (["--to", "udp:127.0.0.1:9", "--hv-mac", "zz"], "MAC"),
        (["--to", "udp:127.0.0.1:9", "--sig", "missing.sig"], "cannot read signature"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    files: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["push", str(files / "update.hvdb"), "--key", str(files / "demo.key"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_wrong_key_is_refused(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = files / "other.key"
    other.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert main(["push", str(files / "update.hvdb"), "--key", str(other), "--to",
                 "udp:127.0.0.1:9"]) == 2
    assert "not the one that signed" in capsys.readouterr().err


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def recv_frames(self, max_frames: int) -> list[bytes]:
        return []

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


def test_loss_rate_and_progress() -> None:
    update = encoded(V, lines=400)
    total = len(list(carousel(update, rounds=2)))
    sink, sleeps = _Recorder(), []

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    report = push(update, sink, rounds=2, loss=0.5, rate=100.0, rng=random.Random(2),
                  sleep=sleeps.append, progress_to=tty)
    assert report.sent + report.dropped == total == len(sleeps)
    assert report.sent == len(sink.frames) and 0 < report.dropped < total
    assert set(sleeps) == {0.01} and f"{total}/{total} packets" in tty.getvalue()
    assert Progress(io.StringIO(), total).enabled is False  # not a terminal: silent


def test_scapy_built_frames_install() -> None:
    """scapy, an independent peer, wraps the update in Ethernet/IPv4/UDP; our switch's parser
    reads its frames and the receiver installs."""
    scapy_all = pytest.importorskip("scapy.all")
    update = encoded(V)
    frames = [
        bytes(scapy_all.Ether(dst=layout.HV_MAC.hex(":"), src="02:00:00:00:00:01")
              / scapy_all.IP(src="10.0.2.9", dst=layout.HV_IPV4, flags="DF")
              / scapy_all.UDP(sport=40000, dport=layout.UPDATE_UDP_PORT)
              / scapy_all.Raw(load=payload))
        for payload in carousel(update, rounds=1)
    ]
    assert deliver(frames) == V


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_a_rate_that_is_not_a_positive_number_is_refused(rate: float) -> None:
    with pytest.raises(ConfigError, match="--rate must be positive"):
        push(encoded(V), _Recorder(), rate=rate, sleep=lambda seconds: None)


def test_the_destination_is_closed_when_the_capture_file_cannot_be_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guest_tool.push as push_module

    closed: list[bool] = []

    class Destination(_Recorder):
        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(push_module, "open_destination", lambda spec: Destination())
    bundle, signature = signed(V)
    options = push_module.PushOptions(to="udp:127.0.0.1:9", capture=str(tmp_path / "no" / "x"))
    with pytest.raises(ConfigError, match="cannot write capture file"):
        push_module.push_files(bundle, signature, KEY, options)
    assert closed == [True]
