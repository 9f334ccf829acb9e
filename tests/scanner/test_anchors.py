"""Anchored byte ranges ``aa[x-y]BODY`` and ``BODY[x-y]aa``: the parser's forms and errors, matching
against a brute-force reading of the rule at every distance and every chunk split, and agreement
with raw-mode clamscan where clamscan follows the rule (docs/SIGNATURES.md lists where it does
not; skipped without clamscan)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner.body import BodyError, parse_body
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase, compile_database
from hv_emu.scanner.pattern import Anchor, Literal
from tests.rigs.scanner import RAW_MODE

ENGINES = ["ac"] + (["hyperscan"] if HYPERSCAN_AVAILABLE else [])
CLAMSCAN = shutil.which("clamscan")


def test_left_right_and_both_anchors_parse() -> None:
    (part,) = parse_body("4a[1-3]4b4c??4d4e[5]4f")
    assert part.left == Anchor(frozenset({0x4A}), 1, 3)
    assert part.right == Anchor(frozenset({0x4F}), 5, 5)
    assert part.variants[0][0] == Literal(b"KL")
    first, second = parse_body("4a[0-32]4b4c*4d4e[0-0]ff")
    assert first.left == Anchor(frozenset({0x4A}), 0, 32) and first.right is None
    assert second.right == Anchor(frozenset({0xFF}), 0, 0) and second.left is None


def test_an_anchored_two_byte_body_is_long_enough() -> None:
    assert parse_body("4a[0-2]4b4c")[0].variants == ((Literal(b"KL"),),)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("4a4b[1-2]4c4d", 4, "one byte on one side"),
        ("4a[33]4b4c", 0, "incorrect range [33]"),
        ("4a[3-1]4b4c", 0, "incorrect range [3-1]"),
        ("4a[1-2]4b4c[1-2]4d[1-2]4e", 11, "one byte on one side"),
        ("4a[x]4b4c", 2, "bad anchored byte range"),
        ("4a[1-2", 2, "bad anchored byte range"),
        ("4a[1-2]4b", 7, "too short"),
        ("4g[1-2]4b4c", 1, "bad hex digit 'g'"),
        ("4b4c[1-2]4g", 10, "bad hex digit 'g'"),
        ("4a4b(4c[1]4d|4e)", 7, "one byte on one side"),
        ("4a[1-2]", 7, "empty part"),
        ("??[1-2]4b4c", 0, "must be plain hex, not '??'"),
        ("4b4c[1-2]4?", 9, "must be plain hex, not '4?'"),
    ],
)
def test_bad_anchor_forms_are_refused_with_their_column(
    text: str, column: int, message: str
) -> None:
    with pytest.raises(BodyError) as caught:
        parse_body(text)
    assert message in caught.value.message
    assert caught.value.column == column


@given(
    st.lists(st.sampled_from(["4a", "4b4c", "??", "4?", "[", "]", "1", "-", "32", "33", "[0-3]",
                              "[2]", "*", "(4d|4e)"]), max_size=12).map("".join)
)
@settings(max_examples=300, deadline=None)
def test_hostile_anchor_bodies_raise_only_body_error(text: str) -> None:
    try:
        parts = parse_body(text)
    except BodyError as error:
        assert 0 <= error.column <= len(text)
        return
    for part in parts:
        for anchor in (part.left, part.right):
            assert anchor is None or 0 <= anchor.nearest <= anchor.farthest <= 32


# --------------------------------------------------------------------------- matching


def expected(body: bytes, left: tuple[int, int, int] | None, right: tuple[int, int, int] | None,
             data: bytes) -> set[tuple[int, int]]:
    """Brute force: every occurrence of ``body`` with its anchored bytes where the rule says."""
    found = set()
    for start in range(len(data) - len(body) + 1):
        end = start + len(body)
        if data[start:end] != body:
            continue
        if left is not None:
            byte, nearest, farthest = left
            if not any(start - 1 - k >= 0 and data[start - 1 - k] == byte
                       for k in range(nearest, farthest + 1)):
                continue
        if right is not None:
            byte, nearest, farthest = right
            if not any(end + k < len(data) and data[end + k] == byte
                       for k in range(nearest, farthest + 1)):
                continue
        found.add((start, end))
    return found


def database(line: str, engine: str) -> SignatureDatabase:
    return compile_database(f"A:0:*:{line}\n".encode(), kind="ndb", version=1, source="a.ndb",
                            engine=engine)


def in_chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    for begin, end in itertools.pairwise(edges):
        yield data[begin:end]


def scan(db: SignatureDatabase, chunks: Iterator[bytes]) -> set[tuple[int, int]]:
    stream = db.open_stream()
    found = {(m.start, m.end) for chunk in chunks for m in stream.feed(chunk)}
    stream.close()
    return found


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_every_distance_at_every_split_point(engine: str, side: str) -> None:
    body, byte, nearest, farthest = b"KLM", 0x4A, 3, 7
    bracket = f"[{nearest}-{farthest}]"
    line = f"4a{bracket}4b4c4d" if side == "left" else f"4b4c4d{bracket}4a"
    db = database(line, engine)
    anchor = (byte, nearest, farthest)
    for distance in range(0, 10):
        planted = (b"J" + b"." * distance + body if side == "left"
                   else body + b"." * distance + b"J")
        data = b".." + planted + b".."
        want = expected(body, anchor if side == "left" else None,
                        anchor if side == "right" else None, data)
        assert bool(want) == (nearest <= distance <= farthest)
        assert scan(db, iter([data])) == want
        assert scan(db, iter([bytes([b]) for b in data])) == want  # one byte per chunk
        for cut in range(1, len(data)):
            assert scan(db, in_chunks(data, [cut])) == want, (distance, cut)


@pytest.mark.parametrize("engine", ENGINES)
def test_anchor_at_the_edges_of_the_stream(engine: str) -> None:
    left = database("4a[0-32]4b4c", engine)
    assert scan(left, iter([b"JKL"])) == {(1, 3)}
    assert scan(left, iter([b"KL"])) == set()  # no byte before the stream's start
    right = database("4b4c[0-32]4a", engine)
    assert scan(right, iter([b"KL", b"J"])) == {(0, 2)}
    assert scan(right, iter([b"KL", b"." * 32])) == set()  # the stream ends without it
    assert scan(right, iter([b"KL", b"." * 32, b"J"])) == {(0, 2)}
    assert scan(right, iter([b"KL", b"." * 33, b"J"])) == set()


@pytest.mark.parametrize("engine", ENGINES)
@given(
    data=st.binary(max_size=80).map(lambda raw: bytes(b"JKL."[b % 4] for b in raw)),
    left=st.none() | st.tuples(st.sampled_from([0x4A, 0x4B]), st.integers(0, 4),
                               st.integers(0, 6)),
    right=st.none() | st.tuples(st.sampled_from([0x4A, 0x4C]), st.integers(0, 4),
                                st.integers(0, 6)),
    cuts=st.lists(st.integers(0, 80), max_size=4),
)
@settings(max_examples=150, deadline=None)
def test_random_streams_over_a_small_alphabet_match_the_rule(
    engine: str, data: bytes, left: tuple[int, int, int] | None,
    right: tuple[int, int, int] | None, cuts: list[int],
) -> None:
    """Anchored bytes that also occur in the body and around it, in streams cut anywhere."""
    if left is not None:
        left = (left[0], min(left[1:]), max(left[1:]))
    if right is not None:
        right = (right[0], min(right[1:]), max(right[1:]))
    line = "4b4c"
    if left is not None:
        line = f"{left[0]:02x}[{left[1]}-{left[2]}]{line}"
    if right is not None:
        line = f"{line}[{right[1]}-{right[2]}]{right[0]:02x}"
    try:
        db = database(line, engine)
    except DatabaseError:
        assert left is None and right is None  # 4b4c alone is a too-short plain literal
        return
    cuts = [c for c in cuts if c <= len(data)]
    assert scan(db, in_chunks(data, cuts)) == expected(b"KL", left, right, data)


# --------------------------------------------------------------------------- clamscan agreement

#: Bodies of 2, 3 and 9 bytes; anchored bytes also found inside the body ('KK', 'K[..]K'). Every
#: body differs: clamscan merges parts with one body and one anchored byte, whatever their ranges
#: (docs/SIGNATURES.md).
AGREE_NDB = """\
Anchor.L2:0:*:4a[0-32]4b4c
Anchor.L3:0:*:4a[1-3]4b4c4d
Anchor.L3x:0:*:4a[2-2]5b5c5d
Anchor.L0:0:*:4a[0-0]6b6c6d
Anchor.LSelf:0:*:4b[0-5]4b4b4c
Anchor.L9:0:*:4a[5-20]6162636465666768f9
Anchor.R2:0:*:7b7c[0-32]4a
Anchor.R3:0:*:8b8c8d[1-3]4a
Anchor.R0:0:*:9b9c9d[0-0]4a
Anchor.RSelf:0:*:5a5a5c[2-6]5c
Anchor.R9:0:*:7172737475767778f9[0-32]4a
"""


def left_within_clamscan_reach(name: str, body: bytes, distance: int) -> bool:
    """Raw-mode clamscan sees a left anchored byte only if it lies in the buffer that its
    prefilter trims to: for a body that is the first candidate in its file, distance +
    min(len(body), 8) <= 34 (docs/SIGNATURES.md). Right anchors have no such limit."""
    return ".L" not in name or distance + min(len(body), 8) <= 34


def plantings() -> Iterator[tuple[str, bytes, str, bytes]]:
    """(file name, data, signature name, body) for every signature and distance 0..33."""
    for line in AGREE_NDB.splitlines():
        name, _, _, text = line.split(":")
        (part,) = parse_body(text)
        body = part.variants[0][0].data if isinstance(part.variants[0][0], Literal) else b""
        anchor = part.left or part.right
        assert anchor is not None and len(part.variants[0]) == 1
        byte = bytes([min(anchor.allowed)])
        for distance in range(34):
            if not left_within_clamscan_reach(name, body, distance):
                continue
            planted = (byte + b"." * distance + body if part.left is not None
                       else body + b"." * distance + byte)
            yield f"{name}-{distance}", b"." * 64 + planted + b"." * 64, name, body


@pytest.mark.skipif(CLAMSCAN is None, reason="clamscan (Debian package clamav) absent")
@pytest.mark.parametrize("engine", ENGINES)
def test_anchors_agree_with_raw_mode_clamscan(engine: str, tmp_path: Path) -> None:
    database_file = tmp_path / "anchors.ndb"
    database_file.write_text(AGREE_NDB)
    db = compile_database(AGREE_NDB.encode(), kind="ndb", version=1, source="anchors.ndb",
                          engine=engine)
    ours: set[tuple[str, str]] = set()
    files = []
    for file_name, data, _, _ in plantings():
        (tmp_path / file_name).write_bytes(data)
        files.append(tmp_path / file_name)
        stream = db.open_stream()
        ours |= {(file_name, match.name) for match in stream.feed(data)}
        stream.close()
    assert CLAMSCAN is not None
    result = subprocess.run([CLAMSCAN, "-d", str(database_file), *RAW_MODE, *map(str, files)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    theirs = set()
    for output in result.stdout.splitlines():
        path, _, verdict = output.rpartition(": ")
        if verdict.endswith(" FOUND"):
            theirs.add((Path(path).name,
                        verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL")))
    assert ours == theirs
    assert {name for _, name in ours} == {line.split(":")[0] for line in AGREE_NDB.splitlines()}
    assert any(name.endswith("-33") for name, _ in ours) is False  # 33 is out of every range
