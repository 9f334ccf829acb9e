"""One update being received: a verified manifest, the hash pages and symbols accepted for it.

Models: the reassembly half of the receiver (``docs/PROTOCOL.md``, "Check order" steps 23-28
and "Completion"). A ``Session`` exists only for a manifest whose signatures verified
(``receiver.py`` opens it); it accepts a HASHPAGE or a SYMBOL only after the packet's own SHA-256
matched the verified commitment, so a forged one is dropped alone and nothing unauthenticated
reaches the RaptorQ decoder. ``take_page`` and ``take_symbol`` answer with the counter the packet
counts under (and the decoded body once there is one); the receiver keeps the counters.

Follows: ``docs/PROTOCOL.md`` ("HASHPAGE and SYMBOL payloads", "Check order", "Completion"),
RFC 6330 through the ``raptorq`` package.

Leaves out: buffering a symbol whose hash page has not arrived (``no_page_yet``: the carousel
sends it again).

Network controls: every byte of the pages and symbols, their order and repetition. It cannot make
a session hold more than ``memory()`` says (pages and symbols are stored once each, only when
authenticated), nor feed the decoder a symbol the manifest did not commit to.
"""

from __future__ import annotations

from dataclasses import dataclass

import raptorq

from hv_emu.updates.packets import (
    FEC_PAYLOAD_ID_SIZE,
    HASH_SIZE,
    HASHES_PER_PAGE,
    MAX_DATAGRAM,
    MAX_SYMBOL_SIZE,
    Manifest,
    Packet,
    digest,
    page_count_for,
    page_entries,
)


def session_bound(max_symbols: int) -> int:
    """Bytes one session may hold when its manifest commits to at most ``max_symbols``:
    manifest, pages, bitmap and the decoder's symbols."""
    pages = page_count_for(max_symbols)
    return (
        MAX_DATAGRAM + pages * HASHES_PER_PAGE * HASH_SIZE + max_symbols // 8 + 1
        + max_symbols * (FEC_PAYLOAD_ID_SIZE + MAX_SYMBOL_SIZE)
    )  # fmt: skip


@dataclass
class Session:
    """A verified manifest and what has arrived for it so far."""

    manifest: Manifest
    #: SHA-256 of the manifest packet: remembered as bad if its object does not decode right.
    manifest_digest: bytes
    decoder: raptorq.Decoder
    pages: list[bytes | None]
    have: bytearray
    symbols: int = 0
    stored_pages: int = 0
    #: The decoded body, once there is one.
    body: bytes | None = None

    @classmethod
    def open(cls, manifest: Manifest, manifest_digest: bytes) -> Session:
        decoder = raptorq.Decoder.with_defaults(manifest.header.body_len, manifest.symbol_size)
        return cls(manifest, manifest_digest, decoder, [None] * manifest.page_count,
                   bytearray(manifest.symbol_count // 8 + 1))  # fmt: skip

    @property
    def db_version(self) -> int:
        return self.manifest.header.db_version

    def memory(self) -> int:
        m = self.manifest
        return (
            MAX_DATAGRAM + self.stored_pages * HASHES_PER_PAGE * HASH_SIZE + len(self.have)
            + self.symbols * (FEC_PAYLOAD_ID_SIZE + m.symbol_size)
        )  # fmt: skip

    def take_page(self, packet: Packet) -> str:
        """Accept a HASHPAGE or say why not: the counter it counts under."""
        index, manifest = packet.header.index, self.manifest
        if packet.header.count != manifest.page_count:
            return "count_mismatch"
        if self.pages[index] is not None:
            return "duplicate"
        if len(packet.payload) != HASH_SIZE * page_entries(index, manifest.symbol_count):
            return "bad_len"
        if digest(packet.payload) != manifest.page_hashes[index]:
            return "hash_mismatch"  # forged or corrupted: dropped alone
        self.pages[index] = packet.payload
        self.stored_pages += 1
        return "page_accepted"

    def take_symbol(self, packet: Packet) -> str:
        """Accept a SYMBOL or say why not: the counter it counts under. After an accepted one,
        ``body`` is the body once it decoded, and ``exhausted`` says whether it never will."""
        index, manifest = packet.header.index, self.manifest
        page = self.pages[index // HASHES_PER_PAGE] if index < manifest.symbol_count else None
        at = (index % HASHES_PER_PAGE) * HASH_SIZE
        if packet.header.count != manifest.symbol_count:
            return "count_mismatch"
        if self.have[index // 8] & (1 << (index % 8)):
            return "duplicate"
        if page is None:
            return "no_page_yet"  # not buffered: the carousel sends it again
        if len(packet.payload) != FEC_PAYLOAD_ID_SIZE + manifest.symbol_size:
            return "bad_len"
        if packet.payload[0] != 0:
            # Source block number: a manifest's K <= 1,672 symbols is always one block, and the
            # decoder must never see another (the raptorq package panics on it).
            return "bad_fec_id"
        if digest(packet.payload) != page[at : at + HASH_SIZE]:
            return "hash_mismatch"  # forged or corrupted: dropped alone
        self.have[index // 8] |= 1 << (index % 8)
        self.symbols += 1
        decoded = self.decoder.decode(packet.payload)
        if decoded is not None:
            self.body = bytes(decoded)
        return "symbol_accepted"

    @property
    def exhausted(self) -> bool:
        """Every committed symbol arrived and the decoder still has no body."""
        return self.body is None and self.symbols == self.manifest.symbol_count
