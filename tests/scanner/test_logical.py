"""Logical signatures (.ldb): the expression's semantics, the line parser, streams, and clamscan.

Unit tests of the expression (how ``cli_ac_chklsig`` groups and counts), Hypothesis tests of the
parsers (never anything but the documented error, with file, line and column), stream tests
(every chunk split gives the one-shot answer; a disk stream decides on the bytes so far), and
differential runs against raw-mode clamscan (skipped without it): which lines load, and which
(file, name) pairs a generated corpus gives."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner.database import HYPERSCAN_AVAILABLE, SignatureDatabase, compile_database
from hv_emu.scanner.logical import parse_ldb_database, parse_ldb_line, tokenize
from hv_emu.scanner.logical_expr import Leaf, LogicError, Node, holds, parse
from tests.rigs.scanner import RAW_MODE, clamscan, ours

if TYPE_CHECKING:
    from guest_tool.disk_programs import Via

ENGINES = ["ac"] + (["hyperscan"] if HYPERSCAN_AVAILABLE else [])
needs_clamscan = pytest.mark.skipif(shutil.which("clamscan") is None,
                                    reason="clamscan (Debian package clamav) absent")


def ldb(text: str, engine: str = "ac") -> SignatureDatabase:
    return compile_database(text.encode(), kind="ldb", version=1, source="t.ldb", engine=engine)


def names(db: SignatureDatabase, data: bytes) -> set[str]:
    return {m.name for m in db.scan(data)}


# ------------------------------------------------------------------------ the expression


def test_operators_group_as_libclamav_reads_them() -> None:
    # The first operator at the top level splits; inside parentheses, the last one at depth 1.
    assert parse("0&1|2")[0] == Node("&", Leaf(0), Node("|", Leaf(1), Leaf(2)))
    assert parse("(0&1|2)")[0] == Node("|", Node("&", Leaf(0), Leaf(1)), Leaf(2))
    group = Node("|", Node("|", Leaf(0), Leaf(1)), Leaf(2), ">", 5, 2)
    assert parse("((0|1|2)>5,2)&(3|1)")[0] == Node("&", group, Node("|", Leaf(3), Leaf(1)))
    assert parse("0=0&1>2")[0] == Node("&", Leaf(0, "=", 0), Leaf(1, ">", 2))
    assert parse(" 1 ")[1] == 1 and parse("0>-1")[0] == Leaf(0, ">", 2**32 - 1)


@pytest.mark.parametrize("text", ["", "&1", "0&", "(0", "0)", "(0)=1", "0>", "0=x",
                                  "(0|1)>", "a", "()", "(0|1)2", "0&(1", "(&1)", "((0)"])
def test_expressions_clamscan_refuses(text: str) -> None:
    with pytest.raises(LogicError):
        parse(text)


def test_counts_groups_and_distinct_subsignatures() -> None:
    def check(text: str, counts: list[int]) -> bool:
        return holds(parse(text)[0], counts)

    assert check("0&1", [1, 2]) and not check("0&1", [1, 0])
    assert check("0|1", [0, 3]) and not check("0|1", [0, 0])
    assert check("0=2", [2]) and not check("0=2", [3]) and check("0=0", [0])
    assert check("0>1", [2]) and not check("0>1", [1]) and check("0<2", [1]) and check("0<2", [0])
    # A group counts the matches of its operands when its operator holds; ",Y": Y distinct.
    assert check("(0|1|2)>2", [1, 1, 1]) and not check("(0|1|2)>2", [1, 1, 0])
    assert check("(0|1|2)>2,2", [3, 0, 0]) is False and check("(0|1|2)>2,2", [2, 1, 0])
    assert check("(0&1)=0", [1, 0]) and not check("(0&1)=0", [1, 1])  # a failed & counts 0
    assert check("(0|1)=3", [1, 2]) and not check("(0|1)=3", [3, 1])
    # "0=0" holds and sets its bit; a group's count passes up, its subsignatures do not.
    assert check("((0=0|1)>0,2)", [0, 1]) and not check("(((0|1)>0)|2)>0,2", [1, 1, 0])


# ------------------------------------------------------------------------ lines


def test_fields_blocks_and_subsignatures() -> None:
    lsig = parse_ldb_line("Sig (Clam);Engine:81-255,Target:0;0&1;EOF-4:616263::iwa;6465", "x", 1)
    assert lsig is not None and lsig.name == "Sig" and lsig.subsigs == 2
    assert [number for number, _ in lsig.bodies] == [0, 0, 1]  # wide, then ascii, then 1
    assert lsig.bodies[0][1].offset.text == "EOF-4" and lsig.not_applied is None
    # Lines clamscan skips quietly: another engine level, an unknown attribute, target 15+.
    for skipped in ["A;Engine:217-255,Target:0;0;414243", "A;Engine:51-255,Target:0,Foo:1;0;4142",
                    "A;Target:15;0;414243", "A;Engine:51-99,Target:0;0;zz"]:
        assert parse_ldb_line(skipped, "x", 1) is None, skipped
    not_applied = {
        "A;Target:1;0;414243": "target type 1",
        "A;Engine:81-255,Target:0;0&1;414243;0/abc/": "PCRE",
        "A;Engine:51-255,Target:0;0&1;414243;${1-2}3$": "macro",
        "A;Engine:51-255,Target:0;0;0(>>2#hb2#=0)": "byte-compare",
        "A;Engine:51-255,Target:0,Container:CL_TYPE_ZIP;0;414243": "container",
    }
    for line, why in not_applied.items():
        lsig = parse_ldb_line(line, "x", 1)
        assert lsig is not None and why in (lsig.not_applied or ""), line


@pytest.mark.parametrize(("line", "column"), [
    ("A;Target:0;0&1;414243", 12),  # two subsignatures named, one given
    ("A;Target:0;0", 1),  # fewer than 4 fields
    ("A;Target:0,Engine:51-255;0;414243", 12),  # Engine not first
    ("A;Engine:0-255;0;414243", 3),  # no target
    ("A;Target:x;0;414243", 3),
    ("A;FileSize:1-2,Target:0;0;414243", 3),  # a new attribute without Engine >= 51
    ("A;Target:0;0;4142g3", 18),
    ("A;Target:0;0;41::q", 18),
    ("A;Target:0;0;!(41|42)4344::i", 14),
    ("A;Target:0;0;$1$", 14),
    ("A;Target:0;0;abc/x", 14),
    (";Target:0;0;414243", 1),
])
def test_bad_lines_name_their_column(line: str, column: int) -> None:
    with pytest.raises(DatabaseError) as refused:
        parse_ldb_database(f"# a comment\n{line}\n".encode(), source="bad.ldb")
    assert (refused.value.line, refused.value.column) == (2, column), refused.value


def test_tokenizer_keeps_delimiters_inside_a_regular_expression() -> None:
    assert [t for _, t in tokenize("a;b;0;x/;/y;z", ";", 68, 2)] == ["a", "b", "0", "x/;/y", "z"]
    assert [t for _, t in tokenize("a;b", ";", 1, 2)] == ["a"]


_LINE_ALPHABET = st.sampled_from([*"0123456789abcdefABCDEF;:,-()|&=<>!?*{}[]/$#iwfaLBW ",
                                  "Target:0", "Engine:81-255", "EOF-", "::", "(B)", ";0;"])


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE_ALPHABET, max_size=40).map("".join))
def test_line_parser_raises_only_its_error(text: str) -> None:
    try:
        parse_ldb_database(f"Name;{text}\n".encode(), source="fuzz.ldb")
    except DatabaseError as error:
        assert error.line == 1 and error.column >= 0


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list("0123(|&)=<>,  -+9x")), max_size=30).map("".join))
def test_expression_parser_raises_only_its_error(text: str) -> None:
    try:
        tree, largest = parse(text)
    except LogicError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert largest >= 0
        if largest < 2**12:
            assert holds(tree, [1] * (largest + 1)) in (True, False)


# ------------------------------------------------------------------------ streams


@pytest.mark.parametrize("engine", ENGINES)
def test_modifiers(engine: str) -> None:
    db = ldb("I;Target:0;0;68656c6c6f::i\nW;Target:0;0;68656c6c6f::w\n"
             "WA;Target:0;0=2;68656c6c6f::wa\nF;Target:0;0;68656c6c6f::f\n"
             "N;Target:0;0;4?6364::i\n", engine)
    assert names(db, b"xx HeLLo yy") == {"I"} and names(db, b"xx hello.") == {"I", "F"}
    assert names(db, b"xxhelloyy") == {"I"}  # not a full word
    assert names(db, b"h\0e\0l\0l\0o\0 hello") == {"I", "W", "WA", "F"}
    assert names(db, b"Bcd") == {"N"} and names(db, b"bcd") == set()  # nibbles stay raw


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_are_distinct_starts(engine: str) -> None:
    db = ldb("Three;Target:0;0=3;616161\nSize;Engine:51-255,Target:0,FileSize:6-6;0;6161\n",
             engine)
    assert names(db, b"aaaaa") == {"Three"}  # starts 0, 1, 2
    assert names(db, b"aaaaaa") == {"Size"}  # four starts; six bytes
    assert names(db, b"aaa-aaa-aaa") == {"Three"}


def _corpus_database() -> str:
    return "\n".join([
        "Eq2;Target:0;0=2;6c6f6f6b",
        "Gt1Lt3;Target:0;0>1&0<3;7a6f6f6d",
        "Prec;Target:0;0&1|2;616c706861;6265746121;67616d6d61",
        "PrecGroup;Target:0;(0&1|2);616c706861;6265746121;67616d6d61",
        "Group;Target:0;((0|1|2)>2,2)&(3|1);616c706861;6265746121;67616d6d61;64656c7461",
        "GroupEq;Target:0;((0|1)=3)&2;6f6d656761;7369676d61;6b61707061",
        "Negate;Target:0;0&1=0;6b61707061;64656c7461",
        "Absolute;Target:0;0&1;0:2a2a2a;6f6d656761",
        "Float;Target:0;0;4,20:2b2b2b2b",
        "Eof;Target:0;0;EOF-12,8:2d2d2d2d",
        "NoCase;Engine:81-255,Target:0;0&1;6c6f6f6b::i;7a6f6f6d",
        "Wide;Engine:81-255,Target:0;0;7369676d61::w",
        "WideAscii;Engine:81-255,Target:0;0>1;7369676d61::wa",
        "Full;Engine:81-255,Target:0;0;6f6d656761::f",
        "FullNoCase;Engine:81-255,Target:0;0;616c706861::fi",
        "Wild;Target:0;0&1;6c6f??6b*7a6f6f;(61|62)6c70",
        "Size;Engine:51-255,Target:0,FileSize:100-600;0;6b61707061",
        "Skipped;Engine:300-400,Target:0;0;6c6f6f6b",
        "Elsewhere;Target:1;0;6c6f6f6b",
        "Absent;Target:0;(0|1)<1;71757578;6c6f6f6b",  # holds with no match at all
    ]) + "\n"


_PROBES = [b"look", b"LOOK", b"Look", b"zoom", b"alpha", b" alpha ", b"ALPHA-", b"beta!",
           b"gamma", b"delta", b"omega", b" omega.", b"xomega", b"sigma", b"s\0i\0g\0m\0a\0",
           b"kappa", b"***", b"++++", b"----", b"lo\x00k\x80zoo", b"alp", b"blp", b"aaaa"]


def _corpus(tmp_path: Path, seed: int, count: int) -> list[Path]:
    rng = random.Random(seed)
    files = []
    for number in range(count):
        filler = bytes(rng.choice(b"\x80\x90\xa0\xb0\n ") for _ in range(rng.randrange(6, 700)))
        data = bytearray(filler)
        for probe in rng.sample(_PROBES, rng.randrange(0, 6)):
            for _ in range(rng.choice([1, 1, 2, 3])):
                at = rng.choice([0, len(data), rng.randrange(len(data) + 1)])
                data[at:at] = probe
        path = tmp_path / f"c{number:03}.bin"
        path.write_bytes(bytes(data))
        files.append(path)
    for number, data in enumerate([b"***\x80omega\x80", b"\x80***omega", b"omega sigma sigma kappa",
                                   b"omega sigma kappa\x80\x80", b"sigmasigmasigmakappa\x80"]):
        path = tmp_path / f"h{number}.bin"
        path.write_bytes(data)
        files.append(path)
    return files


@needs_clamscan
def test_generated_corpus_agrees_with_clamscan(tmp_path: Path) -> None:
    database = tmp_path / "corpus.ldb"
    database.write_text(_corpus_database())
    files = _corpus(tmp_path, seed=10, count=150)
    expected = clamscan(database, files)
    for engine in ENGINES:
        assert ours(database, files, engine) == expected, engine
    found = {name for _, name in expected}
    assert found >= {"Eq2", "Gt1Lt3", "Prec", "PrecGroup", "Group", "GroupEq", "Negate",
                     "Absolute", "Float", "Eof", "NoCase", "Wide", "WideAscii", "Full",
                     "FullNoCase", "Wild", "Size", "Absent"}, found  # every form was exercised
    assert not found & {"Skipped", "Elsewhere"}


@needs_clamscan
@pytest.mark.parametrize("line", [
    "A;Target:0;0;414243", "A;Target:0;(0)=1;414243", "A;Target:0;((0));414243",
    "A;Target:0;(0|1)2;4142;4344", "A;Target:0;0&1|2;4142;4344;4546",
    "A;Target:0;0>-1;414243", "A;Target:0;0=1,2;414243", "A;Target:0,Engine:51-255;0;414243",
    "A;Engine:51-255;0;414243", "A;Engine:51-255,Target:0,FileSize:1-;0;414243",
    "A;Target:0;0;4142", "A;Target:0;0;41", "A;Target:0;0;!(41|42)4344::i",
    "A;Target:0;0;414243::x", "A;Target:0;0;5:414243::wi", "A;Target:0;0;414243:",
    "A;Target:0;;4142",
    "A;Target:0;0;41424344[1-2]45::f", "A;Target:0;0;4142434445[1-2]46::f",
    "A;Target:0;0;(41|42)4344::w", "A;Target:0;0 ;414243", "A;Target:0;1;41;42",
])
def test_lines_load_where_clamscan_loads_them(tmp_path: Path, line: str) -> None:
    path = tmp_path / "one.ldb"
    path.write_text(line + "\n")
    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"\x80" * 16)
    binary = shutil.which("clamscan")
    assert binary is not None
    result = subprocess.run([binary, "-d", str(path), *RAW_MODE, str(sample)],
                            capture_output=True, text=True, check=False, timeout=60)
    loads = result.returncode in (0, 1)
    try:
        parse_ldb_database(path.read_bytes(), source="one.ldb")
    except DatabaseError:
        assert not loads, f"clamscan loads it: {line}"
    else:
        assert loads, f"clamscan refuses it: {line}: {result.stderr.strip()}"


@pytest.mark.parametrize("engine", ENGINES)
def test_every_chunk_split_gives_the_one_shot_answer(engine: str) -> None:
    db = ldb(_corpus_database(), engine)
    rng = random.Random(4)
    data = b"\x80" * 5 + b"look" + b"\x90" * 7 + b"look lOOk alpha gamma ***" + b"\xa0" * 30
    data += b"----"
    data += b"zoom s\0i\0g\0m\0a\0 sigma " + b"\xb0" * 9
    whole = names(db, data)
    assert {"Eq2", "NoCase", "Prec", "WideAscii", "Wide"} <= whole
    for split in range(len(data) + 1):
        second = rng.randrange(split, len(data) + 1)
        stream = db.open_stream(len(data))
        found = stream.feed(data[:split]) + stream.feed(data[split:second]) + stream.feed(
            data[second:])
        stream.close()
        assert {m.name for m in found} == whole, (split, second)


def test_a_disk_stream_decides_on_the_bytes_so_far() -> None:
    db = ldb("Both;Target:0;0&1;616263;646566\nNone;Target:0;0=0;78797a\n"
             "Size;Engine:51-255,Target:0,FileSize:1-99;0;616263\n")
    stream = db.open_stream()  # no length: a disk write stream
    first = stream.feed(b"--abc--")
    assert [m.name for m in first] == ["None"]  # holds before anything matched
    assert (first[0].start, first[0].end) == (0, 7)  # vacuous: the chunk that decided it
    second = stream.feed(b"--def--")
    assert [(m.name, m.start, m.end) for m in second] == [("Both", 9, 12)]
    assert stream.feed(b"abc def") == []  # each fires once per stream
    stream.close()


def test_a_guest_write_stream_is_scanned_with_logical_signatures(tmp_path: Path) -> None:
    """End to end: a guest writes 3 sectors by PIO, one command each; the two subsignatures lie
    in different commands; the signature fires on the write that completes it, and zero-fill
    clears that subsignature's bytes (the earlier one is committed, not part of the match)."""
    from guest_tool.disk_programs import build_disk_write_program
    from hv_emu.machine import Machine, MachineConfig

    first, second = b"logical-one", b"LOGICAL-TWO"
    database = tmp_path / "t.ldb"
    database.write_text(f"Two.Parts;Engine:81-255,Target:0;0&1>1;{first.hex()};"
                        f"{b'logical-two'.hex()}::i\nNever;Target:0;0&1;{first.hex()};4142434445\n")
    data = bytearray(b"\x90" * 3 * 512)
    data[100 : 100 + len(first)] = first
    data[600 : 600 + len(second)] = second
    data[1100 : 1100 + len(second)] = second.lower()
    machine = Machine(MachineConfig(timeout=10.0, disk=tmp_path / "disk.img", disk_size_mib=1,
                                    db=database, on_detect=("warn", "zero-fill")))
    machine.load(build_disk_write_program(bytes(data), 40, "pio", per_command=1).image)
    assert machine.run().halted
    [event] = machine.events.of("detection")
    assert (event["signature"], event["lba"], event["offset"]) == ("Two.Parts", 42, 1100 - 1024)
    machine.close()
    image = (tmp_path / "disk.img").read_bytes()[40 * 512 : 43 * 512]
    expected = bytearray(data)
    expected[1100 : 1100 + len(second)] = bytes(len(second))
    assert image == bytes(expected)


@pytest.mark.parametrize(("via", "sectors", "per_command", "written"),
                         [("pio", 1, 1, 512), ("pio", 3, 1, 512), ("dma", 3, 3, 1536)])
def test_a_vacuous_detection_names_the_write_that_decided_it(
    tmp_path: Path, via: Via, sectors: int, per_command: int, written: int
) -> None:
    """A signature that holds with no match (``0<1``) is decided at the run's first write: the
    detection is that write, its first LBA, offset 0, its length; zero-fill clears it (the
    tester's case: a burghofer write to LBA 100 was reported at LBA 101 with length 0)."""
    from guest_tool.disk_programs import build_disk_write_program
    from hv_emu.machine import Machine, MachineConfig

    database = tmp_path / "lt.ldb"
    database.write_text("L;Target:0;0<1;6c6f6f6b\n")
    payload = bytes.fromhex("8e06120033ff8bf30e1fb90d02f3a4") * (sectors * 512 // 15)
    machine = Machine(MachineConfig(timeout=10.0, disk=tmp_path / "disk.img", disk_size_mib=1,
                                    db=database, on_detect=("warn", "zero-fill")))
    machine.load(build_disk_write_program(payload, 100, via, per_command=per_command).image)
    assert machine.run().halted
    [event] = machine.events.of("detection")  # the run's first write (a PIO block) decides it
    assert (event["signature"], event["lba"], event["offset"], event["length"]) == (
        "L", 100, 0, written)
    machine.close()
    image = (tmp_path / "disk.img").read_bytes()[100 * 512 : (100 + sectors) * 512]
    padded = payload + bytes(sectors * 512 - len(payload))
    assert image == bytes(written) + padded[written:]


def test_hv_emu_scan_reports_logical_signatures_and_what_it_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hv_emu.cli.main import main
    from hv_emu.cli.scan_parallel import splittable

    database = tmp_path / "d"
    database.mkdir()
    (database / "a.ldb").write_text("Both;Target:0;0&1;616263;646566\n"
                                    "Regex;Engine:81-255,Target:0;0&1;616263;0/a.c/\n")
    (database / "b.ndb").write_text("Body:0:*:78797a\n")
    sample = tmp_path / "sample.txt"
    sample.write_bytes(b"-- abc -- def -- xyz --")
    code = main(["scan", "--db", str(database), "--no-cache", str(sample)])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == f"{sample}: Body FOUND\n{sample}: Both FOUND\n"
    assert f"{database / 'a.ldb'}:2: Regex: subsignature 1: a PCRE subsignature is not " \
           "implemented; not applied" in err
    assert "Known viruses: 3" in err
    db = compile_database(b"Body:0:*:78797a\n", kind="ndb", version=1, source="b")
    assert splittable(db) and not splittable(ldb("A;Target:0;0;616263\n"))


def test_hv_emu_run_names_the_logical_signatures_it_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from guest_tool.assemble import assemble
    from hv_emu.cli.main import main

    guest = tmp_path / "guest.bin"
    guest.write_bytes(assemble("hlt", mode=64, address=0x100000))
    database = tmp_path / "t.ldb"
    database.write_text("Fine;Target:0;0;616263\nRegex;Engine:81-255,Target:0;0&1;616263;0/a.c/\n")
    assert main(["run", str(guest), "--quiet", "--db", str(database)]) == 0
    err = capsys.readouterr().err
    assert f"hv-emu: warning: {database}:2: Regex: subsignature 1: a PCRE" in err
    assert "Fine" not in err
