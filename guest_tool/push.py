"""Pushing a signed update over the network: ``guest-tool push UPDATE --to udp:H:P``.

Models: the publisher's update server and its relays (``docs/PROTOCOL.md``, "The carousel" and
"Sign once, push anywhere"). ``encode_update`` turns a bundle and its detached signature into the
packets of ``docs/PROTOCOL.md``: the body is RaptorQ encoded (systematic: K source symbols, then
repair symbols up to N), every symbol is hashed into hash pages, and a MANIFEST carrying the bundle
header, the bundle signature, the FEC parameters and the page hashes is signed with the
publisher's key (``guest-tool manifest`` keeps it in ``UPDATE.manifest``, ``push --key`` signs at
send time). ``relay_update`` is the key-less side: it checks a signed manifest file against the
bundle and re-encodes the very symbols it committed to (the encoding is deterministic).
``carousel`` is the order they go out in (sans-IO: a generator of UDP payloads, which the tests
drive without sockets); ``push`` wraps each payload in an Ethernet/IPv4/UDP frame to the
hypervisor and sends it through a ``net.backends`` transport, with optional random loss
(testing), a packet rate and a progress bar.

Follows: ``docs/PROTOCOL.md`` (the wire format, the carousel, the manifest file), RFC 6330 through
the ``raptorq`` package (``Encoder.with_defaults``: one source block, T-byte symbols, 4-byte FEC
Payload IDs), QEMU's one-frame-per-datagram framing (``net/backends.py``).

Leaves out: a return channel (NACKs), HEARTBEAT packets, objects larger than one manifest can
commit to (``packets.max_pages``: about 2.3 MB of symbols with Ed25519; the CLI says so).

Network controls: nothing here; the user controls the files, the key and the options. A relay's
manifest file may come from anyone: ``manifest_file.py`` and ``relay_update`` treat it as hostile.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TextIO, TypeVar

import raptorq
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from guest_tool.bundle import sign
from guest_tool.keys import PrivateKey, load_private_key
from guest_tool.manifest_file import (
    ManifestFile,
    manifest_path,
    read_manifest_file,
    write_manifest_file,
)
from hv_emu import layout
from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.named_file import read_user_file
from hv_emu.net.backends import FrameBackend, UdpBackend, UdpSpec, open_backend, parse_net_spec
from hv_emu.net.config import format_mac, parse_ipv4, parse_mac, parse_port
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.pcap import PcapWriter
from hv_emu.updates.format import (
    HEADER_SIZE,
    BundleHeader,
    PublicKey,
    SigAlg,
    key_id_of,
    parse_bundle,
    raw_public_key,
    signature_length,
    signing_message,
)
from hv_emu.updates.packets import (
    HASHES_PER_PAGE,
    MAX_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
    Manifest,
    Packet,
    PacketError,
    PacketHeader,
    PacketType,
    digest,
    manifest_message,
    max_pages,
    page_count_for,
    parse_packet,
)
from hv_emu.updates.verify import TrustedKey, sig_alg_for, supported_key

#: Symbol bytes T (a SYMBOL packet is 32 + 4 + T = 1436 bytes, under the 1472-byte limit).
DEFAULT_SYMBOL_SIZE = 1400
#: N = REPAIR_FACTOR * K symbols are committed (fewer if one manifest cannot hold their pages).
REPAIR_FACTOR = 2.0
#: A MANIFEST goes out this many times at the start of a round, then once every ...
MANIFEST_BURST = 3
MANIFEST_EVERY = 10
#: Seconds ``push`` waits after a round's opening MANIFEST burst: receivers verify manifests off
#: their packet path, so a session opens a moment after its manifest arrived (well under a
#: millisecond when no flood keeps the verifier busy); without the pause a small update sent in
#: one go would reach them before it.
MANIFEST_LEAD = 0.01
#: Copies of each hash page sent ahead of its symbols (see ``carousel``).
PAGE_COPIES = 4
HV_IPV4 = IPv4Address(layout.HV_IPV4)
_P = TypeVar("_P", bound=argparse.ArgumentParser)


@dataclass(frozen=True)
class EncodedUpdate:
    """Every packet of one update (as UDP payloads); ``source_symbols`` is K."""

    manifest: bytes
    pages: tuple[bytes, ...]
    symbols: tuple[bytes, ...]
    source_symbols: int


def encode_symbols(body: bytes, symbol_size: int, symbol_count: int) -> tuple[bytes, ...]:
    """The ``symbol_count`` RaptorQ encoding packets (FEC Payload ID + T bytes) of ``body``.

    Deterministic: RFC 6330 derives every symbol from the body, T and the symbol's ESI alone, and
    ``raptorq.Encoder.with_defaults`` picks its partitioning from the body length and T alone, so a
    relay re-encoding the same body gets the very symbols the manifest committed to
    (``tests/guest_tool/test_relay.py`` pins a known answer). ``ConfigError`` if RaptorQ splits the
    body into more than one source block (not what ``docs/PROTOCOL.md`` describes).
    """
    k = -(-len(body) // symbol_size)
    encoder = raptorq.Encoder.with_defaults(body, symbol_size)
    payloads = encoder.get_encoded_packets(symbol_count - k)
    if len(payloads) != symbol_count:
        raise ConfigError(
            f"RaptorQ made {len(payloads)} symbols for {len(body)} bytes, not {symbol_count}"
        )
    return tuple(payloads)


def hash_pages(update_id: int, db_version: int, payloads: tuple[bytes, ...]) -> tuple[Packet, ...]:
    """The HASHPAGE packets committing to ``payloads`` (44 SHA-256 values a page)."""
    n = len(payloads)
    return tuple(
        Packet.build(
            PacketType.HASHPAGE, update_id, db_version, p, page_count_for(n),
            b"".join(digest(s) for s in payloads[p * HASHES_PER_PAGE : (p + 1) * HASHES_PER_PAGE]),
        )
        for p in range(page_count_for(n))
    )  # fmt: skip


def _symbol_packets(
    update_id: int, db_version: int, payloads: tuple[bytes, ...]
) -> tuple[bytes, ...]:
    n = len(payloads)
    return tuple(
        Packet.build(PacketType.SYMBOL, update_id, db_version, i, n, s).raw
        for i, s in enumerate(payloads)
    )


def _parse_bundle(bundle: bytes) -> tuple[BundleHeader, bytes]:
    try:
        header, body = parse_bundle(bundle)
        signature_length(header.sig_alg)
        return header, body
    except UpdateRejected as bad:
        raise ConfigError(f"not a valid update bundle: {bad.reason}") from None


def encode_update(
    bundle: bytes,
    signature: bytes,
    private_key: PrivateKey,
    *,
    update_id: int | None = None,
    symbol_size: int = DEFAULT_SYMBOL_SIZE,
    symbol_count: int | None = None,
) -> EncodedUpdate:
    """RaptorQ-encode the bundle's body, hash its symbols into pages, sign the manifest.

    ``ConfigError`` if the bundle does not parse, the key is not the bundle's signer, or the body
    needs more symbols than one manifest can commit to.
    """
    header, body = _parse_bundle(bundle)
    sig_len = signature_length(header.sig_alg)
    if len(signature) != sig_len:
        raise ConfigError(f"signature is {len(signature)} bytes, the bundle's alg needs {sig_len}")
    if key_id_of(private_key.public_key()) != header.key_id:
        raise ConfigError(f"the key is not the one that signed the bundle ({header.key_id.hex()})")
    if not 0 < symbol_size <= MAX_SYMBOL_SIZE or symbol_size % SYMBOL_ALIGNMENT:
        raise ConfigError(f"symbol size must be a multiple of 8 up to {MAX_SYMBOL_SIZE}")
    k = -(-len(body) // symbol_size)
    limit = max_pages(sig_len) * HASHES_PER_PAGE
    wanted = symbol_count if symbol_count is not None else int(REPAIR_FACTOR * k) + 1
    n = min(max(wanted, k), limit)
    if k > limit:
        raise ConfigError(
            f"body of {len(body)} bytes needs {k} symbols; one manifest commits to at most {limit}"
            f" ({limit * symbol_size} bytes at T = {symbol_size})"
        )
    payloads = encode_symbols(body, symbol_size, n)
    uid = secrets.randbits(32) if update_id is None else update_id
    dbv = header.db_version
    pages = hash_pages(uid, dbv, payloads)
    unsigned = Manifest(
        bundle[:HEADER_SIZE], header, signature, symbol_size, n,
        tuple(digest(page.payload) for page in pages), b"",
    )  # fmt: skip
    # The manifest signature covers the packet header too, so its payload length is fixed first.
    payload_len = len(unsigned.signed_part()) + sig_len
    packet_header = PacketHeader(PacketType.MANIFEST, uid, dbv, 0, 1, payload_len)
    manifest_sig = sign(private_key, manifest_message(packet_header, unsigned.signed_part()))
    manifest = Packet.build(
        PacketType.MANIFEST, uid, dbv, 0, 1, unsigned.signed_part() + manifest_sig
    )
    symbols = _symbol_packets(uid, dbv, payloads)
    return EncodedUpdate(manifest.raw, tuple(p.raw for p in pages), symbols, k)


def manifest_file_for(update: EncodedUpdate, private_key: PrivateKey) -> ManifestFile:
    """What ``guest-tool manifest`` writes: the signed MANIFEST and the signer's public key."""
    return ManifestFile(raw_public_key(private_key.public_key()), update.manifest)


def _public_key(raw: bytes, sig_alg: int, source: str) -> PublicKey:
    """The public key of a manifest file, of the type ``sig_alg`` names; ``ConfigError``."""
    try:
        if sig_alg == SigAlg.ED25519:
            loaded: object = Ed25519PublicKey.from_public_bytes(raw)
        else:
            loaded = load_der_public_key(raw)
        key = supported_key(loaded)
        alg = sig_alg_for(key)
    except (ValueError, TypeError, UnsupportedAlgorithm, ConfigError) as bad:
        raise ConfigError(f"{source}: its public key does not load ({bad})") from None
    if alg != sig_alg:
        raise ConfigError(f"{source}: its public key is for sig_alg {alg}, the bundle's {sig_alg}")
    return key


def relay_update(
    bundle: bytes, manifest: ManifestFile, source: str = "the manifest"
) -> EncodedUpdate:
    """The packets of an update signed earlier, for a relay that has no private key.

    Checks, before anything is sent, that ``manifest`` belongs to ``bundle``: the MANIFEST parses
    as the receiver parses it, carries this bundle's header, its public key has the header's key
    id, both signatures verify, the body matches the header, and the hash pages of the body
    re-encoded with the manifest's T and N are the ones it commits to. ``ConfigError`` (one line)
    on the first mismatch.
    """
    header, body = _parse_bundle(bundle)
    try:
        packet = parse_packet(manifest.datagram)
        if packet.header.type is not PacketType.MANIFEST:
            raise ConfigError(f"{source}: holds a {packet.header.type.name} packet, not a MANIFEST")
        signed = Manifest.from_payload(packet.header, packet.payload)
    except PacketError as bad:
        raise ConfigError(f"{source}: not a valid MANIFEST: {bad}") from None
    if signed.bundle_header != bundle[:HEADER_SIZE]:
        raise ConfigError(
            f"{source} is for another bundle: it names version {signed.header.db_version}, body "
            f"SHA-256 {signed.header.body_sha256.hex()[:16]}..., the bundle version "
            f"{header.db_version}, {header.body_sha256.hex()[:16]}..."
        )
    if digest(body) != header.body_sha256:
        raise ConfigError("the bundle's body is not the one its header commits to (SHA-256)")
    public_key = _public_key(manifest.public_key, header.sig_alg, source)
    if key_id_of(public_key) != header.key_id:
        raise ConfigError(
            f"{source}: its public key (id {key_id_of(public_key).hex()}) is not the bundle's "
            f"signer ({header.key_id.hex()})"
        )
    signer = TrustedKey(header.key_id, SigAlg(header.sig_alg), public_key, source)
    if not signer.verifies(signing_message(signed.bundle_header), signed.bundle_signature):
        raise ConfigError(f"{source}: the bundle signature in it does not verify")
    message = manifest_message(packet.header, signed.signed_part())
    if not signer.verifies(message, signed.manifest_signature):
        raise ConfigError(f"{source}: the manifest signature does not verify (tampered?)")
    uid, dbv = packet.header.update_id, packet.header.db_version
    payloads = encode_symbols(body, signed.symbol_size, signed.symbol_count)
    pages = hash_pages(uid, dbv, payloads)
    for number, page in enumerate(pages):
        if digest(page.payload) != signed.page_hashes[number]:
            raise ConfigError(
                f"{source}: hash page {number} differs from this bundle's symbols re-encoded at "
                f"T = {signed.symbol_size}, N = {signed.symbol_count}; nothing sent"
            )
    symbols = _symbol_packets(uid, dbv, payloads)
    return EncodedUpdate(manifest.datagram, tuple(p.raw for p in pages), symbols,
                         signed.source_symbols)  # fmt: skip


def carousel(update: EncodedUpdate, *, rounds: int | None = 1) -> Iterator[bytes]:
    """The packets of ``rounds`` rounds (forever if None), in carousel order.

    A round: the MANIFEST ``MANIFEST_BURST`` times, then every symbol in index order (source
    first, then repair), page by page. A page's symbols are only accepted once the page is, so each
    page goes out ``PAGE_COPIES`` times ahead of them: one copy at the start of each of the
    ``PAGE_COPIES - 1`` blocks before it (page b rides with blocks b-3, b-2 and b-1) and one right
    before its own block. The MANIFEST repeats every ``MANIFEST_EVERY`` packets, for late joiners
    and so that under a flood of forged manifests a genuine copy is often among the candidates
    a receiver draws from (``docs/PROTOCOL.md``, "Verification budget").
    """
    done = 0
    while rounds is None or done < rounds:
        done += 1
        since_manifest = 0
        yield from [update.manifest] * MANIFEST_BURST
        pages = len(update.pages)
        for block in range(pages):
            ahead = [block + d for d in range(PAGE_COPIES - 1, -1, -1) if block + d < pages]
            if block == 0:  # nothing rode ahead of the first pages: send every early copy now
                early = range(PAGE_COPIES - 1, -1, -1)
                ahead = [b for d in early for b in range(d + 1) if b < pages]
            start = block * HASHES_PER_PAGE
            stream = [update.pages[b] for b in ahead]
            stream += update.symbols[start : start + HASHES_PER_PAGE]
            for packet in stream:
                if since_manifest == MANIFEST_EVERY:
                    yield update.manifest
                    since_manifest = 0
                yield packet
                since_manifest += 1


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


def push_files(bundle: bytes, signature: bytes, key: PrivateKey, options: PushOptions) -> str:
    """Sign a fresh manifest with ``key`` and send the update (one step); the summary line."""
    return push_encoded(encode_update(bundle, signature, key), options)


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
        f"K = {update.source_symbols} source symbols, N = {n}, {len(update.pages)} hash pages"
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
        return push_files(bundle, signature, load_private_key(args.key), options)
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


def run_manifest_command(args: argparse.Namespace) -> str:
    """Run ``guest-tool manifest``: sign the MANIFEST once and write it; the summary line."""
    bundle = _read(args.update, "update")
    signature = _read(args.sig or Path(f"{args.update}.sig"), "signature")
    key = load_private_key(args.key)
    update = encode_update(bundle, signature, key)
    out = args.output or manifest_path(args.update)
    write_manifest_file(out, manifest_file_for(update, key))
    uid = parse_packet(update.manifest).header.update_id
    return (
        f"wrote {out} ({out.stat().st_size} bytes): update id {uid:#010x}, "
        f"K = {update.source_symbols}, N = {len(update.symbols)}, {len(update.pages)} hash pages; "
        f"push it without the key: guest-tool push {args.update} --to SPEC"
    )


def _read(path: Path, what: str) -> bytes:
    return read_user_file(path, what)
