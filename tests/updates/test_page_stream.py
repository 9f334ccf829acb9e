"""The page stream (docs/PROTOCOL.md, "HASHPAGE and SYMBOL payloads"): the hash pages as a small
RaptorQ object, any P or so of its 2P + 1 page symbols giving every page; hostile page symbols
dropped alone, nothing stored before it is authenticated."""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.encoding import carousel, page_order, page_stream
from hv_emu.updates.packets import (
    HEADER_LEN,
    MAX_PAYLOAD,
    PAGE_SYMBOL_SIZE,
    Manifest,
    Packet,
    PacketType,
    commitment,
    digest,
    parse_packet,
)
from hv_emu.updates.session import BLOCK_SLACK, Session, page_bound
from tests.rigs.netupdate import database_text, encoded, lossy, rig

V = 5
#: About 0.7 MB: P = 17 hash pages, M = 35 page symbols.
UPDATE = encoded(V, lines=500, width=1000)
PACKET = parse_packet(UPDATE.manifest)
MANIFEST = Manifest.from_payload(PACKET.header, PACKET.payload)
P, M = MANIFEST.page_count, MANIFEST.page_symbols
#: The P hash pages as the sender made them: the symbols' commitments, zero-padded.
TRUTH = b"".join(commitment(s[HEADER_LEN:]) for s in UPDATE.symbols).ljust(P * PAGE_SYMBOL_SIZE,
                                                                            b"\0")


def session() -> Session:
    return Session.open(MANIFEST, digest(UPDATE.manifest))


def test_the_update_has_a_page_stream_worth_testing() -> None:
    assert (P, M) == (17, 35) and len(UPDATE.pages) == M and MANIFEST.index_pages == 0
    assert page_stream(tuple(s[HEADER_LEN:] for s in UPDATE.symbols)) == tuple(
        parse_packet(p).payload for p in UPDATE.pages)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(range(M)), st.integers(0, M))
def test_any_page_symbols_in_any_order_give_the_genuine_pages(order: list[int], n: int) -> None:
    s = session()
    for j in order[:n]:
        assert s.take_page(parse_packet(UPDATE.pages[j])) in ("page_accepted", "duplicate")
        assert s.page_held <= P + BLOCK_SLACK
    known = [p for p in range(P) if s.pages[p] is not None]
    for p in known:  # whatever is known is the genuine page, never a guess
        assert s.pages[p] == TRUTH[p * PAGE_SYMBOL_SIZE : (p + 1) * PAGE_SYMBOL_SIZE]
    # The source pages fed are known at once; P + 2 symbols decode every page (RaptorQ decodes
    # from P + 2 but about once in a million; these are fixed symbols, checked once here).
    assert set(known) >= {j for j in order[:n] if j < P}
    if n >= P + 2:
        assert len(known) == P and s.page_decoder is None and s.missing_pages == 0


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), st.sampled_from([M, M + 1, 1]), st.binary(max_size=MAX_PAYLOAD),
       st.booleans())  # fmt: skip
def test_hostile_page_packets_are_dropped_without_being_stored(
    index: int, count: int, payload: bytes, genuine_length: bool
) -> None:
    if genuine_length:
        payload = (payload * (PAGE_SYMBOL_SIZE // max(len(payload), 1) + 1))[:PAGE_SYMBOL_SIZE]
    if index >= count:
        return  # parse_packet refuses it (index_oob) before a session sees it
    s = session()
    answer = s.take_page(Packet.build(PacketType.HASHPAGE, PACKET.header.update_id, V, index,
                                      count, payload))  # fmt: skip
    assert answer in ("count_mismatch", "bad_len", "hash_mismatch")
    assert s.stored_pages == 0 and s.page_decoder is None and not any(s.have_pages)


def test_a_forged_page_symbol_is_dropped_alone_and_the_genuine_one_still_counts() -> None:
    s = session()
    genuine = parse_packet(UPDATE.pages[P])  # a repair symbol
    forged = Packet.build(PacketType.HASHPAGE, PACKET.header.update_id, V, P, M,
                          bytes(PAGE_SYMBOL_SIZE))
    assert s.take_page(forged) == "hash_mismatch"
    assert s.take_page(genuine) == "page_accepted" and s.page_held == 1
    assert s.take_page(genuine) == "duplicate"


def test_a_session_holds_at_most_page_bound() -> None:
    s = session()
    peak = 0
    for j in reversed(range(M)):  # repair symbols first: the decoder fills up before any source
        s.take_page(parse_packet(UPDATE.pages[j]))
        peak = max(peak, s.memory())
    assert s.missing_pages == 0
    assert peak <= page_bound(MANIFEST.symbol_count) + 1472 + len(s.have) + len(s.have_pages)


def test_the_front_of_a_round_carries_enough_page_symbols_for_30_percent_loss() -> None:
    ahead, sprinkled = page_order(P, 0)
    assert ahead == list(range(len(ahead))) and len(ahead) == -(-16 * P // 10) + 3 <= M
    assert sorted(set(ahead + sprinkled)) == list(range(M))
    # A receiver at 30 % loss: the update installs, the pages from the stream.
    r = rig(installed=2)
    r.feed(lossy(carousel(UPDATE, rounds=2), 0.3, random.Random(2)), until_installed=V)
    assert r.installed == V and r.receiver.counters["hash_mismatch"] == 0
    body = r.events.of("update_accepted")[-1]["sha256"]
    assert body == hashlib.sha256(database_text(V, 500, 1000)).hexdigest()
