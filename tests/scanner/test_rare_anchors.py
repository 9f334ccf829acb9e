"""``anchors="rare"`` (``hv-emu scan``'s compile, ``hv_emu/scanner/program.py``): every static run
longer than 16 bytes enters the literal finder as its window whose last four bytes are the
rarest; matching is exactly what the prefix anchors give (which the clamscan differential tests
hold to clamscan), and the cache keeps the two apart."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.scanner import program as program_module
from hv_emu.scanner.database import SignatureDatabase, compile_signatures
from hv_emu.scanner.database_files import SCAN_ANCHORS, cache_key, compile_files
from hv_emu.scanner.program import RARE_ANCHOR, build_program, byte_costs, rare_window
from hv_emu.scanner.signatures import parse_database

ALPHABET = b"abcde \x00\xff"


def compiled(text: bytes, anchors: str, engine: str = "auto") -> SignatureDatabase:
    signatures = parse_database(text, kind="ndb", source="t.ndb")
    return compile_signatures(signatures, "ndb", 0, "t.ndb", "0" * 64, engine, anchors=anchors)


def matches(db: SignatureDatabase, data: bytes, cuts: list[int]) -> list[tuple[str, int, int]]:
    stream = db.open_stream(len(data))
    found = []
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, stop in itertools.pairwise(edges):
        found += [(m.name, m.start, m.end) for m in stream.feed(data[start:stop])]
    stream.close()
    return found


def test_the_window_ends_on_the_rarest_four_bytes() -> None:
    table = bytearray(256)
    table[ord("Z")] = 50
    table[ord("Q")] = 10
    costs = bytes(table)
    data = b"a" * 20 + b"QZ" + b"a" * 30 + b"Z" + b"a" * 10
    start = rare_window(data, costs)
    assert data[start : start + RARE_ANCHOR].endswith(b"QZ")  # 60 beats the lone Z's 50
    assert rare_window(b"a" * 40, costs) == 0  # a tie: the earliest
    assert rare_window(b"b" * RARE_ANCHOR + b"Z", costs) == 1
    for _ in range(200):  # the sums at C speed are the sums
        rng = random.Random(_)
        table = bytes(rng.randrange(64) for _ in range(256))
        data = rng.randbytes(rng.randint(RARE_ANCHOR + 1, 300))
        fours = [sum(table[b] for b in data[i + RARE_ANCHOR - 4 : i + RARE_ANCHOR])
                 for i in range(len(data) - RARE_ANCHOR + 1)]  # fmt: skip
        assert rare_window(data, table) == fours.index(max(fours))


def test_byte_costs_rank_what_the_database_rarely_has() -> None:
    costs = byte_costs([b"aaaab", b"ab"])
    assert costs[ord("a")] < costs[ord("b")] < costs[ord("z")] == 63


def test_the_rare_anchors_are_cut_and_the_rest_verified() -> None:
    body = b"the same old prefix, then a rare tail: {[|]}"
    db = compiled(b"Long:0:*:" + body.hex().encode() + b"\n", "rare")
    (anchor,) = db.program.literals
    # Ends on four bytes seen once (the earliest such window), not on the prefix's letters.
    assert len(anchor) == RARE_ANCHOR and anchor in body and anchor.endswith(b"{[|]")
    assert compiled(b"Long:0:*:" + body.hex().encode() + b"\n", "prefix").program.literals == (
        body,)
    assert matches(db, b"xx" + body + b"yy", [5, 30]) == [("Long", 2, 2 + len(body))]
    assert matches(db, b"xx" + body[1:] + b"yy", [5, 30]) == []
    with pytest.raises(ValueError, match="anchors must be one of"):
        build_program((), anchors="longest")


BODY = st.binary(min_size=2, max_size=40).map(lambda b: bytes(ALPHABET[x % 8] for x in b))


@st.composite
def databases(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Lines of plain bodies, bodies with a wildcard or a gap between two runs, and anchored
    bytes; the bodies, to plant."""
    lines, bodies = [], []
    for number in range(draw(st.integers(1, 8))):
        left, right = draw(BODY), draw(BODY)
        form = draw(st.sampled_from(["plain", "wild", "gap", "anchored"]))
        if form == "plain":
            hexed, body = (left + right).hex(), left + right
        elif form == "wild":
            hexed, body = f"{left.hex()}??{right.hex()}", left + b"Q" + right
        elif form == "gap":
            hexed, body = f"{left.hex()}{{2-5}}{right.hex()}", left + b"QQQ" + right
        else:
            hexed, body = f"{(left + right).hex()}[1-3]61", left + right + b"Qa"
        lines.append(f"S{number}:0:*:{hexed}".encode())
        bodies.append(body)
    return b"\n".join(lines) + b"\n", bodies


@given(databases(), st.binary(max_size=400), st.lists(st.integers(0, 1200), max_size=6),
       st.lists(st.tuples(st.integers(0, 7), st.integers(0, 400)), max_size=6),
       st.sampled_from(["auto", "ac"]))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_rare_anchors_match_exactly_what_prefix_anchors_match(
    database: tuple[bytes, list[bytes]], noise: bytes, cuts: list[int],
    plants: list[tuple[int, int]], engine: str,
) -> None:  # fmt: skip
    text, bodies = database
    data = bytearray(bytes(ALPHABET[b % 8] for b in noise))
    for which, at in plants:
        body = bodies[which % len(bodies)]
        at = min(at, len(data))
        data[at:at] = body
    prefix = matches(compiled(text, "prefix", engine), bytes(data), cuts)
    assert matches(compiled(text, "rare", engine), bytes(data), cuts) == prefix


def test_the_cache_key_separates_the_anchor_policies() -> None:
    files = [("t.ndb", b"A:0:*:414243\n", "ndb")]
    assert SCAN_ANCHORS == "rare"
    assert cache_key(files, "hyperscan") == cache_key(files, "hyperscan", "rare")
    assert cache_key(files, "hyperscan", "prefix") != cache_key(files, "hyperscan", "rare")


def test_a_large_set_scanned_with_rare_anchors_finds_the_same(tmp_path: object) -> None:
    """A set of ``LARGE_SET`` signatures (prefix anchors cut to 16 bytes): the rare windows give
    other literals and the same matches."""
    from pathlib import Path

    rng = random.Random(20)
    stems = [bytes(rng.choice(b"abcdefgh(){};$ ") for _ in range(24)) for _ in range(50)]
    lines, bodies = [], []
    for number in range(program_module.LARGE_SET):
        body = bytearray(rng.choice(stems) + bytes(rng.choice(b"abcdefgh(){};$ ")
                                                   for _ in range(rng.randint(4, 30))))  # fmt: skip
        body[rng.randrange(len(body))] = rng.randrange(256)
        lines.append(b"G%d:0:*:%s" % (number, bytes(body).hex().encode()))
        bodies.append(bytes(body))
    path = Path(str(tmp_path)) / "large.ndb"
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = bytearray(rng.randbytes(200_000))
    for body in rng.sample(bodies, 200):
        at = rng.randrange(len(data))
        data[at:at] = body
    rare = compile_files([path])
    prefix = compile_files([path], anchors="prefix")
    assert rare.program.literals != prefix.program.literals
    cuts = [rng.randrange(len(data)) for _ in range(8)]
    found = matches(rare, bytes(data), cuts)
    assert found == matches(prefix, bytes(data), cuts) and len(found) >= 150  # some overlap
