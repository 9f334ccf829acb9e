"""Matching: every name, every position, across chunk boundaries, with both literal finders."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from hv_emu.errors import DatabaseError
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase, compile_database
from hv_emu.scanner.engine import Match
from hv_emu.scanner.signatures import ByteClass, Element, Literal, Signature
from tests.conftest import RFXN
from tests.rigs.scanner import instance

needs_rfxn = pytest.mark.skipif(not RFXN.exists(), reason=f"{RFXN} (rfxn.ndb) is absent")
ENGINES = [
    "ac",
    pytest.param(
        "hyperscan",
        marks=pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed"),
    ),
]


def ndb(*lines: str, engine: str) -> SignatureDatabase:
    data = "".join(line + "\n" for line in lines).encode()
    return compile_database(data, kind="ndb", version=1, source="t.ndb", engine=engine)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def stream_scan(db: SignatureDatabase, data: bytes, size: int) -> list[Match]:
    stream = db.open_stream()
    found = [m for chunk in chunks(data, size) for m in stream.feed(chunk)]
    assert stream.offset == len(data)
    stream.close()
    return found


# ------------------------------------------------------------------------ milestone 1


@pytest.mark.parametrize("engine", ENGINES)
def test_every_name_duplicates_and_nesting(engine: str) -> None:
    db = ndb("Outer:0:*:6162636465666768", "Inner:0:*:63646566", "Twin:0:*:63646566",
             engine=engine)
    data = b"xx" + b"abcdefgh" + b"yy"
    assert db.scan(data) == [
        Match("Inner", 4, 8), Match("Twin", 4, 8), Match("Outer", 2, 10),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_occurrence_and_overlaps(engine: str) -> None:
    db = ndb("Aaa:0:*:616161", engine=engine)
    assert db.scan(b"aaaaa") == [Match("Aaa", 0, 3), Match("Aaa", 1, 4), Match("Aaa", 2, 5)]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 512])
def test_literal_across_every_boundary(engine: str, size: int) -> None:
    db = ndb("Abc:0:*:414243444546", engine=engine)
    for at in range(0, 12):
        data = bytes(at) + b"ABCDEF" + bytes(5)
        assert stream_scan(db, data, size) == [Match("Abc", at, at + 6)], (at, size)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_literal_longer_than_an_anchor_is_verified_whole(engine: str) -> None:
    body = random.Random(5).randbytes(5000)
    db = ndb(f"Long:0:*:{body.hex()}", engine=engine)
    data = b"xyz" + body + b"xyz" + body[:-1] + b"!"
    assert stream_scan(db, data, 512) == [Match("Long", 3, 5003)]


@pytest.mark.parametrize("engine", ENGINES)
def test_nul_bytes_and_high_bytes(engine: str) -> None:
    db = ndb("Bin:0:*:4100ff0042", engine=engine)
    assert db.scan(b"\x00A\x00\xff\x00B\x00") == [Match("Bin", 1, 6)]


def test_empty_database_matches_nothing_and_counts_offset() -> None:
    db = SignatureDatabase.empty()
    stream = db.open_stream()
    assert stream.feed(b"X5O!P%@AP") == [] and stream.offset == 9
    assert db.scan(b"anything") == []


@needs_rfxn
@pytest.mark.parametrize("engine", ENGINES)
def test_every_rfxn_body_planted_is_found_by_name(engine: str) -> None:
    db = compile_database(RFXN.read_bytes(), kind="ndb", version=1, source="rfxn.ndb",
                          engine=engine)
    rng = random.Random(1869)
    data = bytearray()
    planted: list[tuple[str, int, int]] = []
    for signature in db.signatures:
        body = instance(rng.choice(signature.parts[0].variants), rng)
        # Half the bodies straddle a 512-byte boundary; the rest land anywhere.
        if rng.random() < 0.5:
            boundary = (len(data) // 512 + 1) * 512
            gap = boundary - len(data) - rng.randrange(1, len(body))
            if gap < 0:
                gap += 512
        else:
            gap = rng.randrange(0, 700)
        data += rng.randbytes(gap)
        planted.append((signature.name, len(data), len(data) + len(body)))
        data += body
    data += rng.randbytes(300)

    found = stream_scan(db, bytes(data), 512)
    found_set = {(m.name, m.start, m.end) for m in found}
    missing = [p for p in planted if p not in found_set]
    assert missing == []
    straddling = [p for p in planted if p[1] // 512 != (p[2] - 1) // 512]
    assert len(straddling) > 800
    # Anything else found lies inside a planted body: a nested or duplicate body.
    for name, start, end in found_set - set(planted):
        assert any(s <= start and end <= e for _, s, e in planted), name


# ------------------------------------------------------------------------ milestone 2: verification


@pytest.mark.parametrize("engine", ENGINES)
def test_wildcards_verified_around_the_anchor(engine: str) -> None:
    db = ndb("W:0:*:41??43444546(47|48)", engine=engine)
    assert db.scan(b"..AxCDEFG..AyCDEFH..AzCDEFI") == [Match("W", 2, 9), Match("W", 11, 18)]


@pytest.mark.parametrize("engine", ENGINES)
def test_nibbles_and_negation(engine: str) -> None:
    db = ndb("N:0:*:4?424344!(45|46)", engine=engine)
    assert db.scan(b"ABCDG QBCDG ABCDE") == [Match("N", 0, 5)]
    db = ndb("S:0:*:41424344!(4546|4748)", engine=engine)
    assert db.scan(b"ABCDEF ABCDGH ABCDGG") == [Match("S", 14, 20)]


@pytest.mark.parametrize("engine", ENGINES)
def test_generic_alternation_variants(engine: str) -> None:
    db = ndb("G:0:*:4142(43|4445)4647", engine=engine)
    assert db.scan(b"ABCFG ABDEFG ABDFG") == [Match("G", 0, 5), Match("G", 6, 12)]


@pytest.mark.parametrize("engine", ENGINES)
def test_absolute_and_floating_offsets(engine: str) -> None:
    db = ndb("At4:0:4:41424344", "Float:0:2,3:41424344", engine=engine)
    data = b"ABCD" * 4
    assert db.scan(data) == [Match("At4", 4, 8), Match("Float", 4, 8)]


@pytest.mark.parametrize("engine", ENGINES)
def test_unapplied_signatures_never_match(engine: str) -> None:
    db = ndb("Pe:1:EP+0:41424344", "Html:3:*:41424344", "Any:0:*:41424344", engine=engine)
    assert db.scan(b"ABCD") == [Match("Any", 0, 4)]
    assert db.not_applied == (
        "t.ndb:1: Pe: target type 1 needs ClamAV's file typing; not applied",
        "t.ndb:2: Html: target type 3 needs ClamAV's file typing; not applied",
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_eof_offsets_need_the_length(engine: str) -> None:
    db = ndb("End:0:EOF-4:41424344", "Near:0:EOF-13,3:41424344*4546", engine=engine)
    data = b"ABCDxxxABCDyEFzzABCD"  # 20 bytes: Near may start at 7..10, End at 16
    assert db.scan(data) == [Match("Near", 7, 14), Match("End", 16, 20)]
    assert stream_scan(db, data, 3) == []  # a disk stream: the end is unknown
    stream = db.open_stream(length=len(data))
    assert [m for chunk in chunks(data, 3) for m in stream.feed(chunk)] == db.scan(data)
    assert db.end_relative == (
        "t.ndb:1: End: offset 'EOF-4' needs the data's length; one-shot scans only",
        "t.ndb:2: Near: offset 'EOF-13,3' needs the data's length; one-shot scans only",
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_verification_waits_for_the_tail_across_chunks(engine: str) -> None:
    # The anchor is the long run at the front; the wildcard tail arrives chunks later.
    db = ndb("Tail:0:*:4142434445464748??????49(4a|4b)", "Head:0:*:??????5051525354", engine=engine)
    rng = random.Random(7)
    for _ in range(200):
        data = bytearray(rng.randbytes(rng.randrange(0, 40)))
        tail_at = len(data)
        data += b"ABCDEFGH" + rng.randbytes(3) + b"I" + rng.choice([b"J", b"K"])
        head_at = len(data)
        data += rng.randbytes(3) + b"PQRST" + rng.randbytes(rng.randrange(0, 40))
        expected = [Match("Tail", tail_at, tail_at + 13), Match("Head", head_at, head_at + 8)]
        size = rng.randrange(1, 20)
        assert stream_scan(db, bytes(data), size) == expected
        assert db.scan(bytes(data)) == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_prefix_before_the_stream_start_is_no_match(engine: str) -> None:
    db = ndb("Pre:0:*:????41424344", engine=engine)
    assert db.scan(b"ABCDxxABCD") == [Match("Pre", 4, 10)]


# ------------------------------------------------------------------------ milestone 2: parts


def regex(signature: Signature) -> re.Pattern[bytes]:
    """The signature as a Python regular expression: the textbook meaning of the body."""

    def element(e: Element) -> bytes:
        if isinstance(e, Literal):
            return re.escape(e.data)
        if isinstance(e, ByteClass):
            return b"[" + b"".join(re.escape(bytes([b])) for b in sorted(e.allowed)) + b"]"
        options = b"|".join(re.escape(o) for o in sorted(e.options))
        return b"(?!" + options + b").{%d}" % e.width if e.negated else b"(?:" + options + b")"

    text = b""
    for number, part in enumerate(signature.parts):
        if number:
            high = b"" if part.gap_max is None else b"%d" % part.gap_max
            text += b".{%d,%s}" % (part.gap_min, high)
        text += b"(?:" + b"|".join(b"".join(map(element, v)) for v in part.variants) + b")"
    return re.compile(text, re.DOTALL)


PARTS = [
    "Star:0:*:4142*4344", "UpTo:0:*:4142{-3}4344", "AtLeast:0:*:4142{4-}4345",
    "Between:0:*:4241{2-5}4443", "Exact:0:*:4441{130}4143", "Three:0:*:4141*4242{-2}4343",
    "Mixed:0:*:4?4243??44*(44|45)4444{1-3}!(4141|4242)4343", "Twice:0:*:414243*414243",
]


@pytest.mark.parametrize("engine", ENGINES)
def test_parts_match_as_the_regular_expression_does(engine: str) -> None:
    db = ndb(*PARTS, engine=engine)
    rng = random.Random(11)
    for _ in range(150):
        data = bytes(rng.choice(b"ABCDE\x00") for _ in range(rng.randrange(0, 320)))
        found = stream_scan(db, data, rng.randrange(1, 40))
        for signature in db.signatures:
            # Every offset at which some match of the whole body ends, found the slow way.
            ending_here = re.compile(regex(signature).pattern + rb"\Z", re.DOTALL)
            ends = {e for e in range(len(data) + 1) if ending_here.search(data, 0, e)}
            assert {m.end for m in found if m.name == signature.name} == ends, signature.name


TOKENS = ["41", "42", "4142", "4241", "4?", "?2", "??", "(41|42)", "!(41|42)", "(4142|4241)",
          "!(4142|4241)", "(41|4243)", "{2}", "*", "{-3}", "{2-}", "{1-4}", "{0-2}"]


@pytest.mark.parametrize("engine", ENGINES)
def test_random_bodies_match_as_regular_expressions(engine: str) -> None:
    rng = random.Random(engine)
    accepted = 0
    while accepted < 60:
        body = "".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 7)))
        try:
            db = ndb(f"S:0:*:{body}", engine=engine)
        except DatabaseError:
            continue  # most random bodies break a loader rule
        accepted += 1
        ending_here = re.compile(regex(db.signatures[0]).pattern + rb"\Z", re.DOTALL)
        for _ in range(5):
            data = bytes(rng.choice(b"AB\x00C") for _ in range(rng.randrange(0, 60)))
            ends = {e for e in range(len(data) + 1) if ending_here.search(data, 0, e)}
            found = stream_scan(db, data, rng.randrange(1, 9))
            assert {m.end for m in found} == ends, (body, data)


@pytest.mark.parametrize("engine", ENGINES)
def test_part_chain_reports_its_first_start_and_offset_applies_to_it(engine: str) -> None:
    db = ndb("P:0:*:41424344*45464748", "At:0:2:41424344*45464748", engine=engine)
    data = b"xxABCDyyyyEFGH"
    assert db.scan(data) == [Match("At", 2, 14), Match("P", 2, 14)]
    assert stream_scan(db, b"x" + data, 3) == [Match("P", 3, 15)]


@pytest.mark.parametrize("engine", ENGINES)
def test_chain_state_stays_bounded(engine: str) -> None:
    db = ndb("B:0:*:4142{0-8}4344", "U:0:*:4546*4748", engine=engine)
    stream = db.open_stream()
    for _ in range(200):
        stream.feed(b"AB" * 256 + b"EF" * 256)
    assert all(len(ends) <= 8 for ends in stream._chains.values())


@pytest.mark.parametrize("engine", ENGINES)
def test_history_never_outgrows_the_widest_verified_pattern(engine: str) -> None:
    """Plain multi-part bodies need no history; wildcards need their width, never more."""
    cases = [("P:0:*:414243*444546", 0, [b"AB", b"Cyy", b"DEF"]),
             ("W:0:*:4142??44*454647", 4, [b"AB\x00", b"D" + b"y" * 9, b"EFG"])]
    for line, keep, pieces in cases:
        db = ndb(line, engine=engine)
        stream = db.open_stream()
        for size in (1, 2, 1000, 5, 70_000):
            stream.feed(b"x" * size)
            assert len(stream._history) == min(keep, stream.offset)
        found = [m for piece in pieces for m in stream.feed(piece)]
        assert [m.name for m in found] == [line[0]]
        assert len(stream._history) == keep


# ------------------------------------------------------------------------ engines agree


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")
def test_hyperscan_and_aho_corasick_agree_on_random_streams() -> None:
    lines = ["A:0:*:414243", "B:0:*:4243??45", "C:0:*:4?4142(43|0044)", "D:0:*:00000000",
             "E:0:*:4141!(41|42)", "F:0:*:0041(4243|4445)"]
    ac = ndb(*lines, engine="ac")
    hs = ndb(*lines, engine="hyperscan")
    rng = random.Random(3)
    for _ in range(100):
        data = bytes(rng.choice(b"\x00ABCDE") for _ in range(rng.randrange(0, 300)))
        size = rng.randrange(1, 64)
        assert stream_scan(ac, data, size) == stream_scan(hs, data, size) == ac.scan(data)
