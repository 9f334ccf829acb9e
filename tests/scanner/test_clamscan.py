"""Differential test: hv-emu's scanner against ``clamscan`` in raw mode, the reference peer.

Raw mode (normalisation, decoders and file-type parsers off) is the mode hv-emu agrees with; the
exact command is the one in docs/SIGNATURES.md. Each comparison reduces both sides to a set
of (file, signature name) pairs. Skips when clamscan is not installed (CI installs Debian's clamav).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from hv_emu.scanner.database import compile_database
from hv_emu.scanner.signatures import load_database_file
from tests.conftest import RFXN
from tests.rigs.scanner import clamscan, instance, ours

CLAMSCAN = shutil.which("clamscan")
pytestmark = pytest.mark.skipif(CLAMSCAN is None, reason="clamscan (Debian package clamav) absent")

#: One signature per construct hv-emu implements.
CONSTRUCTS = b"""\
Wild.Any:0:*:41424344??4546
Wild.Skip:0:*:68696a{3}6b6c6d
Wild.NibbleHigh:0:*:4a4b4c4?4e4f
Wild.NibbleLow:0:*:505152?3545556
Alt.Byte:0:*:61626364(65|66)6768
Alt.NotByte:0:*:71727374!(75|76)7778
Alt.String:0:*:31323334(3536|3738)3930
Alt.NotString:0:*:21222324!(2526|2728)2930
Alt.Generic:0:*:5a5b5c(5d|5e5f)606162
Offset.Absolute:0:10:7a7b7c7d
Offset.Floating:0:20,10:7e7d7c7b
Offset.End:0:EOF-6:e0e1e2e3
Offset.EndFloating:0:EOF-12,4:e4e5e6e7
Plain:0:*:01020304
Plain.Twin:0:*:01020304
Plain.Nested:0:*:0001020304
Part.Star:0:*:6d6e6f*707172
Part.UpTo:0:*:737475{-3}767778
Part.AtLeast:0:*:4b4c4d{4-}4e4f50
Part.Between:0:*:2b2c2d{2-4}2e2f30
Part.Long:0:*:3b3c3d{130}3e3f40
Part.Three:0:*:0a0b*0c0d{-2}0e0f
"""

#: Matching and near-missing bytes for each construct, planted anywhere.
PROBES = [
    b"ABCDxEF", b"ABCD\x00EF", b"ABCDEEF", b"hijxyzklm", b"hijxyklm", b"JKLANO", b"JKLQNO",
    b"PQR\x03TUV", b"PQR\xf3TUV", b"PQR\x04TUV", b"abcdegh", b"abcdfgh", b"abcdxgh",
    b"qrstxwx", b"qrstuwx", b"qrstvwx", b"12345690", b"12347890", b"12340090",
    b"!\"#$%&)0", b"!\"#$'()0", b"!\"#$xx)0", b"Z[\\]`ab", b"Z[\\^_`ab", b"Z[\\^`ab",
    b"\x01\x02\x03\x04", b"\x00\x01\x02\x03\x04",
    b"mno\x90\x90pqr", b"mnopqr", b"pqrmno",
    *(b"stu" + b"\x90" * gap + b"vwx" for gap in (0, 3, 4)),
    *(b"KLM" + b"\x90" * gap + b"NOP" for gap in (3, 4, 9)),
    *(b"+,-" + b"\x90" * gap + b"./0" for gap in (1, 2, 4, 5)),
    *(b";<=" + b"\x90" * gap + b">?@" for gap in (129, 130, 131)),
    b"\n\x0b\x90\x0c\r\x0e\x0f", b"\n\x0b\x0c\r\x90\x90\x90\x0e\x0f",
]


def test_clamscan_skips_files_of_five_bytes_or_fewer(tmp_path: Path) -> None:
    database = tmp_path / "short.ndb"
    database.write_bytes(b"Short:0:*:616263\n")
    files = []
    for size in range(3, 8):
        path = tmp_path / f"s{size}.bin"
        path.write_bytes(b"abc" + b"x" * (size - 3))
        files.append(path)
    assert clamscan(database, files) == {(f"s{n}.bin", "Short") for n in (6, 7)}
    data, kind = load_database_file(database)
    db = compile_database(data, kind=kind, version=1, source="short.ndb", engine="ac")
    assert all(db.scan(f.read_bytes()) for f in files)  # hv-emu finds it in every file


def test_constructs_agree_with_clamscan(tmp_path: Path) -> None:
    database = tmp_path / "constructs.ndb"
    database.write_bytes(CONSTRUCTS)
    rng = random.Random(2024)
    files = []
    for number in range(40):
        # Filler from bytes no probe uses, so only planted probes can match.
        data = bytearray(rng.choice(b"\x80\x90\xa0\xb0\xc0") for _ in range(rng.randrange(40, 600)))
        for probe in rng.sample(PROBES, 5):
            at = rng.randrange(0, len(data))
            data[at:at] = probe
        if number % 4 == 0:
            data[10:14] = b"z{|}"  # Offset.Absolute at 10
        if number % 4 == 1:
            data[11:15] = b"z{|}"  # one byte late: no match
        if number % 4 == 2:
            at = rng.choice([20, 25, 30, 31])  # 31 is past the floating window
            data[at : at + 4] = b"~}|{"
        if number % 8 == 3:  # EOF-6: two bytes after the body, or three
            data += b"\xe0\xe1\xe2\xe3" + b"\x80" * rng.choice([2, 3])
        if number % 8 == 7:  # EOF-12,4: four to eight bytes after the body, or nine
            data += b"\xe4\xe5\xe6\xe7" + b"\x80" * rng.choice([4, 6, 8, 9])
        path = tmp_path / f"probe{number:02}.bin"
        path.write_bytes(bytes(data))
        files.append(path)
    expected = clamscan(database, files)
    # Every construct fires somewhere, so agreement means something.
    names = {line.split(b":")[0].decode() for line in CONSTRUCTS.splitlines()}
    assert {name for _, name in expected} == names
    assert ours(database, files, "ac") == expected
    assert ours(database, files, "auto") == expected


def test_sample_db_format_agrees_with_clamscan(tmp_path: Path) -> None:
    eicar = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    database = tmp_path / "sample.db"
    database.write_bytes(b"EICAR=" + eicar.hex().encode() + b"\n"
                         b"Aircop=32e4cd16cd1233c0cd130e07b80002b9\n")
    (tmp_path / "eicar.com").write_bytes(eicar)
    aircop = bytes.fromhex("32e4cd16cd1233c0cd130e07b80002b9")
    (tmp_path / "boot.img").write_bytes(bytes(510) + aircop)
    (tmp_path / "clean.txt").write_bytes(b"nothing to see here\n")
    files = sorted(tmp_path.glob("*.*"))
    files.remove(database)
    expected = clamscan(database, files)
    assert expected == {("eicar.com", "EICAR"), ("boot.img", "Aircop")}
    assert ours(database, files, "auto") == expected


@pytest.mark.skipif(not RFXN.exists(), reason=f"{RFXN} (rfxn.ndb) is absent")
def test_rfxn_planted_bodies_agree_with_clamscan(tmp_path: Path) -> None:
    data, _ = load_database_file(RFXN)
    db = compile_database(data, kind="ndb", version=1, source="rfxn.ndb", engine="ac")
    rng = random.Random(99)
    signatures = rng.sample(db.signatures, 120)
    signatures += [s for s in db.signatures if s.name == "{HEX}JS.Winflood"] * 4
    files = []
    for number in range(0, len(signatures), 4):
        content = bytearray(rng.randbytes(rng.randrange(1000, 20000)))
        for signature in signatures[number : number + 4]:
            at = rng.randrange(0, len(content))
            content[at:at] = instance(rng.choice(signature.parts[0].variants), rng)
        path = tmp_path / f"rfxn{number:03}.bin"
        path.write_bytes(bytes(content))
        files.append(path)
    expected = clamscan(RFXN, files)
    assert len(expected) >= 120
    assert ours(RFXN, files, "ac") == expected
    assert ours(RFXN, files, "auto") == expected
