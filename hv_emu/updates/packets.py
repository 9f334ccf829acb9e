"""The network update packets: one common header, then a MANIFEST, a HASHPAGE or a SYMBOL.

Models: the UDP payloads a publisher sends to the hypervisor's update port. A MANIFEST carries the
signed 80-byte bundle header and its detached signature unchanged (so the VMCALL path's
verification decides, ``verify.py``), the FEC parameters, the commitments of the page stream, a
second signature by the same key over all of it (the *manifest signature*: the bundle signature
covers only the bundle header, so it cannot vouch for the page hashes), and an unsigned 8-byte
*work stamp* that makes the datagram's SHA-256 start with ``WORK_BITS`` zero bits (``has_work``),
so each forged MANIFEST costs its maker 2^18 hashes and the receiver one comparison. The
commitments (``commitment``: SHA-256 truncated to 16 bytes) of the symbols fill P hash pages of
``HASHES_PER_PAGE``; those P pages are the source symbols of a small RaptorQ object, the *page
stream*, sent as M = 2P + 1 page symbols (HASHPAGEs), any P or so of which give every page. A
SYMBOL is one RaptorQ encoding packet (4-byte FEC Payload ID + ``symbol_size`` bytes).

Follows: ``docs/PROTOCOL.md`` (the source of truth;
``tests/docs/test_updates_protocol_doc.py`` checks
its tables against ``HEADER_FIELDS`` and ``MANIFEST_FIELDS``; its "Common header" and payload
sections are this layout), RFC 6330 (RaptorQ, FEC Encoding ID 6).

A body larger than one block is cut into Z source blocks of K_b symbols (the last one shorter),
each its own RaptorQ object with N_b = N / Z symbols; symbol i is symbol i // Z of block i % Z
(blocks interleaved, so all of them progress together). When the commitments of the M page
symbols do not fit in one MANIFEST (``max_pages``), the MANIFEST commits instead to
Q = ceil(M / 88) *index pages* (HASHPAGEs M ... M + Q - 1), each holding the commitments of 88
page symbols: a tree of depth two (``top_count``).

Leaves out: the group-MAC trailer (a flag bit in the design; every flag bit must be 0 here),
HEARTBEAT and NACK packets, a third level of page hashes: 75 index pages of 88 page symbols
(3,299 hash pages, 290,312 symbols, 400 MB at T = 1400) is the most one manifest commits to.

Network controls: every byte. ``parse_packet`` and ``Manifest.from_payload`` check every length
before they slice and raise only ``PacketError`` subclasses (``GuestFault``) whose ``reason`` is
the receiver's drop counter; nothing is allocated beyond a copy of the datagram itself.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from hv_emu.errors import UpdateRejected
from hv_emu.updates.format import HEADER_SIZE, BundleHeader, signature_length
from hv_emu.updates.packet_errors import (
    BadFlags,
    BadMagic,
    BadManifest,
    BadReserved,
    BadType,
    BadVersion,
    IndexOutOfRange,
    LengthMismatch,
    Oversize,
    Truncated,
)

#: The first four bytes of every packet.
MAGIC = b"HVDB"
#: The only protocol version; there is no negotiation (the manifest signature covers it).
#: Version 2 (this one): hash pages sent as a RaptorQ-coded page stream, and a work stamp on the
#: MANIFEST (``docs/PROTOCOL.md``, "Overhead at 30 % loss"); version 1 packets are refused.
PROTO_VERSION = 2
#: Largest UDP payload in one unfragmented IPv4 datagram on a 1500-byte MTU (1500 - 20 - 8).
MAX_DATAGRAM = 1472
#: Commitments in one full HASHPAGE (88 * 16 = 1408 bytes of payload).
HASHES_PER_PAGE = 88
#: Bytes of a commitment: SHA-256 truncated to 128 bits (``commitment``), the hash of every
#: symbol and page. A forged packet must be a second preimage of the one value its index names
#: (2^128 work; 2^128 / N against any of N); the body itself is checked against the full
#: SHA-256 the signed bundle header carries, so a success could only spoil one update (a denial
#: of service an on-path attacker has anyway), never install anything.
HASH_SIZE = 16
#: RaptorQ (RFC 6330) FEC Encoding ID; the only FEC scheme.
FEC_RAPTORQ = 6
#: ``hash_alg`` 2: SHA-256 truncated to 16 bytes, the only one (1, full SHA-256, is retired).
HASH_SHA256_128 = 2
#: Bytes of the RaptorQ FEC Payload ID (SBN u8, ESI u24) that opens every SYMBOL payload.
FEC_PAYLOAD_ID_SIZE = 4
#: Prefixed to what the manifest signature covers, so no other signed message passes as one.
MANIFEST_DOMAIN = b"hv-emu manifest v2\x00"
#: Bytes of the work stamp that ends a MANIFEST, after the manifest signature (not signed: anyone
#: holding the signed manifest may stamp it).
WORK_SIZE = 8
#: Leading zero bits the SHA-256 of a whole MANIFEST datagram must have (``has_work``): 2^18
#: SHA-256 evaluations, 0.1 s of Python, to stamp a manifest once; the same for every forgery,
#: which each must be new (a failed one is remembered), while the receiver checks it with the
#: one hash it computes anyway (``docs/PROTOCOL.md``, "Verification budget").
WORK_BITS = 18
#: Bytes of a page symbol: one full hash page of commitments (``HASHES_PER_PAGE`` x ``HASH_SIZE``).
PAGE_SYMBOL_SIZE = 1408

#: The common header, field by field: (name, struct code, rule). Big-endian.
HEADER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("magic", "4s", 'b"HVDB"'),
    ("proto_version", "B", "2"),
    ("type", "B", "1 MANIFEST, 2 HASHPAGE, 3 SYMBOL"),
    ("flags", "H", "0 (no flag is defined)"),
    ("update_id", "I", "chosen at random per update; session key with db_version"),
    ("db_version", "Q", "the bundle's db_version; <= installed is stale"),
    ("index", "I", "0 for MANIFEST, page number, or symbol number; < count"),
    ("count", "I", "1 for MANIFEST, M (M + Q with index pages) for HASHPAGE, or symbol_count"),
    ("payload_len", "H", "bytes after this header; exactly the rest of the datagram"),
    ("reserved", "H", "0"),
)
_HEADER = struct.Struct(">" + "".join(code for _, code, _ in HEADER_FIELDS))
HEADER_LEN = _HEADER.size
#: The largest payload one datagram carries.
MAX_PAYLOAD = MAX_DATAGRAM - HEADER_LEN

#: The FEC parameters that follow the bundle header in a MANIFEST payload.
MANIFEST_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("fec_scheme", "B", "6: RaptorQ (RFC 6330)"),
    ("hash_alg", "B", "2: SHA-256 truncated to 16 bytes"),
    ("page_count", "H", "P = ceil(symbol_count / 88): source symbols of the page stream"),
    ("symbol_size", "I", "T: bytes of symbol data after the FEC Payload ID; a multiple of 8"),
    ("symbol_count", "I", "N: symbols committed to (source + repair), Z x N_b"),
    ("block_source", "H", "K_b: source symbols of each block but the last, 1 to 4096"),
    ("block_count", "H", "Z = ceil(K / K_b) source blocks, 1 to 256"),
)
_FEC = struct.Struct(">" + "".join(code for _, code, _ in MANIFEST_FIELDS))
#: RaptorQ symbols are a whole number of Al-byte units (RFC 6330 4.3; the ``raptorq`` package
#: uses Al = 8, and would silently round any other T, so the decoder would not match).
SYMBOL_ALIGNMENT = 8
#: The largest T a SYMBOL packet can carry (1432).
MAX_SYMBOL_SIZE = (MAX_PAYLOAD - FEC_PAYLOAD_ID_SIZE) // SYMBOL_ALIGNMENT * SYMBOL_ALIGNMENT
#: Most source symbols in one block: 4096 x 1432 bytes = 5.9 MB, so that the ``raptorq``
#: package's ``with_defaults`` keeps a block in one RFC 6330 source block (its decoder working
#: memory is 10 MB), and a block decodes in tens of milliseconds.
MAX_BLOCK_SOURCE = 4096
#: Most blocks: the source block number of the FEC Payload ID is one byte.
MAX_BLOCKS = 256


class PacketType(IntEnum):
    MANIFEST = 1
    HASHPAGE = 2
    SYMBOL = 3


#: The type bytes known, by value (a set lookup: this check runs on every datagram).
_TYPES = {t.value: t for t in PacketType}


@dataclass(frozen=True)
class PacketHeader:
    type: PacketType
    update_id: int
    db_version: int
    index: int
    count: int
    payload_len: int

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            MAGIC, PROTO_VERSION, self.type, 0, self.update_id, self.db_version,
            self.index, self.count, self.payload_len, 0,
        )  # fmt: skip


@dataclass(frozen=True)
class Packet:
    """A datagram that passed every stateless check; ``raw`` is the whole datagram."""

    header: PacketHeader
    payload: bytes
    raw: bytes

    @classmethod
    def build(
        cls, type: PacketType, update_id: int, db_version: int, index: int, count: int,
        payload: bytes,
    ) -> Packet:  # fmt: skip
        header = PacketHeader(type, update_id, db_version, index, count, len(payload))
        return cls(header, payload, header.to_bytes() + payload)


def parse_packet(datagram: bytes) -> Packet:
    """The common header checks of ``docs/PROTOCOL.md``, in its order; ``PacketError`` on any."""
    if len(datagram) < HEADER_LEN:
        raise Truncated("length", f">= {HEADER_LEN}", str(len(datagram)))
    if len(datagram) > MAX_DATAGRAM:
        raise Oversize("length", f"<= {MAX_DATAGRAM}", str(len(datagram)))
    raw = bytes(datagram)  # one copy: the checks below and the caller see the same bytes
    magic, version, ptype, flags, uid, dbv, index, count, plen, reserved = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise BadMagic("magic", repr(MAGIC), repr(magic))
    if version != PROTO_VERSION:
        raise BadVersion("proto_version", str(PROTO_VERSION), str(version))
    if ptype not in _TYPES:
        raise BadType("type", "1, 2 or 3", str(ptype))
    if flags != 0:
        raise BadFlags("flags", "0", f"{flags:#06x}")
    if reserved != 0:
        raise BadReserved("reserved", "0", f"{reserved:#06x}")
    if HEADER_LEN + plen != len(raw):
        raise LengthMismatch("payload_len", str(len(raw) - HEADER_LEN), str(plen))
    if index >= count:
        raise IndexOutOfRange("index", f"< count {count}", str(index))
    header = PacketHeader(_TYPES[ptype], uid, dbv, index, count, plen)
    return Packet(header, raw[HEADER_LEN:], raw)


def page_count_for(symbol_count: int) -> int:
    """P = ceil(N / 88): hash pages needed to commit to ``symbol_count`` symbols."""
    return -(-symbol_count // HASHES_PER_PAGE)


def page_entries(page: int, symbol_count: int) -> int:
    """How many hashes page ``page`` holds (88, except a shorter last page)."""
    return min(HASHES_PER_PAGE, symbol_count - page * HASHES_PER_PAGE)


def max_pages(sig_len: int) -> int:
    """Most page hashes one MANIFEST can carry with signatures of ``sig_len`` bytes.

    Ed25519 (64-byte signatures): 76 pages = 6,688 symbols = 9.4 MB of symbols at T = 1400;
    beyond that, 76 index pages of 88 pages each (``top_count``).
    """
    return (MAX_PAYLOAD - HEADER_SIZE - _FEC.size - 2 * sig_len - WORK_SIZE) // HASH_SIZE


def page_symbols_for(page_count: int) -> int:
    """M = 2P + 1: the page symbols (HASHPAGEs 0 ... M - 1) of a page stream of P source symbols:
    the P hash pages themselves, then P + 1 RaptorQ repair symbols of them."""
    return 2 * page_count + 1


def top_count(page_count: int, sig_len: int) -> int:
    """Hashes the MANIFEST carries for P = ``page_count`` hash pages: the commitments of the M
    page symbols when they fit, else of the ceil(M / 88) index pages (which must fit)."""
    m = page_symbols_for(page_count)
    return m if m <= max_pages(sig_len) else page_count_for(m)


def has_work(fingerprint: bytes) -> bool:
    """True when a MANIFEST's SHA-256 (``digest`` of the whole datagram) starts with
    ``WORK_BITS`` zero bits."""
    return int.from_bytes(fingerprint[:4], "big") >> (32 - WORK_BITS) == 0


def work_of(fingerprint: bytes) -> int:
    """The work a MANIFEST's stamp carries: the leading zero bits of its SHA-256 (``digest`` of
    the whole datagram), counted up to 64. Candidates with more are checked first
    (``admission.CandidatePool``; ``docs/PROTOCOL.md``, "Verification budget")."""
    return 64 - int.from_bytes(fingerprint[:8], "big").bit_length()


#: Work more than this many bits above ``WORK_BITS`` ranks no higher in the candidate pool; it is
#: also the publisher's default margin (``guest-tool``'s ``PUBLISHER_WORK_BITS`` is defined as
#: ``WORK_BITS + RANK_MARGIN`` = 24). Without the cap, a flood of F forgeries a second stamped at
#: the minimum holds, by luck, F x 2^-6 with more work than a genuine manifest stamped at exactly
#: 24 bits, enough to keep the verifier busy ahead of it for ever; with it they only tie, and
#: while F x 2^-6 stays below the verifier's rate every tie is checked as it arrives, so the
#: genuine one is checked at once (``docs/PROTOCOL.md``, "Work against work"; a margin of 4 let
#: F = 100,000/s tie 6,250 a second against 2,500 checks: ``docs/PERFORMANCE.md``, issue 11).
RANK_MARGIN = 6


def rank_of(fingerprint: bytes) -> int:
    """The work a MANIFEST ranks with in the candidate pool: ``work_of``, capped at
    ``WORK_BITS + RANK_MARGIN``."""
    return min(work_of(fingerprint), WORK_BITS + RANK_MARGIN)


def block_of(index: int, block_count: int) -> tuple[int, int]:
    """(source block number, ESI) of symbol ``index``: blocks are interleaved."""
    return index % block_count, index // block_count


@dataclass(frozen=True)
class Manifest:
    """A decoded MANIFEST payload (its signatures are not yet checked: ``receiver.py`` does)."""

    bundle_header: bytes
    header: BundleHeader
    bundle_signature: bytes
    symbol_size: int
    symbol_count: int
    #: P = ceil(N / 88): the hash pages of the symbols (index pages not counted).
    page_count: int
    block_source: int
    block_count: int
    #: The hashes the MANIFEST carries: of the M page symbols, or of the Q index pages
    #: (``top_count``).
    page_hashes: tuple[bytes, ...]
    manifest_signature: bytes
    #: The work stamp (``WORK_SIZE`` bytes after the manifest signature; not signed).
    work: bytes = bytes(WORK_SIZE)

    @property
    def page_symbols(self) -> int:
        """M: page symbols (``page_symbols_for``)."""
        return page_symbols_for(self.page_count)

    @property
    def index_pages(self) -> int:
        """Q: index pages (0 when the MANIFEST carries every page symbol's commitment itself)."""
        return 0 if len(self.page_hashes) == self.page_symbols else len(self.page_hashes)

    @property
    def hashpage_count(self) -> int:
        """The ``count`` of every HASHPAGE: M, or M + Q."""
        return self.page_symbols + self.index_pages

    @property
    def block_symbols(self) -> int:
        """N_b: symbols committed per block."""
        return self.symbol_count // self.block_count

    def block_length(self, block: int) -> int:
        """Bytes of body in ``block`` (every block holds K_b x T but the last)."""
        size = self.block_source * self.symbol_size
        return min(size, self.header.body_len - block * size)

    @property
    def source_symbols(self) -> int:
        """K = ceil(body_len / T): the fewest symbols that can decode the body."""
        return -(-self.header.body_len // self.symbol_size)

    @classmethod
    def from_payload(cls, packet_header: PacketHeader, payload: bytes) -> Manifest:
        """Decode and cross-check a MANIFEST payload; ``BadManifest`` (or ``LengthMismatch``)."""
        if packet_header.index != 0 or packet_header.count != 1:
            raise BadManifest("index/count", "0/1", f"{packet_header.index}/{packet_header.count}")
        if len(payload) < HEADER_SIZE + _FEC.size:
            raise BadManifest("length", f">= {HEADER_SIZE + _FEC.size}", str(len(payload)))
        try:
            header = BundleHeader.from_bytes(payload)
            sig_len = signature_length(header.sig_alg)
        except UpdateRejected as bad:
            raise BadManifest("bundle_header", "a valid bundle header", bad.reason) from None
        fec, hash_alg, pages, size, count, k_b, z = _FEC.unpack_from(payload, HEADER_SIZE)
        if fec != FEC_RAPTORQ:
            raise BadManifest("fec_scheme", str(FEC_RAPTORQ), str(fec))
        if hash_alg != HASH_SHA256_128:
            raise BadManifest("hash_alg", str(HASH_SHA256_128), str(hash_alg))
        if header.db_version != packet_header.db_version:
            raise BadManifest("db_version", str(packet_header.db_version), str(header.db_version))
        if not 0 < size <= MAX_SYMBOL_SIZE or size % SYMBOL_ALIGNMENT:
            raise BadManifest("symbol_size", f"a multiple of 8 up to {MAX_SYMBOL_SIZE}", str(size))
        if header.body_len == 0:
            raise BadManifest("body_len", ">= 1", "0")
        k = -(-header.body_len // size)
        if not 0 < k_b <= MAX_BLOCK_SOURCE:
            raise BadManifest("block_source", f"1 to {MAX_BLOCK_SOURCE}", str(k_b))
        if z != -(-k // k_b) or z > MAX_BLOCKS:
            raise BadManifest("block_count", f"ceil({k} / {k_b}) <= {MAX_BLOCKS}", str(z))
        if count % z or count // z < k_b:
            raise BadManifest("symbol_count", f"a multiple of {z}, >= {z * k_b}", str(count))
        top = top_count(pages, sig_len)
        if pages != page_count_for(count) or top > max_pages(sig_len):
            raise BadManifest("page_count", f"ceil({count} / {HASHES_PER_PAGE})", str(pages))
        expected = HEADER_SIZE + _FEC.size + sig_len + HASH_SIZE * top + sig_len + WORK_SIZE
        if len(payload) != expected:
            raise LengthMismatch("manifest length", str(expected), str(len(payload)))
        at = HEADER_SIZE + _FEC.size
        bundle_sig = payload[at : at + sig_len]
        at += sig_len
        hashes = tuple(payload[at + i * HASH_SIZE : at + (i + 1) * HASH_SIZE] for i in range(top))
        # fmt: off
        return cls(payload[:HEADER_SIZE], header, bundle_sig, size, count, pages, k_b, z, hashes,
                   payload[expected - WORK_SIZE - sig_len : expected - WORK_SIZE],
                   payload[expected - WORK_SIZE :])
        # fmt: on

    def fec_bytes(self) -> bytes:
        return _FEC.pack(
            FEC_RAPTORQ, HASH_SHA256_128, self.page_count, self.symbol_size, self.symbol_count,
            self.block_source, self.block_count,
        )  # fmt: skip

    def signed_part(self) -> bytes:
        """The payload up to (not including) the manifest signature."""
        return (
            self.bundle_header + self.fec_bytes() + self.bundle_signature
            + b"".join(self.page_hashes)
        )  # fmt: skip

    def to_payload(self) -> bytes:
        return self.signed_part() + self.manifest_signature + self.work


def manifest_message(packet_header: PacketHeader, signed_part: bytes) -> bytes:
    """What the manifest signature covers: ``MANIFEST_DOMAIN || packet header || signed part``."""
    return MANIFEST_DOMAIN + packet_header.to_bytes() + signed_part


def digest(data: bytes) -> bytes:
    """SHA-256 (the receiver's fingerprint of a whole datagram)."""
    return hashlib.sha256(data).digest()


def commitment(data: bytes) -> bytes:
    """The commitment to a symbol or page payload: SHA-256 truncated to ``HASH_SIZE`` bytes."""
    return hashlib.sha256(data).digest()[:HASH_SIZE]
