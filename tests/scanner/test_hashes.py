"""Hash signatures (``hv_emu/scanner/hashes.py``) and ``--db DIR``: the loader rules measured on
clamscan 1.4.6, agreement with raw-mode clamscan on generated files, the parser under Hypothesis,
and the cache key."""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.cli.scan_files import scan_file
from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.scanner.cache import Cache
from hv_emu.scanner.database_files import compile_files, database_paths
from hv_emu.scanner.hashes import HashSet, parse_hash_database
from tests.rigs.scanner import clamscan

CLAMSCAN = shutil.which("clamscan")
MD5 = "33ea1c0b3dfd8b876fb0627adfc10f0d"  # of DATA
DATA = b"hello world, this is a test file\n"


def names(lines: list[str], data: bytes = DATA, kind: str = "hdb") -> list[str]:
    """What a file holding ``data`` is named by a database of ``lines``."""
    text = "".join(line + "\n" for line in lines).encode()
    hashes = HashSet.build(parse_hash_database(text, kind=kind, source="t." + kind))
    hashers = hashes.start(len(data))
    for hasher in hashers.values():
        hasher.update(data)
    return hashes.names(hashers, len(data))


# Each case was run on clamscan 1.4.6 in raw mode against DATA (33 bytes): the names it reported.
@pytest.mark.parametrize(("lines", "expected"), [
    ([f"{MD5}:33:A"], ["A"]),
    ([f"{MD5.upper()}:33:A"], ["A"]),
    ([f"{MD5}:*:W:73"], ["W"]),
    ([f"{MD5}:34:A"], []),  # the size is part of the signature
    ([f"{MD5}:33:A:300"], []),  # MinFL above 216: skipped
    ([f"{MD5}:33:A:0:100"], []),  # MaxFL below 216: skipped
    ([f"{MD5}:33:A:x:y"], []),  # atoi("y") is 0
    ([f"{MD5}:33:A:100:-1"], ["A"]),  # -1 is 2**32 - 1 unsigned
    ([f"{MD5}: 33:A"], ["A"]),  # strtoul skips white space
    ([f"{MD5}:+33:A"], ["A"]),
    ([f"{MD5}:033:A"], ["A"]),
    ([f"{MD5}:*:A:73x"], ["A"]),  # atoi stops at the x
    ([f"{MD5}:33:Foo Bar (Clam) x"], ["Foo Bar"]),
    (["# a comment"], []),
    # One name per hash type and bucket: libclamav's quicksort and binary search choose.
    ([f"{MD5}:33:A", f"{MD5}:33:B"], ["B"]),
    ([f"{MD5}:33:B", f"{MD5}:33:A"], ["A"]),
    ([f"{MD5}:33:{n}" for n in "ABC"], ["C"]),
    ([f"{MD5}:33:{n}" for n in "ABCDE"], ["D"]),
    ([f"{MD5}:*:{n}:73" for n in "ABC"], ["C"]),
    ([f"{MD5}:33:C", f"{MD5}:*:D:73", f"{MD5}:*:E:73"], ["C", "E"]),
])  # fmt: skip
def test_lines_as_clamscan_reads_them(lines: list[str], expected: list[str]) -> None:
    assert names(lines) == expected


@pytest.mark.parametrize(("line", "message"), [
    (f"{MD5}:*:W", "at least 73"),
    (f"{MD5}:*:W:72", "at least 73"),
    (f"{MD5}:33 :A", "size field"),
    (f"{MD5}:0:A", "size field"),
    (f"{MD5}::A", "size field"),
    (f"{MD5}:-1:A", "size field"),
    (f"{MD5}:4294967295:A", "size field"),
    (f"{MD5}:33:", "Empty virus name"),
    (f"{MD5}:33", "fields"),
    (f"{MD5}:33:A:1:2:3", "fields"),
    (f"{MD5[:-1]}:33:A", "Malformed hash"),
    (f"{MD5[:-1]}g:33:A", "Malformed hash"),
    ("", "fields"),
])  # fmt: skip
def test_refused_lines_name_file_line_and_column(line: str, message: str) -> None:
    with pytest.raises(DatabaseError, match=message) as caught:
        parse_hash_database(f"# c\n{line}\n".encode(), kind="hdb", source="t.hdb")
    assert caught.value.source == "t.hdb" and caught.value.line == 2
    assert caught.value.column >= 1


def test_an_empty_file_is_refused_and_comments_alone_load() -> None:
    with pytest.raises(DatabaseError, match="Empty database file"):
        parse_hash_database(b"", kind="hdb", source="e.hdb")
    assert parse_hash_database(b"# only\n", kind="hsb", source="c.hsb") == []


def test_section_hashes_load_and_are_reported_once_per_file() -> None:
    text = f"33:{MD5}:S1\n*:{MD5}:S2:73\n".encode()
    signatures = parse_hash_database(text, kind="mdb", source="s.mdb")
    hashes = HashSet.build(signatures)
    assert [s.size for s in signatures] == [33, None] and not hashes.applied
    assert hashes.not_applied() == (
        "s.mdb: 2 PE section hash signatures need ClamAV's PE parsing; not applied",
    )
    with pytest.raises(DatabaseError, match="size field"):
        parse_hash_database(f"{MD5}:33:S\n".encode(), kind="msb", source="s.msb")


_FIELD = st.text(alphabet="0123456789abcdefABCDEF*+- x:#\r\t", max_size=70)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_FIELD, _FIELD, st.text(max_size=12), _FIELD), max_size=6),
       st.sampled_from(["hdb", "hsb", "mdb", "msb"]))  # fmt: skip
def test_parser_raises_only_database_error_on_lines(
    rows: list[tuple[str, str, str, str]], kind: str
) -> None:
    text = "\n".join(":".join(row) for row in rows).encode("utf-8", "surrogatepass")
    with contextlib.suppress(DatabaseError):  # the only error allowed through
        HashSet.build(parse_hash_database(text, kind=kind, source="h." + kind))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["hdb", "hsb", "mdb", "msb"]))
def test_parser_raises_only_database_error_on_bytes(data: bytes, kind: str) -> None:
    try:
        parse_hash_database(data, kind=kind, source="h." + kind)
    except DatabaseError as error:
        assert error.source == "h." + kind


# ------------------------------------------------------------------------ --db DIR


def _hdb(path: Path, data: bytes, name: str) -> None:
    path.write_text(f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n")


def test_database_directory_as_clamscan_reads_it(tmp_path: Path) -> None:
    """Measured on clamscan 1.4.6: suffixes in any case, hidden files, links; not subdirectories,
    not PUA databases (without --detect-pua), not other files."""
    d = tmp_path / "db"
    (d / "sub").mkdir(parents=True)
    for name in ("x.hdb", "x.HDB", "x.hsb", ".hidden.hdb", "real.ndb", "sub/s.hdb", "x.hdu",
                 "x.txt", "x.hdb.bak", "xhdb"):  # fmt: skip
        (d / name).write_text("")
    (d / "link.db").symlink_to("real.ndb")
    assert [p.name for p in database_paths([d])] == [
        ".hidden.hdb", "link.db", "real.ndb", "x.HDB", "x.hdb", "x.hsb"]  # fmt: skip
    (d / "y.ldb").write_text("")  # logical signatures load too
    assert "y.ldb" in [p.name for p in database_paths([d])]
    (d / "z.fp").write_text("")
    with pytest.raises(ConfigError, match=r"z\.fp: ClamAV database kind \.fp is not supported"):
        database_paths([d])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("")
    with pytest.raises(ConfigError, match="No supported database files found"):
        database_paths([empty])


def test_cache_key_covers_hash_databases(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    db = tmp_path / "h.hdb"
    _hdb(db, DATA, "First")
    first = compile_files([db], cache=cache)
    assert first.hashes.tables[("md5", 33)][hashlib.md5(DATA).digest()] == "First"
    _hdb(db, DATA, "Second")  # same size, new contents: a new key, never the stale entry
    again = compile_files([db], cache=cache)
    assert again.hashes.tables[("md5", 33)][hashlib.md5(DATA).digest()] == "Second"


# ------------------------------------------------------------------------ agreement


def _corpus(root: Path, rng: random.Random) -> tuple[list[Path], list[str], list[str]]:
    """Files (names with spaces among them) and the .hdb and .hsb lines naming them: exact and
    ``*`` sizes in MD5, SHA-1 and SHA-256, near misses (a hash of the file with one byte
    changed), size mismatches, and one hash under several names (alone in its bucket)."""
    files, hdb, hsb = [], [], []
    for index in range(60):
        size = rng.choice([6, 7, 100, 4096, 65536, 131073, rng.randrange(6, 300_000)])
        if index % 6 == 4:  # alone in its size's bucket: see docs/SIGNATURES.md, duplicates
            size = 200_000 + index
        data = rng.randbytes(size)
        path = root / (f"file {index}.bin" if index % 3 else f"file{index}")
        path.write_bytes(data)
        files.append(path)
        algorithm = ("md5", "sha1", "sha256")[index % 3]
        digest = hashlib.new(algorithm, data).hexdigest()
        lines = hdb if index % 2 else hsb
        match index % 6:
            case 0:
                lines.append(f"{digest}:{size}:Exact {index}")
            case 1:
                lines.append(f"{digest}:*:Any.{index}:73")
            case 2:  # one byte changed: a near miss
                flipped = bytearray(data)
                flipped[rng.randrange(size)] ^= 1 << rng.randrange(8)
                lines.append(f"{hashlib.new(algorithm, flipped).hexdigest()}:{size}:Near.{index}")
            case 3:  # the right hash, the wrong size
                lines.append(f"{digest}:{size + rng.choice([-1, 1])}:Size.{index}")
            case 4:
                lines += [f"{digest}:{size}:Dup.{index}.{n}" for n in range(rng.randrange(2, 6))]
            case 5:
                lines += [f"{digest}:{size}:Both.{index}", f"{digest}:*:Both.{index}.any:73"]
    return files, hdb, hsb


@pytest.mark.skipif(CLAMSCAN is None, reason="clamscan (Debian package clamav) absent")
def test_hash_signatures_agree_with_clamscan(tmp_path: Path) -> None:
    rng = random.Random(10_3)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    files, hdb, hsb = _corpus(corpus, rng)
    d = tmp_path / "db"
    d.mkdir()
    (d / "a.hdb").write_text("".join(line + "\n" for line in hdb))
    (d / "b.HSB").write_text("".join(line + "\n" for line in hsb))
    (d / "c.ndb").write_text("Body.Never:0:*:68762d656d7568762d656d75\n")
    expected = clamscan(d, files)
    assert len(expected) > 20  # the corpus finds something
    db = compile_files([d])
    ours = {(f.name, name) for f in files for name in scan_file(db, f).names}
    assert ours == expected
