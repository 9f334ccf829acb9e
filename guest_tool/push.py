"""Pushing a signed update over the network: ``guest-tool push UPDATE --to udp:H:P``.

Models: the publisher's update server and its relays (``docs/PROTOCOL.md``, "The carousel" and
"Sign once, push anywhere"): the command line of ``guest-tool push`` and ``guest-tool
manifest``. The packets themselves come from ``encoding.py`` (``encode_update`` with the key,
``relay_update`` from a signed manifest file, ``carousel`` for their order); ``push`` wraps each
payload in an Ethernet/IPv4/UDP frame to the hypervisor and sends it through a ``net.backends``
transport, with optional random loss (testing), a packet rate and a progress bar.

Follows: ``docs/PROTOCOL.md`` (the carousel, the manifest file), QEMU's one-frame-per-datagram
framing (``net/backends.py``).

Leaves out: a return channel (NACKs), HEARTBEAT packets (``encoding.py`` says what the packets
leave out).

Network controls: nothing here; the user controls the files, the key and the options. A relay's
manifest file may come from anyone: ``manifest_file.py`` and ``relay_update`` treat it as hostile.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TextIO, TypeVar

from guest_tool import encoding
from guest_tool.encoding import (
    MANIFEST_BURST,
    MAX_WORK_BITS,
    EncodedUpdate,
    carousel,
    encode_update,
    manifest_file_for,
    relay_update,
)
from guest_tool.keys import PrivateKey, load_private_key
from guest_tool.manifest_file import (
    manifest_path,
    read_manifest_file,
    write_manifest_file,
)
from hv_emu import layout
from hv_emu.errors import ConfigError
from hv_emu.named_file import read_user_file
from hv_emu.net.backends import FrameBackend, UdpBackend, UdpSpec, open_backend, parse_net_spec
from hv_emu.net.config import format_mac, parse_ipv4, parse_mac, parse_port
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.pcap import PcapWriter
from hv_emu.updates import packets
from hv_emu.updates.packets import parse_packet

#: Seconds ``push`` waits after a round's opening MANIFEST burst: receivers verify manifests off
#: their packet path, so a session opens a moment after its manifest arrived (well under a
#: millisecond when no flood keeps the verifier busy); without the pause a small update sent in
#: one go would reach them before it.
MANIFEST_LEAD = 0.01
HV_IPV4 = IPv4Address(layout.HV_IPV4)
_P = TypeVar("_P", bound=argparse.ArgumentParser)


def frame_for(payload: bytes, *, dst_mac: bytes, dst_ip: IPv4Address, port: int) -> bytes:
    """One UDP payload as the Ethernet/IPv4/UDP frame the hypervisor's switch intercepts."""
    return build_udp_frame(
        src_mac=layout.PUSH_SENDER_MAC, dst_mac=dst_mac, src_ip=layout.PUSH_SENDER_IPV4,
        dst_ip=dst_ip, src_port=layout.PUSH_SENDER_UDP_PORT, dst_port=port, payload=payload,
    )  # fmt: skip


class Progress:
    """A one-line progress bar on a terminal (nothing when ``out`` is not one)."""

    def __init__(self, out: TextIO, total: int) -> None:
        self.out, self.total, self.enabled = out, total, out.isatty() and total > 0

    def update(self, done: int) -> None:
        if self.enabled and (done % 64 == 0 or done == self.total):
            filled = 30 * done // self.total
            bar = "#" * filled + "-" * (30 - filled)
            self.out.write(f"\r[{bar}] {done}/{self.total} packets")
            self.out.flush()

    def clear(self) -> None:
        if self.enabled:
            self.out.write("\r" + " " * 60 + "\r")
            self.out.flush()


@dataclass(frozen=True)
class PushReport:
    sent: int
    dropped: int


def push(
    update: EncodedUpdate,
    backend: FrameBackend,
    *,
    rounds: int = 1,
    loss: float = 0.0,
    rate: float | None = None,
    dst_mac: bytes = layout.HV_MAC,
    dst_ip: IPv4Address = HV_IPV4,
    port: int = layout.UPDATE_UDP_PORT,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress_to: TextIO = sys.stderr,
) -> PushReport:
    """Send ``rounds`` rounds of the carousel; drop each frame with probability ``loss``; pause
    ``MANIFEST_LEAD`` after each round's opening MANIFEST burst."""
    if not 0.0 <= loss < 1.0:
        raise ConfigError(f"--loss must be in [0, 1), got {loss}")
    if rate is not None and not rate > 0:  # also refuses NaN
        raise ConfigError(f"--rate must be positive, got {rate}")
    draw = rng or random.Random()
    # Every round is the same packets: count one, send them all without holding them all.
    per_round = sum(1 for _ in carousel(update, rounds=1))
    progress = Progress(progress_to, rounds * per_round)
    sent = dropped = manifests_in_a_row = 0
    for number, payload in enumerate(carousel(update, rounds=rounds), 1):
        if loss and draw.random() < loss:
            dropped += 1
        else:
            backend.send_frame(frame_for(payload, dst_mac=dst_mac, dst_ip=dst_ip, port=port))
            sent += 1
        manifests_in_a_row = manifests_in_a_row + 1 if payload == update.manifest else 0
        pause = 1.0 / rate if rate is not None else 0.0
        if manifests_in_a_row == MANIFEST_BURST:  # the round's opening burst: let them verify it
            pause = max(pause, MANIFEST_LEAD)
        if pause:
            sleep(pause)
        progress.update(number)
    progress.clear()
    return PushReport(sent, dropped)


def open_destination(spec: str) -> FrameBackend:
    """``udp:HOST:PORT`` (a tunnel to an ``hv-emu run --net udp:...`` listener) or
    ``mcast:GROUP:PORT`` (join that hub); ``ConfigError`` for anything else."""
    kind, _, rest = spec.partition(":")
    if kind == "udp":
        # Reuse the --net grammar: "udp:HOST:PORT" names the peer here, we bind any local port.
        parsed = parse_net_spec(f"udp:127.0.0.1:0,peer={rest}")
        assert isinstance(parsed, UdpSpec) and parsed.peer is not None
        local = "127.0.0.1" if IPv4Address(parsed.peer[0]).is_loopback else "0.0.0.0"
        return UdpBackend((local, 0), parsed.peer)
    if kind == "mcast":
        return open_backend(parse_net_spec(spec))
    raise ConfigError(f"bad --to {spec!r}: expected udp:HOST:PORT or mcast:GROUP:PORT")


@dataclass(frozen=True)
class PushOptions:
    """What ``guest-tool push`` was asked to do, beyond the files."""

    to: str
    rounds: int = 1
    loss: float = 0.0
    rate: float | None = None
    seed: int | None = None
    dst_mac: bytes = layout.HV_MAC
    dst_ip: IPv4Address = HV_IPV4
    port: int = layout.UPDATE_UDP_PORT
    capture: str | None = None


def push_files(bundle: bytes, signature: bytes, key: PrivateKey, options: PushOptions,
               work_bits: int | None = None) -> str:  # fmt: skip
    """Sign a fresh manifest with ``key`` (its stamp of ``work_bits``, ``encode_update``) and
    send the update (one step); the summary line."""
    return push_encoded(encode_update(bundle, signature, key, work_bits=work_bits), options)


def _check_rounds(options: PushOptions) -> None:
    if options.rounds < 1:
        raise ConfigError(f"--repeat must be at least 1, got {options.rounds}")


def push_encoded(update: EncodedUpdate, options: PushOptions, note: str = "") -> str:
    """Send an encoded update; the one-line summary for the user (``note`` appended)."""
    _check_rounds(options)
    backend = open_destination(options.to)
    capture: PcapWriter | None = None
    try:
        capture = PcapWriter.create(options.capture) if options.capture else None
        sink: FrameBackend = backend if capture is None else _Tee(backend, capture)
        report = push(
            update, sink, rounds=options.rounds, loss=options.loss, rate=options.rate,
            dst_mac=options.dst_mac, dst_ip=options.dst_ip, port=options.port,
            rng=random.Random(options.seed),
        )  # fmt: skip
    finally:
        backend.close()
        if capture is not None:
            capture.close()
    n = len(update.symbols)
    return (
        f"pushed {report.sent} packets ({report.dropped} dropped on purpose) to {options.to}: "
        f"K = {update.source_symbols} source symbols, N = {n}, {len(update.pages)} page packets"
        f"{note}"
    )


class _Tee:
    """A backend that also records every frame it sends in a pcap file."""

    def __init__(self, backend: FrameBackend, capture: PcapWriter) -> None:
        self.backend, self.capture = backend, capture

    def send_frame(self, frame: bytes) -> None:
        self.capture.write(frame)
        self.backend.send_frame(frame)

    def recv_frames(self, max_frames: int) -> list[bytes]:
        return self.backend.recv_frames(max_frames)

    def fileno(self) -> int:
        return self.backend.fileno()

    def close(self) -> None:
        self.backend.close()


def add_push_command(sub: argparse._SubParsersAction[_P]) -> None:
    """``guest-tool push``'s and ``guest-tool manifest``'s arguments (``guest_tool/cli.py`` owns
    the other commands)."""
    cmd = sub.add_parser("push", help="send a signed update to hypervisors over UDP")
    cmd.add_argument("update", type=Path,
                     help="bundle (UPDATE.manifest beside it, or its .sig with --key)")
    cmd.add_argument("--key", type=Path,
                     help="PEM private key that signed the bundle: sign a fresh manifest now "
                          "(default: push the signed UPDATE.manifest, no private key needed)")
    cmd.add_argument("--manifest", type=Path, metavar="FILE",
                     help="signed manifest file (default: UPDATE.manifest; not with --key)")
    cmd.add_argument("--sig", type=Path, help="--key: signature file (default: UPDATE.sig)")
    cmd.add_argument("--to", required=True, metavar="SPEC",
                     help="udp:HOST:PORT (an hv-emu --net udp: listener) or mcast:GROUP:PORT")
    cmd.add_argument("--loss", type=float, default=0.0, metavar="P",
                     help="drop this fraction of packets at random (testing)")
    cmd.add_argument("--rate", type=float, metavar="PPS", help="packets per second")
    cmd.add_argument("--repeat", type=int, default=2, metavar="N",
                     help="carousel rounds (default 2)")
    cmd.add_argument("--seed", type=int, help="seed of --loss's random drops")
    cmd.add_argument("--hv-mac", default=format_mac(layout.HV_MAC), help="hypervisor's MAC")
    cmd.add_argument("--hv-ip", default=layout.HV_IPV4, help="hypervisor's IPv4 address")
    cmd.add_argument("--port", default=str(layout.UPDATE_UDP_PORT), help="update UDP port")
    cmd.add_argument("--capture", metavar="FILE.pcap", help="also record every frame sent")

    sign_cmd = sub.add_parser(
        "manifest", help="sign the network manifest of a bundle once, for relays to push"
    )
    sign_cmd.add_argument("update", type=Path, help="bundle (its .sig beside it)")
    sign_cmd.add_argument("--key", type=Path, required=True,
                          help="PEM private key that signed the bundle")
    sign_cmd.add_argument("--sig", type=Path, help="signature file (default: UPDATE.sig)")
    sign_cmd.add_argument("-o", "--output", type=Path,
                          help="manifest file to write (default: UPDATE.manifest)")
    for command in (cmd, sign_cmd):
        command.add_argument(
            "--work-bits", type=int, metavar="N",
            help="the work stamp's leading zero bits, about 2^N SHA-256 once, on every core: a "
                 "forgery must carry as much to compete with this manifest; receivers rank "
                 "work only up to the default, so more buys no better rank (default "
                 f"{encoding.PUBLISHER_WORK_BITS}, at least {packets.WORK_BITS}, at most "
                 f"{MAX_WORK_BITS})",
        )  # fmt: skip


def _push_options(args: argparse.Namespace) -> PushOptions:
    return PushOptions(
        to=args.to, rounds=args.repeat, loss=args.loss, rate=args.rate, seed=args.seed,
        dst_mac=parse_mac(args.hv_mac), dst_ip=parse_ipv4(args.hv_ip, "--hv-ip"),
        port=parse_port(args.port, "--port", allow_zero=False), capture=args.capture,
    )  # fmt: skip


def run_push_command(args: argparse.Namespace) -> str:
    """Run ``guest-tool push``; the summary line. ``ConfigError`` for any bad input.

    With ``--key`` a fresh manifest is signed now (one step); without it the signed manifest file
    is checked against the bundle by ``relay_update`` and nothing is sent on a mismatch.
    """
    options = _push_options(args)
    _check_rounds(options)
    bundle = _read(args.update, "update")
    if args.key is not None:
        if args.manifest is not None:
            raise ConfigError("--manifest or --key, not both: --key signs a fresh manifest")
        signature = _read(args.sig or Path(f"{args.update}.sig"), "signature")
        return push_files(bundle, signature, load_private_key(args.key), options,
                          _work_bits(args))
    if args.sig is not None:
        raise ConfigError("--sig goes with --key: without it the signature comes from the manifest")
    path = args.manifest or manifest_path(args.update)
    if args.manifest is None and not path.exists():
        raise ConfigError(
            f"no {path}: sign it once with 'guest-tool manifest {args.update} --key KEY', "
            "or push with --key"
        )
    update = relay_update(bundle, read_manifest_file(path), str(path))
    return push_encoded(update, options, f"; manifest {path} verified against {args.update}")


def _work_bits(args: argparse.Namespace) -> int:
    """``--work-bits``, checked; the publisher's default when absent."""
    bits: int | None = args.work_bits
    least = packets.WORK_BITS
    if bits is None:
        return max(encoding.PUBLISHER_WORK_BITS, least)
    if not least <= bits <= MAX_WORK_BITS:
        raise ConfigError(f"--work-bits must be {least} to {MAX_WORK_BITS} (receivers drop a "
                          f"manifest with fewer than {least}), not {bits}")
    return bits


def run_manifest_command(args: argparse.Namespace) -> str:
    """Run ``guest-tool manifest``: sign the MANIFEST once and write it; the summary line."""
    bundle = _read(args.update, "update")
    signature = _read(args.sig or Path(f"{args.update}.sig"), "signature")
    key = load_private_key(args.key)
    update = encode_update(bundle, signature, key, work_bits=_work_bits(args))
    out = args.output or manifest_path(args.update)
    write_manifest_file(out, manifest_file_for(update, key))
    uid = parse_packet(update.manifest).header.update_id
    return (
        f"wrote {out} ({out.stat().st_size} bytes): update id {uid:#010x}, "
        f"K = {update.source_symbols}, N = {len(update.symbols)}, {len(update.pages)} pages; "
        f"push it without the key: guest-tool push {args.update} --to SPEC"
    )


def _read(path: Path, what: str) -> bytes:
    return read_user_file(path, what)
