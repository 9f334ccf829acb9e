"""One update being received: a verified manifest, the hash pages and symbols accepted for it.

Models: the reassembly half of the receiver (``docs/PROTOCOL.md``, "Check order" steps 24-30
and "Completion"). A ``Session`` exists only for a manifest whose signatures verified
(``receiver.py`` opens it); it accepts a HASHPAGE or a SYMBOL only after the packet's own
commitment (SHA-256 truncated to 128 bits) matched the verified one, so a forged one is dropped
alone and nothing unauthenticated reaches the RaptorQ decoder. ``take_page`` and ``take_symbol``
answer with the counter the packet counts under (and the decoded body once there is one); the
receiver keeps the counters.

Follows: ``docs/PROTOCOL.md`` ("HASHPAGE and SYMBOL payloads", "Check order", "Completion"),
RFC 6330 through the ``raptorq`` package.

A body of several source blocks (``packets.py``) has a decoder per block, made when the block's
first symbol arrives and dropped once it decoded (its bytes are kept instead); a block takes at
most K_b + ``BLOCK_SLACK`` symbols, so a session holds about its body's size whatever was
committed (``held_symbols``). The P hash pages arrive as a page stream (``packets.py``): M page
symbols, each checked against the manifest's commitment of it (or, for a body whose page stream
needs a second level, against its index page, itself checked against the manifest); a page
symbol below P *is* hash page p and is used at once, and any P or so of them decode every page
(a RaptorQ object of P symbols of 1,408 bytes, its decoder taking at most P + ``BLOCK_SLACK``).

Leaves out: buffering a symbol whose hash page (or a page symbol whose index page) has not
arrived (``no_page_yet``: the carousel sends it again).

Network controls: every byte of the pages and symbols, their order and repetition. It cannot make
a session hold more than ``held_symbols`` of its manifest plus its pages (pages and symbols are
stored once each, only when authenticated), nor feed a block's decoder a symbol the manifest did
not commit to for that block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import raptorq

from hv_emu.updates.packets import (
    FEC_PAYLOAD_ID_SIZE,
    HASH_SIZE,
    HASHES_PER_PAGE,
    MAX_DATAGRAM,
    PAGE_SYMBOL_SIZE,
    Manifest,
    Packet,
    block_of,
    commitment,
    page_count_for,
    page_entries,
    page_symbols_for,
)

#: Symbols a block's decoder takes beyond its K_b source symbols before the block is given up
#: (``decode_failed``): RFC 6330 decodes from K + 2 symbols but about once in a million, from
#: K + 8 practically always, so a block never holds more than K_b + 8 symbols.
BLOCK_SLACK = 8
#: A check of the frame that carried a packet (its UDP checksum), asked just before the packet is
#: stored: the receiver's raw front path defers it past every cheaper refusal.
Intact = Callable[[], bool]
#: What ``take_page`` and ``take_symbol_at`` answer when their ``intact`` check failed: the
#: frame's UDP checksum, checked last (the receiver hands it back to the switch to count).
CORRUPT = "corrupt"
#: Bytes one stored hash page holds (a full page of 88 commitments).
PAGE_BYTES = HASHES_PER_PAGE * HASH_SIZE


def page_bound(max_symbols: int) -> int:
    """Bytes of hash pages, index pages and the page stream's decoder one session may hold."""
    pages = page_count_for(max_symbols)
    index = page_count_for(page_symbols_for(pages))
    decoder = (pages + BLOCK_SLACK) * (FEC_PAYLOAD_ID_SIZE + PAGE_SYMBOL_SIZE)
    return (pages + index) * PAGE_BYTES + decoder + page_symbols_for(pages) // 8 + 1


def held_symbols(manifest: Manifest) -> int:
    """The most bytes of symbols and decoded blocks a session of ``manifest`` ever holds: each
    block holds at most min(N_b, K_b + ``BLOCK_SLACK``) symbols until it decodes, then its
    bytes (fewer)."""
    m = manifest
    last = -(-m.block_length(m.block_count - 1) // m.symbol_size)
    symbols = ((m.block_count - 1) * min(m.block_symbols, m.block_source + BLOCK_SLACK)
               + min(m.block_symbols, last + BLOCK_SLACK))  # fmt: skip
    return symbols * (FEC_PAYLOAD_ID_SIZE + m.symbol_size)


def session_bound(max_symbols: int, symbol_memory: int) -> int:
    """Bytes one session may hold when its manifest commits to at most ``max_symbols`` and its
    ``held_symbols`` is at most ``symbol_memory``: manifest, pages, bitmap, symbols and blocks."""
    return MAX_DATAGRAM + page_bound(max_symbols) + max_symbols // 8 + 1 + symbol_memory


@dataclass
class Block:
    """One source block: its decoder until it decoded, then its bytes."""

    length: int
    source: int
    cap: int
    decoder: raptorq.Decoder | None = None
    held: int = 0
    data: bytes | None = None


@dataclass
class Session:
    """A verified manifest and what has arrived for it so far."""

    manifest: Manifest
    #: SHA-256 of the manifest packet: remembered as bad if its object does not decode right.
    manifest_digest: bytes
    #: Hash pages 0 ... P-1 as they arrive (page symbols below P) or decode.
    pages: list[bytes | None]
    #: Index pages 0 ... Q-1 (HASHPAGEs M ... M+Q-1), as they are accepted.
    index: list[bytes | None]
    have: bytearray
    #: Page symbols and index pages accepted (bit j for HASHPAGE j).
    have_pages: bytearray
    #: The page stream's decoder until every page is known; page symbols it took.
    page_decoder: raptorq.Decoder | None = None
    page_held: int = 0
    missing_pages: int = 0
    blocks: list[Block] = field(default_factory=list)
    symbols: int = 0
    stored_pages: int = 0
    #: The decoded body, once every block decoded.
    body: bytes | None = None
    #: A block took all the symbols it may and did not decode.
    exhausted: bool = False
    #: Blocks decoded so far.
    decoded: int = 0

    @classmethod
    def open(cls, manifest: Manifest, manifest_digest: bytes) -> Session:
        m = manifest
        session = cls(m, manifest_digest, [None] * m.page_count, [None] * m.index_pages,
                      bytearray(m.symbol_count // 8 + 1), bytearray(m.hashpage_count // 8 + 1),
                      missing_pages=m.page_count)  # fmt: skip
        for b in range(manifest.block_count):
            length = manifest.block_length(b)
            k = -(-length // manifest.symbol_size)
            session.blocks.append(Block(length, k, min(manifest.block_symbols, k + BLOCK_SLACK)))
        return session

    @property
    def db_version(self) -> int:
        return self.manifest.header.db_version

    def memory(self) -> int:
        per_symbol = FEC_PAYLOAD_ID_SIZE + self.manifest.symbol_size
        data = sum(len(b.data) if b.data is not None else b.held * per_symbol
                   for b in self.blocks)  # fmt: skip
        decoder = self.page_held * (FEC_PAYLOAD_ID_SIZE + PAGE_SYMBOL_SIZE)
        return (MAX_DATAGRAM + self.stored_pages * PAGE_BYTES + len(self.have)
                + len(self.have_pages) + decoder + data)  # fmt: skip

    def _page_hash(self, index: int) -> bytes | None:
        """The commitment of HASHPAGE ``index``, or None while its index page is missing."""
        m = self.manifest
        if m.index_pages == 0:
            return m.page_hashes[index]
        if index >= m.page_symbols:
            return m.page_hashes[index - m.page_symbols]
        parent = self.index[index // HASHES_PER_PAGE]
        if parent is None:
            return None
        at = (index % HASHES_PER_PAGE) * HASH_SIZE
        return parent[at : at + HASH_SIZE]

    def take_page(self, packet: Packet, intact: Intact | None = None) -> str:
        """Accept a HASHPAGE (a page symbol or an index page) or say why not: the counter it
        counts under (``CORRUPT`` when ``intact``, asked last, says the frame that carried it
        was damaged)."""
        index, m = packet.header.index, self.manifest
        symbol = index < m.page_symbols
        if packet.header.count != m.hashpage_count:
            return "count_mismatch"
        if self.have_pages[index // 8] & (1 << (index % 8)) or (symbol and not self.missing_pages):
            return "duplicate"  # every page is known already: nothing a page symbol could add
        expected = self._page_hash(index)
        if expected is None:
            return "no_page_yet"  # its index page first: not buffered
        size = (PAGE_SYMBOL_SIZE if symbol
                else HASH_SIZE * page_entries(index - m.page_symbols, m.page_symbols))  # fmt: skip
        if len(packet.payload) != size:
            return "bad_len"
        if commitment(packet.payload) != expected:
            return "hash_mismatch"  # forged or corrupted: dropped alone
        if intact is not None and not intact():
            return CORRUPT
        self.have_pages[index // 8] |= 1 << (index % 8)
        if not symbol:
            self.index[index - m.page_symbols] = packet.payload
            self.stored_pages += 1
        else:
            self._page_symbol(index, packet.payload)
        return "page_accepted"

    def _page_symbol(self, index: int, payload: bytes) -> None:
        """An authenticated page symbol: hash page ``index`` itself if below P, and one more
        symbol for the page stream's decoder (at most P + ``BLOCK_SLACK`` of them)."""
        pages = self.manifest.page_count
        if index < pages and self.pages[index] is None:
            self._set_page(index, payload)
        if not self.missing_pages or self.page_held >= pages + BLOCK_SLACK:
            return
        if self.page_decoder is None:
            self.page_decoder = raptorq.Decoder.with_defaults(pages * PAGE_SYMBOL_SIZE,
                                                              PAGE_SYMBOL_SIZE)  # fmt: skip
        self.page_held += 1
        # The page stream is one RaptorQ source block: SBN 0, ESI = the page symbol's index.
        decoded = self.page_decoder.decode(index.to_bytes(FEC_PAYLOAD_ID_SIZE, "big") + payload)
        if decoded is not None:
            stream = bytes(decoded)
            for p in range(pages):
                if self.pages[p] is None:
                    self._set_page(p, stream[p * PAGE_SYMBOL_SIZE : (p + 1) * PAGE_SYMBOL_SIZE])
        if not self.missing_pages:
            self.page_decoder, self.page_held = None, 0

    def _set_page(self, page: int, data: bytes) -> None:
        self.pages[page] = data
        self.stored_pages += 1
        self.missing_pages -= 1

    def take_symbol(self, packet: Packet) -> str:
        """Accept a SYMBOL or say why not: the counter it counts under. After an accepted one,
        ``body`` is the body once every block decoded, and ``exhausted`` says whether a block
        never will."""
        return self.take_symbol_at(packet.header.index, packet.header.count, packet.payload)

    def take_symbol_at(self, index: int, count: int, payload: bytes,
                       intact: Intact | None = None) -> str:  # fmt: skip
        """``take_symbol`` from the header's index and count and the payload (the receiver's raw
        front path builds no ``Packet``); ``intact`` as for ``take_page``."""
        m = self.manifest
        if count != m.symbol_count:
            return "count_mismatch"
        if self.have[index // 8] & (1 << (index % 8)):
            return "duplicate"
        page = self.pages[index // HASHES_PER_PAGE]
        if page is None:
            return "no_page_yet"  # not buffered: the carousel sends it again
        if len(payload) != FEC_PAYLOAD_ID_SIZE + m.symbol_size:
            return "bad_len"
        number, esi = block_of(index, m.block_count)
        if payload[:FEC_PAYLOAD_ID_SIZE] != ((number << 24) | esi).to_bytes(4, "big"):
            # The FEC Payload ID (SBN, ESI) must be the one the index names: each block has its
            # own decoder, which must never see another block's symbol (``raptorq`` panics).
            return "bad_fec_id"
        at = (index % HASHES_PER_PAGE) * HASH_SIZE
        if commitment(payload) != page[at : at + HASH_SIZE]:
            return "hash_mismatch"  # forged or corrupted: dropped alone
        block = self.blocks[number]
        if block.data is not None or block.held >= block.cap:
            return "block_done"  # decoded already (or given up): not needed
        if intact is not None and not intact():
            return CORRUPT
        self.have[index // 8] |= 1 << (index % 8)
        self.symbols += 1
        self._decode(block, payload)
        return "symbol_accepted"

    def _decode(self, block: Block, payload: bytes) -> None:
        if block.decoder is None:
            block.decoder = raptorq.Decoder.with_defaults(block.length, self.manifest.symbol_size)
        block.held += 1
        # Each block is its own one-block RaptorQ object: its decoder sees source block 0.
        decoded = block.decoder.decode(b"\x00" + payload[1:])
        if decoded is not None:
            block.data, block.decoder = bytes(decoded), None
            self.decoded += 1
            if self.decoded == len(self.blocks):
                self.body = b"".join(b.data or b"" for b in self.blocks)
        elif block.held >= block.cap:
            self.exhausted = True
