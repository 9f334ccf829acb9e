"""Parsing ClamAV .db/.ndb databases: the accepted syntax, the refusals, and hostile input."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.signatures import (
    MAX_LINE_LENGTH,
    ByteClass,
    Choice,
    Literal,
    Offset,
    Signature,
    load_database_file,
    parse_database,
)
from tests.conftest import RFXN

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

#: The four signatures of the original design, plus EICAR: the demo's database.
SAMPLE_DB = (
    b"# hv-emu sample database\n"
    b"Aircop=32e4cd16cd1233c0cd130e07b80002b9\n"
    b"Burghofer=8e06120033ff8bf30e1fb90d02f3a4\n"
    b"Burglar=03042e8ba4050433c033db2effac09045081c70304b90a00b87677902e31054790e2f958c3\n"
    b"Carnage=e8050502002ea3b5022ec706b3029f00b440b99f02ba1000cd21b8004233c999cd21b440b91a00\n"
    b"# and the test string\n"
    b"EICAR=" + EICAR.hex().encode() + b"\n"
)


def parse_error(data: bytes, kind: str = "ndb") -> DatabaseError:
    with pytest.raises(DatabaseError) as caught:
        parse_database(data, kind=kind, source="test.db")
    return caught.value


# ------------------------------------------------------------------------ milestone 1: the spine


def test_sample_db_parses_to_five_literals() -> None:
    signatures = parse_database(SAMPLE_DB, kind="db", source="sample.db")
    assert [s.name for s in signatures] == ["Aircop", "Burghofer", "Burglar", "Carnage", "EICAR"]
    assert [s.line for s in signatures] == [2, 3, 4, 5, 7]
    aircop = bytes.fromhex("32e4cd16cd1233c0cd130e07b80002b9")
    assert signatures[0].parts[0].variants == ((Literal(aircop),),)
    assert signatures[4].parts[0].variants == ((Literal(EICAR),),)
    assert all(s.offset == Offset("any") and s.target_type == 0 for s in signatures)


def test_ndb_fields_and_crlf() -> None:
    (signature,) = parse_database(b"Foo.Bar:0:*:414243444546\r\n", kind="ndb", source="x.ndb")
    assert signature.name == "Foo.Bar"
    assert signature.parts[0].variants == ((Literal(b"ABCDEF"),),)
    assert signature.not_applied is None


@pytest.mark.skipif(not RFXN.exists(), reason=f"{RFXN} (rfxn.ndb, the real data set) is absent")
def test_rfxn_parses_completely() -> None:
    signatures = parse_database(RFXN.read_bytes(), kind="ndb", source="rfxn.ndb")
    assert len(signatures) == 1869
    assert all(s.not_applied is None for s in signatures)
    (winflood,) = [s for s in signatures if s.name == "{HEX}JS.Winflood"]
    classes = [e for e in winflood.parts[0].variants[0] if isinstance(e, ByteClass)]
    assert [c.allowed for c in classes] == [frozenset({0x22, 0x27})] * 3


@pytest.mark.parametrize(
    ("data", "kind", "line", "column", "message"),
    [
        (b"Foo=4142434\n", "db", 1, 11, "odd number of hex digits"),
        (b"# c\nFoo=4142zz44\n", "db", 2, 9, "bad hex digit 'z'"),
        (b"Foo=4142\n", "db", 1, 5, "too short"),
        (b"Foo=41\n", "db", 1, 5, "too short"),
        (b"=41424344\n", "db", 1, 1, "Empty virus name"),
        (b"Foo 41424344\n", "db", 1, 1, "expected 'Name=HexSignature'"),
        (b"Foo:0:*\n", "ndb", 1, 1, "expected 4 to 6"),
        (b"Foo:0:*:41424344:1:2:3\n", "ndb", 1, 1, "expected 4 to 6"),
        (b":0:*:41424344\n", "ndb", 1, 1, "Empty virus name"),
        (b" (Clam):0:*:41424344\n", "ndb", 1, 1, "Empty virus name"),
        (b"A:0:*:41424344\n\nB:0:*:41424344\n", "ndb", 2, 1, "empty line"),
        (b"A=41424344\n  \n", "db", 2, 1, "expected 'Name=HexSignature'"),
        (b"Foo:0:VI:41424344\n", "ndb", 1, 7, "Invalid offset type for target 0"),
        (b"Foo:0:$32$:41424344\n", "ndb", 1, 7, "at most 32 macro groups"),
        (b"Foo:0:x$1$:41424344\n", "ndb", 1, 7, "Invalid macro"),
        (b"Foo:0:3,x:41424344\n", "ndb", 1, 7, "Invalid offset shift value"),
        (b"Foo:1:Sx:41424344\n", "ndb", 1, 7, "Invalid offset string"),
        (b"Foo:1:EP+x:41424344\n", "ndb", 1, 7, "Invalid offset value"),
        (b"Foo:0:" + b"1" * 65 + b":41424344\n", "ndb", 1, 7, "Offset string too long"),
        (b"Foo:x:*:41424344\n", "ndb", 1, 5, "bad target type"),
        (b"Foo:0:huh:41424344\n", "ndb", 1, 7, "Invalid offset value"),
        (b"Foo:0:*,5:41424344\n", "ndb", 1, 7, "Invalid offset value"),
        (b"Foo:0:EP+0:41424344\n", "ndb", 1, 7, "Invalid offset type for target 0"),
        (b"Foo:3:SE1:41424344\n", "ndb", 1, 7, "Invalid offset type for target 3"),
        (b"Foo:0:*:41424344:abc\n", "ndb", 1, 18, "FLEVEL must be a number"),
        (b"Foo:0:*:4142zz\n", "ndb", 1, 13, "bad hex digit 'z'"),
        (b"Fo\x00o:0:*:41424344\n", "ndb", 1, 1, "expected 4 to 6"),  # the line ends at NUL
    ],
)
def test_errors_name_source_line_and_column(
    data: bytes, kind: str, line: int, column: int, message: str
) -> None:
    error = parse_error(data, kind)
    assert (error.source, error.line, error.column) == ("test.db", line, column)
    assert message in error.message


def test_empty_database_is_refused_as_clamav_does() -> None:
    assert parse_error(b"").message == "Empty database file"


@pytest.mark.parametrize("kind", ["db", "ndb"])
@pytest.mark.parametrize("data", [b"# only a comment\n", b"#c", b"#a\n#b\n"])
def test_a_database_of_comments_loads_with_no_signature(data: bytes, kind: str) -> None:
    assert parse_database(data, kind=kind, source="c") == []


def test_unknown_kind_is_refused() -> None:
    assert "unknown database kind" in parse_error(b"Foo=414243", kind="hdb").message


def test_one_bad_line_refuses_the_whole_database() -> None:
    error = parse_error(b"Good:0:*:41424344\nBad:0:*:41\nGood2:0:*:45464748\n")
    assert error.line == 2


# ------------------------------------------------------------------------ milestone 2: bodies


def body(text: str) -> tuple[tuple[object, ...], ...]:
    (signature,) = parse_database(f"T:0:*:{text}\n".encode(), kind="ndb", source="t.ndb")
    (part,) = signature.parts
    return part.variants


def test_wildcards_and_nibbles() -> None:
    (variant,) = body("4142??4??bc?{2}4344")
    assert variant[0] == Literal(b"AB")
    assert variant[1] == ByteClass(frozenset(range(256)))
    assert variant[2] == ByteClass(frozenset(range(0x40, 0x50)))
    assert variant[3] == ByteClass(frozenset({0x0B, 0x1B, 0x2B, 0x3B, 0x4B, 0x5B, 0x6B, 0x7B,
                                              0x8B, 0x9B, 0xAB, 0xBB, 0xCB, 0xDB, 0xEB, 0xFB}))
    assert variant[4] == ByteClass(frozenset(range(0xC0, 0xD0)))
    assert variant[5:7] == (ByteClass(frozenset(range(256))),) * 2
    assert variant[7] == Literal(b"CD")


def test_alternations() -> None:
    (variant,) = body("4142(43|44)4546")
    assert variant[1] == ByteClass(frozenset({0x43, 0x44}))
    (variant,) = body("4142!(43|44)4546")
    assert variant[1] == ByteClass(frozenset(range(256)) - {0x43, 0x44})
    (variant,) = body("4142(4344|4546)4748")
    assert variant[1] == Choice(frozenset({b"CD", b"EF"}), negated=False, width=2)
    (variant,) = body("4142!(4344|4546)4748")
    assert variant[1] == Choice(frozenset({b"CD", b"EF"}), negated=True, width=2)


def test_generic_alternation_expands_into_variants() -> None:
    variants = body("4142(43|4445|4?)4647")
    assert len(variants) == 3
    assert variants[0] == (Literal(b"ABCFG"),)
    assert variants[1] == (Literal(b"ABDEFG"),)
    assert variants[2][1] == ByteClass(frozenset(range(0x40, 0x50)))


def test_wildcards_and_ranges_split_the_body_into_parts() -> None:
    (signature,) = parse_database(
        b"T:0:*:4142*4344{-4}4546{5-}4748{2-9}494a{200}4b4c{3}4d4e\n", kind="ndb", source="t"
    )
    gaps = [(part.gap_min, part.gap_max) for part in signature.parts]
    assert gaps == [(0, 0), (0, None), (0, 4), (5, None), (2, 9), (200, 200)]
    assert signature.parts[0].variants == ((Literal(b"AB"),),)
    assert signature.parts[5].variants == ((Literal(b"KL"), *[ByteClass(frozenset(range(256)))] * 3,
                                            Literal(b"MN")),)


def test_wildcards_inside_alternations_do_not_split() -> None:
    error = parse_error(b"T:0:*:4142(43|*)4344\n")
    assert error.column == 15 and "unbounded" in error.message


def test_offsets() -> None:
    (signature,) = parse_database(b"T:0:10,5:41424344\n", kind="ndb", source="t")
    assert signature.offset == Offset("absolute", 10, 5, "10,5")
    assert signature.offset.allows(15, None) and not signature.offset.allows(16, None)
    (signature,) = parse_database(b"T:0:EOF-10,2:41424344\n", kind="ndb", source="t")
    assert signature.offset == Offset("eof", 10, 2, "EOF-10,2")
    assert [p for p in range(100) if signature.offset.allows(p, 100)] == [90, 91, 92]
    assert not signature.offset.allows(90, None)  # a disk stream has no end


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"T:1:*:41424344\n", "target type 1"),
        (b"T:6:EP+0:41424344\n", "target type 6"),
        (b"T:1:EP+10,4:41424344\n", "target type 1"),
        (b"T:9:S2+4:41424344\n", "target type 9"),
    ],
)
def test_unapplied_lines_are_accepted_and_recorded(line: bytes, reason: str) -> None:
    (signature,) = parse_database(line, kind="ndb", source="t")
    assert signature.not_applied is not None and reason in signature.not_applied


def test_flevel_outside_our_level_skips_the_line_quietly() -> None:
    lines = (b"A:0:*:41424344:1\nB:0:*:41424344:9999\nC:0:*:41424344:1:2\n"
             b"D:0:*:41424344:216:216\nE:0:*:41424344:217\n")
    signatures = parse_database(lines, kind="ndb", source="t")
    assert [s.name for s in signatures] == ["A", "D"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*41424344", "empty part"),
        ("41424344*", "empty part"),
        ("4142**4344", "empty part"),
        ("4142{x}4344", "bad range '{x}'"),
        ("4142*43", "too short"),
        ("4142*43??44", "Can't find a static subpattern of length 2"),
        ("4142" + "*4142" * 64, "more than 64 parts"),
        ("4142(43|*)4344", "Alternative match cannot contain unbounded wildcards"),
        ("4142(43|{1-2})4344", "Alternative match cannot contain unbounded wildcards"),
        ("4142[1-2]4344", "one byte on one side"),
        ("4142(43|(B))4445", "boundary '(B)' inside an alternation"),
        ("4142(43|!(44|45))4647", "Generic alternates cannot contain negations"),
        ("4142(" + "|".join(["(43|44)"] * 16) + ")4546", "nesting limit"),
        ("4142!((43|44)|45)4647", "cannot be negated"),
        ("(B)41", "too short"),
        ("4142*(B)*4344", "empty part"),
        ("4142(43|{0})4445", "Alternative match cannot contain unbounded wildcards"),
        ("4142!(43|4445)4344", "cannot be negated"),
        ("41??42??43", "Can't find a static subpattern of length 2"),
        ("4142(43|44", "unterminated '('"),
        ("4142{4", "unterminated '{'"),
        ("4142(|44)45", "empty alternative"),
        ("4142!43", "'!' must be followed by '('"),
        ("4142(43|(44)45", "unterminated '('"),
        ("4142(43|44))45", "unexpected character ')'"),
        ("4142(43|4x)45", "bad hex digit 'x'"),
    ],
)
def test_unsupported_or_malformed_bodies_are_refused(text: str, message: str) -> None:
    assert message in parse_error(f"T:0:*:{text}\n".encode()).message


def test_generic_alternations_expansion_is_bounded() -> None:
    # 4 generic alternations of 3 lengths each: 81 variants, over the bound.
    alternation = "(41|4142|414243)"
    assert "variants" in parse_error(f"T:0:*:4546{alternation * 4}\n".encode()).message


def test_fixed_skips_count_against_the_element_budget() -> None:
    error = parse_error(b"T:0:*:4142" + b"{127}" * 600 + b"4344\n")
    assert "more than 65536 elements" in error.message


def test_alternation_products_count_against_the_element_budget() -> None:
    wide = "(41|4142)" * 6 + "43??" * 1100  # 64 variants of over 2,200 elements each
    assert "more than 65536 elements" in parse_error(f"T:0:*:{wide}??\n".encode()).message


def test_overlong_line_is_refused_before_parsing() -> None:
    error = parse_error(b"T:0:*:" + b"41" * MAX_LINE_LENGTH + b"\n")
    assert error.line == 1 and "longer than" in error.message


# ------------------------------------------------------------------------ files


def test_load_database_file(tmp_path: Path) -> None:
    path = tmp_path / "sample.db"
    path.write_bytes(SAMPLE_DB)
    assert load_database_file(path) == (SAMPLE_DB, "db")
    with pytest.raises(ConfigError, match="suffix"):
        load_database_file(tmp_path / "sample.cvd")
    with pytest.raises(ConfigError, match="cannot read"):
        load_database_file(tmp_path / "missing.ndb")


# ------------------------------------------------------------------------ hostile input

_TOKENS = st.sampled_from(
    ["41", "42", "4", "?", "??", "a?", "?a", "(", ")", "|", "!", "{", "}", "-", "*", "[", "]", ":",
     "=", "1", "12", "128", "EOF-", "EP+", "S1+", "SE", ",", "#", "\n", "\r", "z", " ", "B", "L"]
)
_LINES = st.lists(_TOKENS, max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINES, max_size=6), st.sampled_from(["db", "ndb"]))
def test_structured_garbage_only_raises_database_error(lines: list[str], kind: str) -> None:
    data = "\n".join(lines).encode("latin-1")
    try:
        parse_database(data, kind=kind, source="guest")
    except DatabaseError as error:
        assert error.source == "guest"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["db", "ndb"]))
def test_random_bytes_only_raise_database_error(data: bytes, kind: str) -> None:
    with contextlib.suppress(DatabaseError):
        parse_database(data, kind=kind, source="guest")


@given(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
    st.binary(min_size=1, max_size=40),
    st.sampled_from(["\n", "\r\n", "\r\r\n"]),
)
@settings(max_examples=200, deadline=None)
def test_the_plain_line_shortcut_parses_as_the_general_path(
    name: str, body: bytes, end: str
) -> None:
    """``Name:0:*:HEX`` takes a shortcut; target ``*`` (also 0) takes the general path."""

    def parsed(target: str) -> list[Signature] | str:
        line = f"{name}:{target}:*:{body.hex()}{end}".encode()
        try:
            return parse_database(line, kind="ndb", source="t.ndb")
        except DatabaseError as error:
            return str(error).replace(f":{target}:", ":")  # the same error, column aside
    shortcut, general = parsed("0"), parsed("*")
    if isinstance(shortcut, str) or isinstance(general, str):
        assert isinstance(shortcut, str) and isinstance(general, str)
    else:
        assert shortcut == general


@pytest.mark.skipif(not RFXN.exists(), reason=f"{RFXN} (rfxn.ndb) is absent")
def test_rfxn_parses_the_same_through_the_general_path() -> None:
    data = RFXN.read_bytes()
    general = data.replace(b":0:*:", b":*:*:")
    assert general != data
    assert parse_database(data, kind="ndb", source="r") == parse_database(
        general, kind="ndb", source="r")
