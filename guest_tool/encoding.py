"""An update as the packets that carry it: RaptorQ symbols, hash pages, the signed MANIFEST.

Models: the publisher's encoder and its relays' re-encoder (``docs/PROTOCOL.md``, "What travels",
"The carousel" and "Sign once, push anywhere"). ``encode_update`` turns a bundle and its detached
signature into the packets of ``docs/PROTOCOL.md``: the body is cut into source blocks of
``BLOCK_SOURCE`` symbols (one block for a body up to 1.4 MB), each RaptorQ encoded (systematic:
its source symbols, then repair symbols), the blocks' symbols interleaved, every symbol hashed
into hash pages (and the pages into index pages when one MANIFEST cannot hold all their
hashes), and a MANIFEST carrying the bundle header, the bundle signature, the FEC parameters and
the top hashes is signed with the publisher's key. ``relay_update`` is the key-less side: it
checks a signed manifest file against the bundle and re-encodes the very symbols it committed to
(the encoding is deterministic). ``carousel`` is the order they go out in (sans-IO: a generator
of UDP payloads, which ``push.py`` sends and the tests feed to a receiver directly).

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
from hv_emu.errors import ConfigError, UpdateRejected
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
    MAX_BLOCK_SOURCE,
    MAX_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
    Manifest,
    Packet,
    PacketError,
    PacketHeader,
    PacketType,
    commitment,
    digest,
    manifest_message,
    max_pages,
    page_count_for,
    parse_packet,
    top_count,
)
from hv_emu.updates.verify import TrustedKey, sig_alg_for, supported_key

#: Symbol bytes T (a SYMBOL packet is 32 + 4 + T = 1436 bytes, under the 1472-byte limit).
DEFAULT_SYMBOL_SIZE = 1400
#: Most source symbols per block: 1,024 x 1,400 bytes = 1.4 MB a block (a 1 MB body is one
#: block; a larger body is cut into the fewest blocks of this size, evened out); a block decodes
#: in about 10 ms.
BLOCK_SOURCE = 1024
#: N_b = REPAIR_FACTOR * K_b + 1 symbols are committed per block (fewer if the page tree cannot
#: hold their hashes).
REPAIR_FACTOR = 2.0
#: A MANIFEST goes out this many times at the start of a round, then once every ...
MANIFEST_BURST = 3
MANIFEST_EVERY = 10
#: Copies of each hash page sent ahead of its symbols (see ``carousel``).
PAGE_COPIES = 4


@dataclass(frozen=True)
class EncodedUpdate:
    """Every packet of one update (as UDP payloads); ``source_symbols`` is K. ``pages`` are the
    HASHPAGEs in index order: the P hash pages, then the Q index pages (if any)."""

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


def _pages_of(update_id: int, db_version: int, hashes: list[bytes], first: int,
              count: int) -> list[Packet]:  # fmt: skip
    return [
        Packet.build(PacketType.HASHPAGE, update_id, db_version, first + p, count,
                     b"".join(hashes[p * HASHES_PER_PAGE : (p + 1) * HASHES_PER_PAGE]))
        for p in range(page_count_for(len(hashes)))
    ]  # fmt: skip


def hash_pages(update_id: int, db_version: int, payloads: tuple[bytes, ...],
               sig_len: int = 64) -> tuple[tuple[Packet, ...], tuple[bytes, ...]]:  # fmt: skip
    """The HASHPAGE packets committing to ``payloads`` (88 commitments a page: P hash pages,
    then Q index pages of 88 page commitments each when the MANIFEST, signed with ``sig_len``-byte
    signatures, cannot hold P hashes), and the hashes the MANIFEST carries."""
    pages = page_count_for(len(payloads))
    top = top_count(pages, sig_len)
    count = pages if top == pages else pages + top
    leaves = _pages_of(update_id, db_version, [commitment(s) for s in payloads], 0, count)
    page_hashes = [commitment(p.payload) for p in leaves]
    if top == pages:
        return tuple(leaves), tuple(page_hashes)
    index = _pages_of(update_id, db_version, page_hashes, pages, count)
    return (*leaves, *index), tuple(commitment(p.payload) for p in index)


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
) -> EncodedUpdate:
    """RaptorQ-encode the bundle's body block by block, hash its symbols into pages, sign the
    manifest. ``symbol_count``: N (rounded up to whole blocks; default 2 K_b + 1 a block).

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
    payloads = encode_symbols(body, signed.symbol_size, signed.symbol_count, signed.block_source)
    pages, top = hash_pages(uid, dbv, payloads, len(signed.bundle_signature))
    for number, page_hash in enumerate(top):
        if page_hash != signed.page_hashes[number]:
            kind = "index page" if signed.index_pages else "hash page"
            raise ConfigError(
                f"{source}: {kind} {number} differs from this bundle's symbols re-encoded at "
                f"T = {signed.symbol_size}, N = {signed.symbol_count}, K_b = "
                f"{signed.block_source}; nothing sent"
            )
    symbols = _symbol_packets(uid, dbv, payloads)
    return EncodedUpdate(manifest.datagram, tuple(p.raw for p in pages), symbols,
                         signed.source_symbols)  # fmt: skip


def page_plan(pages: int, index_pages: int) -> list[list[int]]:
    """For each run of 88 symbols (the symbols of hash page b), the HASHPAGEs sent ahead of it:
    every page ``PAGE_COPIES`` times, one copy at the start of each of the ``PAGE_COPIES - 1``
    runs before the one that needs it and one right before it (the first run takes the copies
    that would come before it). Hash page b is needed by run b; index page j (HASHPAGE P + j) by
    run 88j, its first page's; an index page goes before the pages it vouches for."""
    needed = [(page, page) for page in range(pages)]
    needed += [(pages + j, j * HASHES_PER_PAGE) for j in range(index_pages)]
    plan: list[list[tuple[int, int, int]]] = [[] for _ in range(max(pages, 1))]
    for page, run in needed:
        for ahead in range(PAGE_COPIES):
            plan[max(run - ahead, 0)].append((-ahead, page < pages, page))
    return [[page for _, _, page in sorted(run)] for run in plan]


def carousel(update: EncodedUpdate, *, rounds: int | None = 1) -> Iterator[bytes]:
    """The packets of ``rounds`` rounds (forever if None), in carousel order.

    A round: the MANIFEST ``MANIFEST_BURST`` times, then every symbol in index order (source
    first, then repair; the blocks interleaved), 88 at a time with their hash page sent ahead
    (``page_plan``: a symbol is only accepted once its page is, and a page once its index page
    is). The MANIFEST repeats every ``MANIFEST_EVERY`` packets, for late joiners and so that
    under a flood of forged manifests a genuine copy is often among the candidates a receiver
    draws from (``docs/PROTOCOL.md``, "Verification budget").
    """
    manifest = parse_packet(update.manifest)
    signed = Manifest.from_payload(manifest.header, manifest.payload)
    plan = page_plan(signed.page_count, signed.index_pages)
    done = 0
    while rounds is None or done < rounds:
        done += 1
        since_manifest = 0
        yield from [update.manifest] * MANIFEST_BURST
        for run, ahead in enumerate(plan):
            start = run * HASHES_PER_PAGE
            stream = [update.pages[p] for p in ahead]
            stream += update.symbols[start : start + HASHES_PER_PAGE]
            for packet in stream:
                if since_manifest == MANIFEST_EVERY:
                    yield update.manifest
                    since_manifest = 0
                yield packet
                since_manifest += 1
