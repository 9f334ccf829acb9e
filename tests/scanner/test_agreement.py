"""Agreement with the real peer: ``hv-emu scan`` and raw-mode ``clamscan`` on generated corpora.

Each corpus is a few dozen random binary, text and HTML-looking files, with signature bodies (made
from the parsed signatures, so every wildcard takes random values) planted at offset 0, at the end
of the file, straddling the 512, 4096, 65536 and 131072-byte boundaries, at the offsets their
signatures name, and anywhere. Both scanners run as commands over the same directory; the outcome
must be the same set of (file, name) pairs, and must hold every planted name (so that agreement is
never the agreement of two blind scanners). Skips without clamscan (Debian package ``clamav``).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hv_emu.scanner.signatures import (
    Signature,
    load_database_file,
    parse_database,
)
from tests.rigs.scanner import CLAMSCAN_SKIPS_UP_TO, RAW_MODE, found_pairs, instance

CLAMSCAN = shutil.which("clamscan")
pytestmark = pytest.mark.skipif(CLAMSCAN is None, reason="clamscan (Debian package clamav) absent")
RFXN = Path(__file__).resolve().parents[3] / "shared" / "data" / "rfxn.ndb"
BOUNDARIES = (512, 4096, 65536, 131072)
FILES = 36

#: Every body construct and offset form hv-emu implements, with static runs of bytes that text
#: and HTML filler never hold, so only planted bodies (and random binary, rarely) can match.
WILDCARDS_NDB = b"""\
Agree.Any:0:*:d1d2d3??d4d5d6
Agree.Skip:0:*:d1e2e3{5}e4e5e6
Agree.NibbleHigh:0:*:c1c2c3c?c4c5
Agree.NibbleLow:0:*:b1b2b3?7b4b5
Agree.AltByte:0:*:a1a2a3(a4|a5)a6a7
Agree.NotByte:0:*:91929394!(95|96)9798
Agree.AltString:0:*:81828384(8586|8788)8980
Agree.NotString:0:*:f1f2f3f4!(f5f6|f7f8)f9fa
Agree.Generic:0:*:e1e2e3(e4|e5e6|e7??e8)e9ea
Agree.Star:0:*:c9cacbcc*cdcecf
Agree.UpTo:0:*:b9babbbc{-20}bdbebf
Agree.AtLeast:0:*:a9aaabac{10-}adaeaf
Agree.Between:0:*:999a9b9c{4-12}9d9e9f
Agree.LongSkip:0:*:898a8b8c{200}8d8e8f
Agree.Three:0:*:797a7b*7c7d7e{-8}7f8081
Agree.Start:0:0:f0e0d0c0b0
Agree.Floating:0:512,64:eeddccbbaa
Agree.End:0:EOF-6:dadbdcdd
Agree.EndFloating:0:EOF-40,30:cacbcdce
Agree.Outer:0:*:d0d1d2d3d4d5
Agree.Inner:0:*:d2d3d4
Agree.Twin:0:*:d2d3d4
"""
WILDCARDS_DB = b"""\
AgreeDb.Wild=5a5b5c??5d5e*5f6061
AgreeDb.Alt=eaebec(ed|ee)efe0{2-6}e1e2
"""
WORDS = ("if", "else", "return", "function", "echo", "$var", "GET", "POST", "200", "404",
         "error", "warning", "user", "admin", "login", "eval", "base64_decode", "while", "=", ";")


def body_instance(signature: Signature, rng: random.Random) -> bytes:
    """Bytes matching the whole body: a variant of every part, gaps filled at allowed lengths."""
    out = bytearray()
    for part in signature.parts:
        if out:
            high = part.gap_min + 40 if part.gap_max is None else part.gap_max
            out += bytes(rng.choice(b"\x00 \x90") for _ in range(rng.randint(part.gap_min, high)))
        out += instance(rng.choice(part.variants), rng)
    return bytes(out)


def filler(kind: str, size: int, rng: random.Random) -> bytearray:
    if kind == "binary":
        return bytearray(rng.randbytes(size))
    text = bytearray()
    if kind == "html":
        text += b"<html><head><title>corpus</title></head><body>\n"
    while len(text) < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        text += (f"<p>{line}</p>\n" if kind == "html" else line + "\n").encode()
    return text[:size]


def corpus_file(signatures: list[Signature], number: int, rng: random.Random
                ) -> tuple[bytes, set[str]]:  # fmt: skip
    """One file and the names planted in it."""
    kind = ("binary", "text", "html")[number % 3]
    size = rng.choice([rng.randint(1024, 40000), rng.randint(70000, 300000)])
    data = filler(kind, size, rng)
    planted: set[str] = set()
    taken: list[tuple[int, int]] = []
    for signature in rng.sample(signatures, rng.randint(1, 4)):
        body = body_instance(signature, rng)
        offset = signature.offset
        late = rng.randint(0, offset.shift + 2)  # past the shift: a near miss, not planted
        if offset.kind == "absolute":
            at = offset.start + late
        elif offset.kind == "eof":
            at = size - offset.start + late
        else:
            late = 0
            where = rng.choice(["start", "end", "straddle", "straddle", "anywhere"])
            boundary = rng.choice([b for b in BOUNDARIES if b + len(body) < size] or [0])
            at = {
                "start": 0,
                "end": size - len(body),
                "straddle": max(0, boundary - rng.randint(1, max(1, len(body) - 1))),
                "anywhere": rng.randrange(0, max(1, size - len(body))),
            }[where]
        if at < 0 or at + len(body) > size or any(at < e and s < at + len(body) for s, e in taken):
            continue
        data[at : at + len(body)] = body
        taken.append((at, at + len(body)))
        if late <= offset.shift:
            planted.add(signature.name)
    return bytes(data), planted


def make_corpus(root: Path, signatures: list[Signature], seed: int) -> set[tuple[str, str]]:
    """Write the corpus under ``root``; return the planted (file, name) pairs."""
    rng = random.Random(seed)
    planted = set()
    for number in range(FILES):
        data, names = corpus_file(signatures, number, rng)
        path = root / ("sub" if number % 2 else "") / f"f{number:02}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        planted |= {(str(path.relative_to(root)), name) for name in names}
    return planted


def clamscan_pairs(databases: list[Path], root: Path) -> set[tuple[str, str]]:
    assert CLAMSCAN is not None
    argv = [CLAMSCAN, *(f"--database={db}" for db in databases), *RAW_MODE, "-r", str(root)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode in (0, 1), result.stderr
    return found_pairs(result.stdout, root)


def hv_emu_scan(databases: list[Path], root: Path, engine: str, *, as_json: bool = False
                ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = [sys.executable, "-m", "hv_emu.cli.main", "scan", "--engine", engine,
            *(arg for db in databases for arg in ("--db", str(db))), str(root)]  # fmt: skip
    if as_json:
        argv.append("--json")
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def agree(databases: list[Path], root: Path, planted: set[tuple[str, str]]) -> None:
    expected = clamscan_pairs(databases, root)
    assert planted <= expected, f"clamscan missed planted bodies: {planted - expected}"
    for engine in ("auto", "ac"):
        result = hv_emu_scan(databases, root, engine)
        assert result.returncode == 1, result.stderr
        assert found_pairs(result.stdout, root) == expected, engine
    listed = hv_emu_scan(databases, root, "auto", as_json=True)
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(records) == FILES
    pairs = {(str(Path(r["path"]).relative_to(root)), n) for r in records for n in r["names"]
             if r["bytes"] > CLAMSCAN_SKIPS_UP_TO}
    assert pairs == expected


@pytest.mark.skipif(not RFXN.is_file(), reason=f"{RFXN} (rfxn.ndb) is absent")
def test_rfxn_corpus_agrees_with_clamscan(tmp_path: Path) -> None:
    data, kind = load_database_file(RFXN)
    signatures = parse_database(data, kind=kind, source="rfxn.ndb")
    planted = make_corpus(tmp_path, signatures, seed=1869)
    assert len(planted) >= 40
    agree([RFXN], tmp_path, planted)


def test_every_wildcard_form_agrees_with_clamscan(tmp_path: Path) -> None:
    databases = [tmp_path / "wildcards.ndb", tmp_path / "wildcards.db"]
    databases[0].write_bytes(WILDCARDS_NDB)
    databases[1].write_bytes(WILDCARDS_DB)
    signatures = parse_database(WILDCARDS_NDB, kind="ndb", source="wildcards.ndb")
    signatures += parse_database(WILDCARDS_DB, kind="db", source="wildcards.db")
    corpus = tmp_path / "corpus"
    planted = set()
    for seed in (1, 2, 3):  # three corpora: every signature planted several times
        pairs = make_corpus(corpus / f"c{seed}", signatures, seed)
        planted |= {(f"c{seed}/{path}", name) for path, name in pairs}
    planted_names = {name for _, name in planted}
    assert planted_names >= {s.name for s in signatures} - {"Agree.Inner", "Agree.Twin"}
    expected = clamscan_pairs(databases, corpus)
    assert planted <= expected, f"clamscan missed planted bodies: {planted - expected}"
    result = hv_emu_scan(databases, corpus, "auto")
    assert found_pairs(result.stdout, corpus) == expected
    result = hv_emu_scan(databases, corpus, "ac")
    assert found_pairs(result.stdout, corpus) == expected
