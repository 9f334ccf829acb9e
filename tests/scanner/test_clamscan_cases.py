"""A tester's cases, hv-emu against raw-mode ``clamscan``: the offset sentinel 4294967295 and
offsets modulo 2**32, an alternation of more than 256 single bytes, databases of comments only,
and NUL bytes in database lines (docs/SIGNATURES.md). The rule for NUL is also checked by
Hypothesis against the parser alone; the clamscan comparisons skip when clamscan is absent."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hv_emu.errors import DatabaseError
from hv_emu.scanner.database_files import compile_files
from hv_emu.scanner.hashes import parse_hash_database
from hv_emu.scanner.logical import parse_ldb_database
from hv_emu.scanner.signatures import c_line, parse_database
from tests.rigs.scanner import RAW_MODE, clamscan, ours

CLAMSCAN = shutil.which("clamscan")
needs_clamscan = pytest.mark.skipif(CLAMSCAN is None,
                                    reason="clamscan (Debian package clamav) absent")

FILES = {
    "f1": b"hello world, look look look aaa bbb ccc xxxxyyyy the end",
    "f3": b"hello\0\0\0 world\nwho",
    "f4": b"aaaaaaa bbbbbb hello",
    "g2": b"xxhello world",
    "g0": b"hello world",
}


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    return paths


def _loads_in_clamscan(database: Path, target: Path) -> bool:
    assert CLAMSCAN is not None
    result = subprocess.run([CLAMSCAN, "-d", str(database), *RAW_MODE, str(target)],
                            capture_output=True, text=True, check=False, timeout=120)
    return result.returncode in (0, 1)


def _loads_in_hv_emu(data: bytes, kind: str) -> bool:
    try:
        if kind == "ldb":
            parse_ldb_database(data, source="t")
        elif kind in ("hdb", "hsb"):
            parse_hash_database(data, kind=kind, source="t")
        else:
            parse_database(data, kind=kind, source="t")
    except DatabaseError:
        return False
    return True


OFFSETS = ["4294967295", "4294967294", "8589934591", "4294967296", "4294967298", "4294967295,5",
           "2,4294967295", "0,4294967295", "1,4294967297", "EOF-4294967307", "4294967294,5",
           "99999999999999999999", "2147483648"]


@needs_clamscan
@pytest.mark.parametrize("engine", ["ac", "hyperscan"])
def test_offsets_modulo_2_32_and_the_any_sentinel_agree(tmp_path: Path, engine: str) -> None:
    if engine == "hyperscan":
        pytest.importorskip("hyperscan")
    files = _files(tmp_path)
    lines = [f"O{n}:0:{offset}:68656c6c6f" for n, offset in enumerate(OFFSETS)]
    ndb = tmp_path / "off.ndb"
    ndb.write_text("\n".join(lines) + "\n")
    expected = clamscan(ndb, files)
    assert ("f1", "O0") in expected  # the tester's case: 4294967295 is anywhere
    assert ours(ndb, files, engine) == expected
    ldb = tmp_path / "off.ldb"
    ldb.write_text("".join(f"L{n};Target:0;0;{offset}:68656c6c6f\n"
                           for n, offset in enumerate(OFFSETS[:4])))
    assert ours(ldb, files, engine) == clamscan(ldb, files)


@needs_clamscan
def test_an_alternation_of_257_bytes_is_not_applied_and_clamscan_is_erratic(
        tmp_path: Path) -> None:  # fmt: skip
    body = "68(" + "|".join(f"{i % 256:02x}" for i in range(257)) + ")6c6c6f"
    database = tmp_path / "a257.ndb"
    database.write_text(f"D:0:*:{body}\n")
    (signature,) = parse_database(database.read_bytes(), kind="ndb", source="a257.ndb")
    assert signature.not_applied is not None and "256" in signature.not_applied
    # What clamscan 1.4.6 does with it (docs/SIGNATURES.md): found when few bytes follow.
    near, far, zero = tmp_path / "near", tmp_path / "far", tmp_path / "zero"
    near.write_bytes(b"PPhello" + b"Q" * 9)
    far.write_bytes(b"PPhello" + b"Q" * 45)
    zero.write_bytes(b"PPh\x00llo" + b"Q" * 45)  # the one byte clamscan's prefilter knows
    assert clamscan(database, [near, far, zero]) == {("near", "D"), ("zero", "D")}
    assert clamscan(database, _files(tmp_path)[:3]) == {("f3", "D"), ("f4", "D")}
    assert ours(database, [near, far], "ac") == set()
    # 256 distinct bytes is a plain byte class, applied, and agrees.
    database.write_text("D:0:*:68(" + "|".join(f"{i:02x}" for i in range(256)) + ")6c6c6f\n")
    assert ours(database, [near, far], "ac") == clamscan(database, [near, far]) == {
        ("near", "D"), ("far", "D")}


@needs_clamscan
@pytest.mark.parametrize("kind", ["db", "ndb", "ldb", "hdb"])
def test_comments_only_load_and_an_empty_file_does_not(tmp_path: Path, kind: str) -> None:
    (target,) = _files(tmp_path)[:1]
    for data, loads in ((b"#c\n", True), (b"#c", True), (b"", False), (b"\n", False)):
        database = tmp_path / f"d.{kind}"
        database.write_bytes(data)
        assert _loads_in_clamscan(database, target) is loads, data
        assert _loads_in_hv_emu(data, kind) is loads, data
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / f"a.{kind}").write_bytes(b"#c\n")
    assert _loads_in_clamscan(folder, target)
    db = compile_files([folder], engine="ac")  # as hv-emu scan --db DIR
    assert db.count == 0 and db.scan(target.read_bytes()) == []


@given(st.binary(max_size=40), st.binary(max_size=40).filter(lambda b: b"\n" not in b))
def test_a_line_ends_at_its_first_nul(head: bytes, tail: bytes) -> None:
    head = head.replace(b"\n", b"")
    line = head + b"\0" + tail
    assert c_line(line) == head.split(b"\0", 1)[0]
    assert c_line(head.replace(b"\0", b"")) == head.replace(b"\0", b"")
    # The whole database reads the same as the one whose line was cut at the NUL.
    first = head.split(b"\0", 1)[0]
    for kind in ("ndb", "db", "ldb", "hsb"):
        assert _outcome(line + b"\n", kind) == _outcome(first + b"\n", kind)


@given(st.sampled_from([b"N:0:*:68656c6c6f", b"B=68656c6c6f", b"L;Target:0;0;68656c6c6f",
                        b"5d41402abc4b2a76b9719d911017c592:5:H"]),
       st.data())
def test_a_nul_anywhere_in_a_valid_line_reads_as_the_line_cut_there(line: bytes,
                                                                   data: st.DataObject) -> None:
    kind = {b"N": "ndb", b"B": "db", b"L": "ldb", b"5": "hsb"}[line[:1]]
    at = data.draw(st.integers(0, len(line)))
    tail = data.draw(st.binary(max_size=8).filter(lambda b: b"\n" not in b))
    with_nul = line[:at] + b"\0" + tail + b"\n#after\n"
    assert _outcome(with_nul, kind) == _outcome(line[:at] + b"\n#after\n", kind)


def _outcome(data: bytes, kind: str) -> object:
    try:
        if kind == "ldb":
            return [(s.name, s.expression) for s in parse_ldb_database(data, source="t")]
        if kind == "hsb":
            return [(s.name, s.size) for s in parse_hash_database(data, kind=kind, source="t")]
        return [(s.name, s.offset, s.parts) for s in parse_database(data, kind=kind, source="t")]
    except DatabaseError as error:
        return (error.line, error.message)


def _nul_lines(rng: random.Random) -> list[tuple[str, bytes]]:
    """A few generated lines with a NUL somewhere, per database kind."""
    md5 = "5d41402abc4b2a76b9719d911017c592"  # MD5 of "hello"
    whole = {
        "ndb": b"N:0:*:68656c6c6f776f726c64",
        "db": b"B=68656c6c6f776f726c64",
        "ldb": b"L;Target:0;0&1;68656c6c6f;776f726c64",
        "hdb": f"{md5}:5:H".encode(),
    }
    cases = []
    for kind, line in whole.items():
        for _ in range(4):
            cut = rng.randrange(1, len(line))
            cases.append((kind, line[:cut] + b"\0" + line[cut:]))
    return cases


@needs_clamscan
def test_nul_in_lines_agrees_with_clamscan(tmp_path: Path) -> None:
    files = _files(tmp_path)
    (tmp_path / "hello").write_bytes(b"hello")  # 5 bytes: clamscan skips it, ours leaves it out
    rng = random.Random(20261205)
    cases = [("ldb", b"T;Target:0;0;68656c\x006c6f"), ("ldb", b"T;Taret:0;0&1;7\x008787878;797979"),
             *_nul_lines(rng)]
    for number, (kind, line) in enumerate(cases):
        database = tmp_path / f"n{number}.{kind}"
        database.write_bytes(line + b"\n")
        loads = _loads_in_clamscan(database, files[0])
        assert _loads_in_hv_emu(line + b"\n", kind) is loads, line
        if loads and kind != "hdb":
            assert ours(database, files, "ac") == clamscan(database, files), line
