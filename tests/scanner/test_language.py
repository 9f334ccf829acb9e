"""The rest of the .db/.ndb language clamscan 1.4 loads: nested alternations, the (B)/(L)/(W)
boundaries, names with spaces and " (Clam)", every offset form, gaps with a maximum of 0.

Three kinds of test: vectors written here (the sort of cases ClamAV's matcher unit tests check:
nesting, boundaries at either edge of a part and of the data, anchors, wildcards), Hypothesis
(both engines agree on random streams, at every chunk split), and differential runs against
raw-mode clamscan on generated files (skipped without clamscan)."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.scanner.body import parse_body
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase, compile_database
from hv_emu.scanner.pattern import ALNUM, WORD_AFTER, WORD_ANY, WORD_BEFORE, Boundary
from hv_emu.scanner.signatures import parse_database
from tests.rigs.scanner import clamscan, ours

ENGINES = ["ac"] + (["hyperscan"] if HYPERSCAN_AVAILABLE else [])
needs_clamscan = pytest.mark.skipif(shutil.which("clamscan") is None,
                                    reason="clamscan (Debian package clamav) absent")


def ndb(text: str, engine: str = "ac") -> SignatureDatabase:
    return compile_database(text.encode(), kind="ndb", version=1, source="t.ndb", engine=engine)


def names(db: SignatureDatabase, data: bytes) -> set[str]:
    return {m.name for m in db.scan(data)}


def split_names(db: SignatureDatabase, data: bytes, split: int) -> set[str]:
    stream = db.open_stream(len(data))
    found = stream.feed(data[:split]) + stream.feed(data[split:])
    stream.close()
    return {m.name for m in found}


# ------------------------------------------------------------------------ vectors


@pytest.mark.parametrize("engine", ENGINES)
def test_nested_alternation_from_the_issue(engine: str) -> None:
    db = ndb("Nest:0:*:6161(6a6a|66(6767|6868)66|6969)6161\n", engine)
    for middle, hit in [(b"jj", True), (b"fggf", True), (b"fhhf", True), (b"ii", True),
                        (b"fghf", False), (b"ff", False), (b"fgg", False), (b"j", False)]:
        assert (names(db, b"--aa" + middle + b"aa--") == {"Nest"}) is hit, middle


@pytest.mark.parametrize("engine", ENGINES)
def test_nesting_mixes_classes_wildcards_and_empty_alternatives(engine: str) -> None:
    db = ndb("Deep:0:*:7071(72|(73|(74|75)??)76)7778\n"
             "Empty:0:*:5051(52||5354|)5556\n", engine)
    # (72 | (73 | 74?? | 75??) 76): r, sv, t?v or u?v between pq and wx.
    assert names(db, b"pqrwx") == names(db, b"pqsvwx") == {"Deep"}
    assert names(db, b"pqt\x00vwx") == names(db, b"pqu\xffvwx") == {"Deep"}
    assert names(db, b"pqrvwx") == names(db, b"pqtvwx") == names(db, b"pqs\x00vwx") == set()
    assert names(db, b"PQRUV") == {"Empty"} and names(db, b"PQSTUV") == {"Empty"}
    assert names(db, b"PQUV") == set()  # an empty alternative never matches


def test_boundaries_parse_to_edges_or_bytes() -> None:
    (part,) = parse_body("(B)616263(L)")
    assert (part.left_boundary, part.right_boundary) == (Boundary("B"), Boundary("L"))
    (part,) = parse_body("!(W)616263!(B)")
    assert part.left_boundary is None and part.right_boundary == Boundary("B", negated=True)
    assert part.variants[0][0].allowed == ALNUM  # '!(W)' first: one alphanumeric byte
    first, second = parse_body("6162(B)*(W)6364")
    assert first.right_boundary == Boundary("B") and second.left_boundary == Boundary("W")
    (part,) = parse_body("61[1-2](B)626364(B)[0-3]65")
    assert part.left and part.right and part.left_boundary and part.right_boundary


@pytest.mark.parametrize("engine", ENGINES)
def test_word_boundary_bytes_on_each_side(engine: str) -> None:
    db = ndb("Left:0:*:(B)6b6c6d\nRight:0:*:6b6c6d(B)\nMiddle:0:*:6b6c(B)6d6e\n", engine)
    for byte in range(256):
        before = names(db, b"\x80" + bytes([byte]) + b"klm\x80")
        after = names(db, b"\x80klm" + bytes([byte]) + b"\x80")
        inside = names(db, b"\x80kl" + bytes([byte]) + b"mn\x80")
        assert ("Left" in before) is (byte in WORD_BEFORE), byte
        assert ("Right" in after) is (byte in WORD_AFTER), byte
        assert ("Middle" in inside) is (byte in WORD_ANY), byte
    assert names(db, b"klm") == {"Left", "Right"}  # the data's edges are boundaries


@pytest.mark.parametrize("engine", ENGINES)
def test_line_and_word_markers(engine: str) -> None:
    db = ndb("LineL:0:*:(L)616263\nLineR:0:*:646566(L)\nLineM:0:*:3132(L)3334\n"
             "NotLine:0:*:7172!(L)7374\nWordR:0:*:676869(W)\nNotWordR:0:*:6a6b6c!(W)\n", engine)
    assert names(db, b"x\nabc!") == {"LineL"}
    assert names(db, b"x\rabc!") == set()  # a CR before is no line start
    assert names(db, b"!def\r\n") == {"LineR"} and names(db, b"!def\n!") == {"LineR"}
    assert names(db, b"!def\r!") == set() and names(db, b"!def\r") == set()
    assert names(db, b"!def") == {"LineR"}
    assert names(db, b"12\n34") == {"LineM"} and names(db, b"12\r\n34") == set()
    assert names(db, b"qr\rst") == {"NotLine"} and names(db, b"qr\nst") == set()
    assert names(db, b"-ghi-") == {"WordR"} and names(db, b"-ghiZ") == set()
    assert names(db, b"-jklZ") == {"NotWordR"} and names(db, b"-jkl-") == set()
    assert names(db, b"-jkl") == set()  # a negated boundary fails at the end of the data


@pytest.mark.parametrize("engine", ENGINES)
def test_right_boundaries_wait_for_their_bytes_at_every_split(engine: str) -> None:
    db = ndb("LineR:0:*:646566(L)\nWordR:0:*:676869(B)\nNot:0:*:6a6b6c!(B)\n", engine)
    for data, expected in [(b"..def\r\n..", {"LineR"}), (b"..def\r", set()),
                           (b"ghi", {"WordR"}), (b"..ghi\"", {"WordR"}), (b"jkl", set()),
                           (b"jklm", {"Not"}), (b"..def\r.", set())]:
        for split in range(len(data) + 1):
            assert split_names(db, data, split) == expected, (data, split)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_disk_stream_never_ends(engine: str) -> None:
    db = ndb("WordR:0:*:676869(B)\n", engine)
    stream = db.open_stream()  # no length: a disk
    assert stream.feed(b"..ghi") == []
    assert [m.name for m in stream.feed(b" ")] == ["WordR"]
    stream.close()


def test_names_with_spaces_and_the_clam_suffix() -> None:
    signatures = parse_database(b"1024-PrScr #1:0:*:616263\nFoo Bar (Clam):0:*:646566\n"
                                b"Cut (Clam) here:0:*:676869\n F\xc3\xb6o :0:*:6a6b6c\n",
                                kind="ndb", source="t")
    assert [s.name for s in signatures] == ["1024-PrScr #1", "Foo Bar", "Cut", " F\u00f6o "]
    (db,) = parse_database(b"With: colon=616263\n", kind="db", source="t")
    assert db.name == "With: colon"


def test_lines_libclamav_skips_quietly() -> None:
    assert parse_database(b"Skip==616263\nKeep=616263\n", kind="db", source="t")[0].name == "Keep"
    data = (b"Far:99:*:zz\nMin:0:*:6162zz:999:x\nLate:0:*:616263:217\n"
            b"Gone:0:*:616263::\nKeep:0:*:616263:\n")  # an empty FLEVEL is 0 (cli_isnumber)
    assert [s.name for s in parse_database(data, kind="ndb", source="t")] == ["Keep"]


@pytest.mark.parametrize(
    ("offset", "kind", "start", "shift", "applied"),
    [("", "absolute", 0, 0, True), ("3,", "absolute", 3, 0, True),
     ("EOF-", "eof", 0, 0, True), ("$1$", "macro", 0, 0, False),
     ("$ 3junk", "macro", 0, 0, False), ("4294967295", "any", 2**32 - 1, 0, True),
     ("4294967295,5", "any", 2**32 - 1, 5, True), ("4294967298", "absolute", 2, 0, True),
     ("99999999999999999999", "any", 2**32 - 1, 0, True), ("1,4294967297", "absolute", 1, 1, True),
     ("EOF-4294967307", "eof", 11, 0, True)],
)
def test_offsets_read_as_cli_caloff_reads_them(
    offset: str, kind: str, start: int, shift: int, applied: bool
) -> None:
    (signature,) = parse_database(f"T:0:{offset}:616263\n".encode(), kind="ndb", source="t")
    assert (signature.offset.kind, signature.offset.start, signature.offset.shift) == (
        kind, start, shift)
    assert (signature.not_applied is None) is applied


@pytest.mark.parametrize("offset", ["VI", "VIanything", "SE", "SL+", "S1+2junk", "S +1+ 2",
                                    "EP+", "EP-3,4"])
def test_executable_offsets_load_on_executable_targets_only(offset: str) -> None:
    (signature,) = parse_database(f"T:1:{offset}:616263\n".encode(), kind="ndb", source="t")
    assert signature.offset.kind == "executable" and signature.not_applied is not None


@pytest.mark.parametrize("engine", ENGINES)
def test_gaps_with_a_maximum_of_zero_are_unbounded(engine: str) -> None:
    db = ndb("Zero:0:*:414243{0}444546\nNoMax:0:*:313233{2-0}343536\n"
             "UpToZero:0:*:515253{-0}545556\nNever:0:*:616263{2-1}646566\n", engine)
    assert db.signatures[3].not_applied is not None
    for gap in range(6):
        fill = b"\x80" * gap
        found = names(db, b"ABC" + fill + b"DEF|123" + fill + b"456|QRS" + fill + b"TUV|abc"
                      + fill + b"def")
        assert found == {"Zero", "UpToZero"} | ({"NoMax"} if gap >= 2 else set()), gap


# ------------------------------------------------------------------------ Hypothesis

CONSTRUCT_DB = (
    "Nest:0:*:6b6c(6d|(6e|6f)6d)6b6c\n"
    "LeftB:0:*:(B)6b6c6d\nRightL:0:*:6c6d6e(L)\nMidW:0:*:6b6c(W)6d6e\n"
    "NotR:0:*:6d6e6f!(W)\nNotMidL:0:*:6e6f!(L)6b6c\nParts:0:*:(W)6b6c*6d6e(B)\n"
)
ALPHABET = b"klmno \n\r-_A."


@pytest.mark.skipif(not HYPERSCAN_AVAILABLE, reason="hyperscan is not installed")
@given(data=st.binary(max_size=80).map(lambda b: bytes(ALPHABET[x % len(ALPHABET)] for x in b)),
       split=st.integers(0, 80))
@settings(max_examples=300, deadline=None)
def test_engines_agree_on_the_new_constructs(data: bytes, split: int) -> None:
    by_engine = [ndb(CONSTRUCT_DB, engine) for engine in ("ac", "hyperscan")]
    whole = [sorted(db.scan(data), key=repr) for db in by_engine]
    assert whole[0] == whole[1]
    split = min(split, len(data))
    assert split_names(by_engine[0], data, split) == split_names(by_engine[1], data, split) == {
        m.name for m in whole[0]}


# ------------------------------------------------------------------------ against clamscan


def random_files(tmp_path: Path, probes: list[bytes], seed: int, count: int) -> list[Path]:
    """Files of filler no probe byte occurs in, each with a few probes, some at the edges."""
    rng = random.Random(seed)
    files = []
    for number in range(count):
        data = bytearray(rng.choice(b"\x80\x90\xa0\xb0") for _ in range(rng.randrange(8, 200)))
        for probe in rng.sample(probes, min(4, len(probes))):
            at = rng.choice([0, len(data), rng.randrange(len(data) + 1)])
            data[at:at] = probe
        path = tmp_path / f"p{number:03}.bin"
        path.write_bytes(bytes(data))
        files.append(path)
    return files


def compare(tmp_path: Path, database: str, files: list[Path]) -> set[tuple[str, str]]:
    path = tmp_path / "language.ndb"
    path.write_text(database)
    expected = clamscan(path, files)
    for engine in ENGINES:
        assert ours(path, files, engine) == expected, engine
    return expected


@needs_clamscan
def test_boundaries_agree_with_clamscan_byte_by_byte(tmp_path: Path) -> None:
    database = ("LB:0:*:(B)6b6c6d\nRB:0:*:6b6c6d(B)\nMB:0:*:6b6c(B)6d6e\n"
                "LL:0:*:(L)4b4c4d\nRL:0:*:4b4c4d(L)\nML:0:*:4b4c(L)4d4e\n"
                "LW:0:*:(W)5b5c5d\nRW:0:*:5b5c5d(W)\nMW:0:*:5b5c(W)5d5e\n"
                "NLB:0:*:!(B)7b7c7d\nNRB:0:*:3b3c3d!(B)\nNML:0:*:2b2c!(L)2d2e\n"
                "NRL:0:*:1b1c1d!(L)\nNRW:0:*:0b0c0d!(W)\n")
    bodies = [b"klm", b"kl?mn", b"KLM", b"KL?MN", b"[\\]", b"[\\?]^", b"{|}", b";<=",
              b"+,?-.", b"\x1b\x1c\x1d", b"\x0b\x0c\x0d"]
    files = []
    for byte in range(256):
        content = bytearray()
        for body in bodies:  # the byte before, inside (at '?') and after every body
            mark = bytes([byte])
            content += b"\x80" + mark + body.replace(b"?", mark) + mark + b"\x80"
        path = tmp_path / f"b{byte:02x}.bin"
        path.write_bytes(bytes(content))
        files.append(path)
    for extra, content in [("edges1", b"klm\x80KLM\x80[\\]"), ("edges2", b"[\\]\x80KLM\x80klm"),
                           ("crlf", b"\x80KLM\r\n\x80\rKLM\r\x80\x1b\x1c\x1d\r\n"),
                           ("crlf2", b"\x80KL\r\nMN\x80+,\r\n-.\x80\x1b\x1c\x1d\r")]:
        (tmp_path / extra).write_bytes(content)
        files.append(tmp_path / extra)
    expected = compare(tmp_path, database, files)
    assert {name for _, name in expected} == {line.split(":")[0] for line in database.split()}


@needs_clamscan
def test_nested_alternations_agree_with_clamscan(tmp_path: Path) -> None:
    database = ("Issue:0:*:6161(6a6a|66(6767|6868)66|6969)6161\n"
                "Deep:0:*:7071(72|(73|(74|75)??)76)7778\n"
                "Wild:0:*:5152(53|(54|55){2}56|57(58|59)5a)5b5c\n"
                "Empty:0:*:3132(33||3435|)3637\n"
                "Parts:0:*:4142(43|(44|45))*4647(48|49)4a\n")
    probes = [b"aajjaa", b"aafggfaa", b"aafhhfaa", b"aaiiaa", b"aafghfaa", b"aaffaa",
              b"pqrwx", b"pqsvwx", b"pqt\x00vwx", b"pqu\xffvwx", b"pqrvwx", b"pqtvwx",
              b"QRS[\\", b"QRT\x01\x02V[\\", b"QRU\x80\x80V[\\", b"QRWY Z[\\", b"QRWZ[\\",
              b"12367", b"124567", b"1267", b"ABC\x80FGHJ", b"ABEFGIJ", b"ABDFGJ"]
    files = random_files(tmp_path, probes, seed=10, count=60)
    expected = compare(tmp_path, database, files)
    assert {name for _, name in expected} == {"Issue", "Deep", "Wild", "Empty", "Parts"}


@needs_clamscan
def test_names_offsets_and_gaps_agree_with_clamscan(tmp_path: Path) -> None:
    database = ("1024-PrScr #1:0:*:616263\nSpaced Out (Clam):0:*:646566\n"
                "Cut (Clam) off:0:*:676869\n Lead and trail :0:*:6a6b6c\n"
                "Macro:0:$1$:6d6e6f\nHuge:0:99999999999:707172\nEmpty offset:0::414243\n"
                "Zero:0:*:313233{0}343536\nNoMax:0:*:373839{2-0}3a3b3c\nNever:0:*:4d4e4f{2-1}5051\n"
                "ExeVI:1:VI:525354\nExeS:6:S1+2:555657\n")
    probes = [b"abc", b"def", b"ghi", b"jkl", b"mno", b"pqr", b"123456", b"123\x80\x80\x80456",
              b"789:;<", b"789\x80\x80:;<", b"789\x80:;<", b"MNO\x80\x80PQ", b"MNOPQ", b"RST",
              b"UVW"]
    files = random_files(tmp_path, probes, seed=11, count=60)
    path = tmp_path / "start.bin"
    path.write_bytes(b"ABC" + b"\x80" * 8)
    files.append(path)
    expected = compare(tmp_path, database, files)
    assert {name for _, name in expected} == {"1024-PrScr #1", "Spaced Out", "Cut",
                                              " Lead and trail ", "Empty offset", "Zero", "NoMax"}


@needs_clamscan
def test_lines_clamscan_refuses_are_refused(tmp_path: Path) -> None:
    import subprocess

    from hv_emu.errors import DatabaseError
    for number, line in enumerate(["A:0:*:616263\n\nB:0:*:646566\n", "A:0:VI:616263\n",
                                   "A:0:*:6162(63|!(64|65))6667\n", "A:0:*:(B)61\n",
                                   " (Clam):0:*:616263\n", "A:0:*:6162(63|(B))6465\n",
                                   "A:0:$32$:616263\n", "A:0:*:6162(|63)6465\n"]):
        path = tmp_path / f"bad{number}.ndb"
        path.write_text(line)
        result = subprocess.run(["clamscan", "-d", str(path), "--no-summary", str(path)],
                                capture_output=True, text=True, check=False, timeout=60)
        assert result.returncode == 2 and "Malformed database" in result.stderr, line
        with pytest.raises(DatabaseError):
            parse_database(line.encode(), kind="ndb", source=path.name)
