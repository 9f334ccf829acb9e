"""An update as the packets that carry it: RaptorQ symbols, hash pages, the signed MANIFEST.

Models: the publisher's encoder and its relays' re-encoder (``docs/PROTOCOL.md``, "What travels",
"The carousel" and "Sign once, push anywhere"). ``encode_update`` turns a bundle and its detached
signature into the packets of ``docs/PROTOCOL.md``: the body is cut into source blocks of up to
``BLOCK_SOURCE`` symbols (one block for a body up to 5.7 MB), each RaptorQ encoded (systematic:
its source symbols, then repair symbols), the blocks' symbols interleaved, every symbol hashed
into hash pages, the pages RaptorQ-coded into the page stream (``page_stream``; index pages when
one MANIFEST cannot hold the page symbols' commitments), and a MANIFEST carrying the bundle
header, the bundle signature, the FEC parameters and the top hashes is signed with the
publisher's key and given its work stamp (``stamp``). ``relay_update`` is the key-less side: it
checks a signed manifest file against the bundle and re-encodes the very symbols and page
symbols it committed to (the encoding is deterministic). ``carousel`` is the order they go out
in (sans-IO: a generator of UDP payloads, which ``push.py`` sends and the tests feed to a
receiver directly): what a receiver needs first is front-loaded (``page_order``).

Follows: ``docs/PROTOCOL.md`` (the wire format, the carousel, the manifest file), RFC 6330
through the ``raptorq`` package (``Encoder.with_defaults`` per block: one RFC 6330 source block,
T-byte symbols, 4-byte FEC Payload IDs, whose SBN we set to the block's number).

Leaves out: a return channel (NACKs), HEARTBEAT packets, objects of more than 256 blocks of
4,096 symbols (the CLI says so; a two-level page tree commits to ``packets.max_pages`` x 88 x 88
symbols, more than that).

Network controls: nothing here; the user controls the files, the key and the options. A relay's
manifest file may come from anyone: ``manifest_file.py`` and ``relay_update`` treat it as hostile.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import raptorq
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from guest_tool.bundle import sign
from guest_tool.keys import PrivateKey
from guest_tool.manifest_file import ManifestFile
from guest_tool.work_stamp import stamp
from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.updates import packets
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
from hv_emu.updates.packet_errors import PacketError
from hv_emu.updates.packets import (
    FEC_PAYLOAD_ID_SIZE,
    HASHES_PER_PAGE,
    MAX_BLOCK_SOURCE,
    MAX_SYMBOL_SIZE,
    PAGE_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
    WORK_SIZE,
    Manifest,
    Packet,
    PacketHeader,
    PacketType,
    commitment,
    digest,
    has_work,
    manifest_message,
    max_pages,
    page_count_for,
    page_symbols_for,
    parse_packet,
    top_count,
)
from hv_emu.updates.verify import TrustedKey, sig_alg_for, supported_key

#: Symbol bytes T (a SYMBOL packet is 32 + 4 + T = 1436 bytes, under the 1472-byte limit).
DEFAULT_SYMBOL_SIZE = 1400
#: Most source symbols per block: 1,024 x 1,400 bytes = 1.4 MB a block (a 1 MB body is one
#: block; a larger body is cut into the fewest blocks of this size, evened out); a block decodes
#: in about 10 ms.
BLOCK_SOURCE = 4096
#: N_b = REPAIR_FACTOR * K_b + 1 symbols are committed per block (fewer if the page tree cannot
#: hold their hashes).
REPAIR_FACTOR = 2.0
#: A MANIFEST goes out this many times at the start of a round, then once every ... symbols.
MANIFEST_BURST = 3
MANIFEST_EVERY = 400
#: Page symbols sent ahead of a round's symbols: ceil(PAGE_FRONT x P) + PAGE_FRONT_EXTRA (of
#: M = 2P + 1): P of them arrive at 30 % loss but about one round in ten; the others are
#: sprinkled, one every PAGE_EVERY symbols; each index page goes INDEX_COPIES times ahead.
PAGE_FRONT = 1.6
PAGE_FRONT_EXTRA = 3
PAGE_EVERY = 400
INDEX_COPIES = 4


@dataclass(frozen=True)
class EncodedUpdate:
    """Every packet of one update (as UDP payloads); ``source_symbols`` is K. ``pages`` are the
    HASHPAGEs in index order: the M page symbols, then the Q index pages (if any)."""

    manifest: bytes
    pages: tuple[bytes, ...]
    symbols: tuple[bytes, ...]
    source_symbols: int


def encode_symbols(body: bytes, symbol_size: int, symbol_count: int,
                   block_source: int = BLOCK_SOURCE) -> tuple[bytes, ...]:  # fmt: skip
    """The ``symbol_count`` RaptorQ encoding packets (FEC Payload ID + T bytes) of ``body``, in
    blocks of ``block_source`` source symbols, interleaved (symbol i is symbol i // Z of block
    i % Z, its SBN the block number).

    Deterministic: RFC 6330 derives every symbol from the block, T and the symbol's ESI alone, and
    ``raptorq.Encoder.with_defaults`` picks its partitioning from the length and T alone, so a
    relay re-encoding the same body gets the very symbols the manifest committed to
    (``tests/guest_tool/test_relay.py`` pins a known answer). ``ConfigError`` if RaptorQ splits a
    block into more than one source block, or ``symbol_count`` is not Z symbols per block.
    """
    k = -(-len(body) // symbol_size)
    z = -(-k // block_source)
    per_block = symbol_count // z
    if symbol_count % z or per_block < min(k, block_source):
        raise ConfigError(f"{symbol_count} symbols is not a whole number for {z} blocks")
    size = block_source * symbol_size
    blocks = []
    for b in range(z):
        chunk = body[b * size : (b + 1) * size]
        encoder = raptorq.Encoder.with_defaults(chunk, symbol_size)
        payloads = encoder.get_encoded_packets(per_block - -(-len(chunk) // symbol_size))
        if len(payloads) != per_block or any(p[0] != 0 for p in payloads):
            raise ConfigError(
                f"RaptorQ made {len(payloads)} symbols in other source blocks for block {b} "
                f"({len(chunk)} bytes), not {per_block} in one"
            )
        blocks.append([bytes([b]) + p[1:] for p in payloads])
    return tuple(blocks[i % z][i // z] for i in range(symbol_count))


def page_stream(payloads: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """The M = 2P + 1 page symbols of the symbols ``payloads``: their commitments, 88 to a
    1,408-byte hash page (the last one padded with zeros), are the P source symbols of one
    RaptorQ source block (systematic: page symbol p < P is hash page p), then P + 1 repair
    symbols. Deterministic, like ``encode_symbols``."""
    pages = page_count_for(len(payloads))
    stream = b"".join(commitment(s) for s in payloads).ljust(pages * PAGE_SYMBOL_SIZE, b"\0")
    encoder = raptorq.Encoder.with_defaults(stream, PAGE_SYMBOL_SIZE)
    packets = encoder.get_encoded_packets(page_symbols_for(pages) - pages)
    if [p[:FEC_PAYLOAD_ID_SIZE] for p in packets] != [
            j.to_bytes(FEC_PAYLOAD_ID_SIZE, "big") for j in range(page_symbols_for(pages))]:
        raise ConfigError(f"RaptorQ split the page stream of {pages} pages into several blocks")
    return tuple(p[FEC_PAYLOAD_ID_SIZE:] for p in packets)


def hash_pages(update_id: int, db_version: int, payloads: tuple[bytes, ...],
               sig_len: int = 64) -> tuple[tuple[Packet, ...], tuple[bytes, ...]]:  # fmt: skip
    """The HASHPAGE packets committing to ``payloads``: the M page symbols (``page_stream``),
    then, when the MANIFEST (signed with ``sig_len``-byte signatures) cannot hold M commitments,
    Q index pages of 88 page-symbol commitments each; and the hashes the MANIFEST carries."""
    symbols = page_stream(payloads)
    m = len(symbols)
    top = top_count(page_count_for(len(payloads)), sig_len)
    count = m if top == m else m + top
    built = [Packet.build(PacketType.HASHPAGE, update_id, db_version, j, count, s)
             for j, s in enumerate(symbols)]  # fmt: skip
    hashes = [commitment(s) for s in symbols]
    if top == m:
        return tuple(built), tuple(hashes)
    index = [
        Packet.build(PacketType.HASHPAGE, update_id, db_version, m + q, count,
                     b"".join(hashes[q * HASHES_PER_PAGE : (q + 1) * HASHES_PER_PAGE]))
        for q in range(top)
    ]  # fmt: skip
    return (*built, *index), tuple(commitment(p.payload) for p in index)


#: The work a publisher's MANIFEST carries by default (``guest-tool manifest --work-bits``): the
#: rank cap of the candidate pool (``packets.WORK_BITS + packets.RANK_MARGIN``, one number so
#: they cannot drift), 2^24 SHA-256 tries once (``work_stamp.stamp``, on every core), 64 times
#: what a forgery needs to be admitted at all, so each forgery that competes with it costs 64
#: times the protocol minimum (``docs/PROTOCOL.md``, "Verification budget").
PUBLISHER_WORK_BITS = packets.WORK_BITS + packets.RANK_MARGIN
#: The most ``--work-bits`` accepted: 2^32 tries is already about 45 minutes of Python.
MAX_WORK_BITS = 32


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
    block_source: int = BLOCK_SOURCE,
    work_bits: int | None = None,
) -> EncodedUpdate:
    """RaptorQ-encode the bundle's body block by block, hash its symbols into pages, sign the
    manifest. ``symbol_count``: N (rounded up to whole blocks; default 2 K_b + 1 a block);
    ``work_bits``: the work stamp's leading zero bits (default, and at least, the protocol's
    minimum ``packets.WORK_BITS``; ``PUBLISHER_WORK_BITS`` is what ``guest-tool manifest`` uses).

    ``ConfigError`` if the bundle does not parse, the key is not the bundle's signer, or the body
    needs more symbols than the page tree can commit to.
    """
    header, body = _parse_bundle(bundle)
    sig_len = signature_length(header.sig_alg)
    if len(signature) != sig_len:
        raise ConfigError(f"signature is {len(signature)} bytes, the bundle's alg needs {sig_len}")
    if key_id_of(private_key.public_key()) != header.key_id:
        raise ConfigError(f"the key is not the one that signed the bundle ({header.key_id.hex()})")
    if not 0 < symbol_size <= MAX_SYMBOL_SIZE or symbol_size % SYMBOL_ALIGNMENT:
        raise ConfigError(f"symbol size must be a multiple of 8 up to {MAX_SYMBOL_SIZE}")
    if not 0 < block_source <= MAX_BLOCK_SOURCE:
        raise ConfigError(f"a block holds 1 to {MAX_BLOCK_SOURCE} source symbols")
    k = -(-len(body) // symbol_size)
    # As few blocks as ``block_source`` allows, all the same size (the last at most Z - 1
    # symbols shorter): with the blocks interleaved, a short block would finish early and its
    # share of the carousel would be wasted.
    z = -(-k // block_source)
    k_b = -(-k // z)
    limit = max_pages(sig_len) * HASHES_PER_PAGE * HASHES_PER_PAGE
    wanted = -(-symbol_count // z) if symbol_count is not None else int(REPAIR_FACTOR * k_b) + 1
    per_block = min(max(wanted, k_b), limit // z)
    if z * k_b > limit:
        raise ConfigError(
            f"body of {len(body)} bytes needs {k} symbols; one manifest commits to at most {limit}"
            f" ({limit * symbol_size} bytes at T = {symbol_size})"
        )
    n = z * per_block
    payloads = encode_symbols(body, symbol_size, n, k_b)
    uid = secrets.randbits(32) if update_id is None else update_id
    dbv = header.db_version
    pages, top = hash_pages(uid, dbv, payloads, sig_len)
    unsigned = Manifest(
        bundle[:HEADER_SIZE], header, signature, symbol_size, n, page_count_for(n), k_b, z,
        top, b"",
    )  # fmt: skip
    # The manifest signature covers the packet header too, so its payload length is fixed first.
    payload_len = len(unsigned.signed_part()) + sig_len + WORK_SIZE
    packet_header = PacketHeader(PacketType.MANIFEST, uid, dbv, 0, 1, payload_len)
    manifest_sig = sign(private_key, manifest_message(packet_header, unsigned.signed_part()))
    manifest = Packet.build(
        PacketType.MANIFEST, uid, dbv, 0, 1, unsigned.signed_part() + manifest_sig
        + bytes(WORK_SIZE)
    )
    symbols = _symbol_packets(uid, dbv, payloads)
    return EncodedUpdate(stamp(manifest.raw, work_bits), tuple(p.raw for p in pages), symbols, k)


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
    id, both signatures verify, the body matches the header, and the page symbols of the body
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
        if manifest.datagram[4:5] == b"\x01":
            raise ConfigError(f"{source}: a MANIFEST of protocol 1, which receivers refuse; "
                              "sign it again with guest-tool manifest") from None
        raise ConfigError(f"{source}: not a valid MANIFEST: {bad}") from None
    if not has_work(digest(manifest.datagram)):
        raise ConfigError(f"{source}: its work stamp is missing or wrong (receivers drop it as "
                          "no_work); sign it again with guest-tool manifest")
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
    payloads = encode_symbols(body, signed.symbol_size, signed.symbol_count, signed.block_source)
    pages, top = hash_pages(uid, dbv, payloads, len(signed.bundle_signature))
    for number, page_hash in enumerate(top):
        if page_hash != signed.page_hashes[number]:
            kind = "index page" if signed.index_pages else "page symbol"
            raise ConfigError(
                f"{source}: {kind} {number} differs from this bundle's symbols re-encoded at "
                f"T = {signed.symbol_size}, N = {signed.symbol_count}, K_b = "
                f"{signed.block_source}; nothing sent"
            )
    symbols = _symbol_packets(uid, dbv, payloads)
    return EncodedUpdate(manifest.datagram, tuple(p.raw for p in pages), symbols,
                         signed.source_symbols)  # fmt: skip


def page_order(pages: int, index_pages: int) -> tuple[list[int], list[int]]:
    """The HASHPAGEs of a round: (those sent ahead of the symbols, in order; those sprinkled among
    the symbols, in order, round and round). Ahead: each index page ``INDEX_COPIES`` times
    (a page symbol is accepted only once its index page is), then the first
    ceil(``PAGE_FRONT`` x P) + ``PAGE_FRONT_EXTRA`` page symbols (the P hash pages first: each
    one that arrives is used at once; then repair symbols for the ones lost). Sprinkled: the
    other page symbols, then the index pages, for receivers that lost more or joined late."""
    m = page_symbols_for(pages)
    first = min(m, math.ceil(PAGE_FRONT * pages) + PAGE_FRONT_EXTRA)
    index = [m + q for q in range(index_pages)]
    ahead = [q for q in index for _ in range(INDEX_COPIES)] + list(range(first))
    return ahead, list(range(first, m)) + index + list(range(first))


def carousel(update: EncodedUpdate, *, rounds: int | None = 1) -> Iterator[bytes]:
    """The packets of ``rounds`` rounds (forever if None), in carousel order.

    A round: the MANIFEST ``MANIFEST_BURST`` times, the HASHPAGEs ahead of the symbols
    (``page_order``), then every symbol in index order (source first, then repair; the blocks
    interleaved); among the symbols, the MANIFEST again every ``MANIFEST_EVERY`` packets (for
    late joiners: the work stamp, not repetition, is what beats a flood of forged ones) and one
    sprinkled HASHPAGE every ``PAGE_EVERY`` packets (``docs/PROTOCOL.md``, "The carousel").
    """
    manifest = parse_packet(update.manifest)
    signed = Manifest.from_payload(manifest.header, manifest.payload)
    ahead, sprinkled = page_order(signed.page_count, signed.index_pages)
    done = 0
    next_page = 0
    while rounds is None or done < rounds:
        done += 1
        yield from [update.manifest] * MANIFEST_BURST
        yield from (update.pages[p] for p in ahead)
        for number, symbol in enumerate(update.symbols, 1):
            yield symbol
            if number % MANIFEST_EVERY == 0:
                yield update.manifest
            if number % PAGE_EVERY == 0 and sprinkled:
                yield update.pages[sprinkled[next_page % len(sprinkled)]]
                next_page += 1
