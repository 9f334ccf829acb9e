"""Updates larger than one block and one manifest's page hashes (docs/PROTOCOL.md, "Blocks and
the page tree"): a 100,000-signature database in several RaptorQ source blocks, its hash pages
vouched for by index pages, installed over lossy links with every block authenticated before use
and the receiver's memory within its bound; a tampered symbol, page or index page of any block is
dropped alone."""

from __future__ import annotations

import functools
import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.encoding import EncodedUpdate, carousel, encode_update
from hv_emu.updates.failure_memory import BadManifests
from hv_emu.updates.packet_errors import PacketError
from hv_emu.updates.packets import (
    HASH_SIZE,
    HEADER_LEN,
    MANIFEST_FIELDS,
    MAX_BLOCK_SOURCE,
    MAX_BLOCKS,
    Manifest,
    block_of,
    max_pages,
    parse_packet,
)
from hv_emu.updates.session import PAGE_BYTES, held_symbols
from tests.rigs.netupdate import KEY, Rig, lossy, reheader, rig, signed

V = 7
SIGNATURES = 100_000


def ndb_like(count: int, seed: int) -> bytes:
    """``count`` body signatures in the style of rfxn.ndb (``Name:0:*:hex``; 12-40 bytes of hex
    pattern each, unique names): about 77 bytes a line."""
    rng = random.Random(seed)
    return b"".join(
        b"Gen.Php.Inject.%d:0:*:%s\n" % (i, rng.randbytes(rng.randrange(12, 40)).hex().encode())
        for i in range(count)
    )


@functools.cache
def big() -> tuple[EncodedUpdate, Manifest, bytes]:
    body = ndb_like(SIGNATURES, V)
    bundle, sig = signed(V, body=body)
    update = encode_update(bundle, sig, KEY, update_id=0xB16)
    packet = parse_packet(update.manifest)
    return update, Manifest.from_payload(packet.header, packet.payload), body


def installed_right(r: Rig) -> bool:
    body = big()[2]
    event = r.events.of("update_accepted")[-1]
    return r.installed == V and event["sha256"] == hashlib.sha256(body).hexdigest()


def flip(packet: bytes, at: int) -> bytes:
    return packet[:at] + bytes([packet[at] ^ 1]) + packet[at + 1 :]


def test_the_encoding_uses_blocks_and_index_pages() -> None:
    update, m, body = big()
    assert len(body) > max_pages(64) * 44 * 1400  # more than one manifest's pages could hold
    assert m.block_count == -(-update.source_symbols // m.block_source) >= 2
    assert m.index_pages == len(m.page_hashes) >= 2 and m.page_symbols > max_pages(64)
    assert len(update.pages) == m.page_symbols + m.index_pages == 2 * m.page_count + 1 + 3
    for i in (0, 1, m.block_count, len(update.symbols) - 1):  # FEC Payload ID = (i % Z, i // Z)
        block, esi = block_of(i, m.block_count)
        fec_id = bytes([block]) + esi.to_bytes(3, "big")
        assert parse_packet(update.symbols[i]).payload[:4] == fec_id


def test_a_100000_signature_database_installs_at_20_percent_loss() -> None:
    update, m, body = big()
    r = rig(installed=2)
    peak = 0
    for packet in lossy(carousel(update, rounds=3), 0.2, random.Random(3)):
        r.feed([packet])  # asserts memory_in_use() <= memory_bound() after every packet
        peak = max(peak, r.receiver.memory_in_use())
        if r.installed == V:
            break
    assert installed_right(r)
    c = r.receiver.counters
    assert c["block_decoded"] == m.block_count and c["installed"] == 1
    assert c["verifications"] == 1 and c["hash_mismatch"] == 0
    # Bounded by the body, not by the symbols committed: each block holds at most K_b + 8
    # symbols, then its bytes (beside the failure memory, allocated whole at the start).
    failures = BadManifests.footprint(r.receiver.config.bad_manifest_memory)
    assert peak - failures <= held_symbols(m) + len(update.pages) * PAGE_BYTES + 8192
    assert held_symbols(m) < 1.02 * len(body) < 0.6 * len(update.symbols) * 1436


def test_a_tampered_symbol_of_every_block_is_dropped_alone() -> None:
    update, m, _ = big()
    firsts = list(range(m.block_count))  # symbol b is block b's first
    tampered = [flip(update.symbols[i], HEADER_LEN + 4 + 700) for i in firsts]
    r = rig(installed=2)
    swaps = {update.symbols[i]: t for i, t in zip(firsts, tampered, strict=True)}
    r.feed(_with_before(carousel(update, rounds=1), swaps), until_installed=V)
    assert installed_right(r)
    assert r.receiver.counters["hash_mismatch"] == m.block_count


def test_tampered_pages_and_index_pages_are_dropped_alone() -> None:
    update, m, _ = big()
    leaf, index = update.pages[0], update.pages[m.page_symbols]
    bad = {leaf: flip(leaf, HEADER_LEN + 5), index: flip(index, HEADER_LEN + HASH_SIZE)}
    r = rig(installed=2)
    r.feed(_with_before(carousel(update, rounds=1), bad), until_installed=V)
    assert installed_right(r)
    assert r.receiver.counters["hash_mismatch"] == 2


def test_a_page_before_its_index_page_waits_and_a_symbol_under_another_block_is_refused() -> None:
    update, m, _ = big()
    r = rig(installed=2)
    r.feed([update.manifest])
    r.feed([update.pages[1]])  # page symbol 1 before index page 0 vouched for it
    assert r.receiver.counters["no_page_yet"] == 1 and r.receiver.counters["page_accepted"] == 0
    r.feed([update.pages[m.page_symbols], update.pages[1], update.pages[0]])
    assert r.receiver.counters["page_accepted"] == 3
    # symbol 0 (block 0) presented as symbol 1 (block 1): its FEC Payload ID says otherwise
    r.feed([reheader(update.symbols[0], index=1)])
    assert r.receiver.counters["bad_fec_id"] == 1 and r.receiver.counters["symbol_accepted"] == 0


def _with_before(stream: object, swaps: dict[bytes, bytes]) -> list[bytes]:
    """The stream with a tampered copy sent right before each genuine packet named in ``swaps``
    (each once)."""
    out: list[bytes] = []
    left = dict(swaps)
    for packet in stream:  # type: ignore[attr-defined]
        if packet in left:
            out.append(left.pop(packet))
        out.append(packet)
    assert not left
    return out


# ------------------------------------------------------------------------------ Hypothesis
_FEC_AT = 80  # the FEC fields follow the 80-byte bundle header


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
       st.integers(0, 2**16 - 1), st.integers(0, 8))
def test_any_block_fields_parse_only_when_consistent(pages: int, k_b: int, count: int,
                                                     z: int, extra: int) -> None:  # fmt: skip
    """Whatever the block and page fields say, ``from_payload`` refuses them with a counted
    ``PacketError`` or returns a manifest whose arithmetic holds."""
    update = big()[0]
    packet = parse_packet(update.manifest)
    payload = bytearray(packet.payload)
    names = [name for name, _, _ in MANIFEST_FIELDS]
    assert names[2:] == ["page_count", "symbol_size", "symbol_count", "block_source",
                         "block_count"]
    payload[_FEC_AT + 2 : _FEC_AT + 4] = pages.to_bytes(2, "big")
    payload[_FEC_AT + 8 : _FEC_AT + 12] = count.to_bytes(4, "big")
    payload[_FEC_AT + 12 : _FEC_AT + 16] = k_b.to_bytes(2, "big") + z.to_bytes(2, "big")
    payload += bytes(extra * HASH_SIZE)
    try:
        m = Manifest.from_payload(packet.header, bytes(payload))
    except PacketError:
        return
    k = m.source_symbols
    assert 0 < m.block_source <= MAX_BLOCK_SOURCE and 0 < m.block_count <= MAX_BLOCKS
    assert m.block_count == -(-k // m.block_source)
    assert m.block_count * m.block_symbols == m.symbol_count
    assert m.block_symbols >= m.block_source
    assert len(m.page_hashes) <= max_pages(64)
    assert sum(m.block_length(b) for b in range(m.block_count)) == m.header.body_len


@functools.cache
def small_tree() -> EncodedUpdate:
    """A small update with the same shape: 3 blocks of 40 source symbols, index pages."""
    body = ndb_like(2000, V)  # 154 KB: K = 110
    bundle, sig = signed(V, body=body)
    return encode_update(bundle, sig, KEY, update_id=0x5EED, block_source=40, symbol_count=7000)


@st.composite
def hostile_stream(draw: st.DrawFn) -> list[bytes]:
    """Genuine packets of the multi-block update (index pages, pages, symbols of every block)
    with bytes changed, cut, re-indexed or replaced by random ones."""
    update = small_tree()
    pool = [update.manifest, *update.pages[-3:], *update.pages[:3], *update.symbols[:12]]
    out = []
    for _ in range(draw(st.integers(1, 16))):
        packet = bytearray(draw(st.sampled_from(pool)))
        for _ in range(draw(st.integers(0, 3))):
            packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            packet = packet[: draw(st.integers(0, len(packet)))]
        out.append(bytes(packet) if draw(st.integers(0, 9)) else draw(st.binary(max_size=80)))
    return out


@settings(max_examples=150, deadline=None)
@given(hostile_stream())
def test_hostile_streams_against_a_multi_block_session_never_raise(stream: list[bytes]) -> None:
    update = small_tree()
    packet = parse_packet(update.manifest)
    m = Manifest.from_payload(packet.header, packet.payload)
    assert m.block_count == 3 and m.index_pages >= 1
    r = rig(installed=2)
    r.feed([update.manifest])
    r.feed(stream)  # counted drops only; memory checked after every packet by Rig.feed
    assert r.installed == 2 and r.receiver.counters["datagrams"] == 1 + len(stream)
    assert r.receiver.counters["block_decoded"] == 0  # too few genuine symbols for any block
