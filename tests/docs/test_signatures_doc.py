"""docs/SIGNATURES.md: its example runs as written, and its default-mode differences are real."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rigs.scanner import RAW_MODE, found_pairs

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "SIGNATURES.md").read_text(encoding="utf-8")
CLAMSCAN = shutil.which("clamscan")
needs_clamscan = pytest.mark.skipif(CLAMSCAN is None, reason="clamscan (package clamav) absent")


def test_the_scan_example_runs_as_written(tmp_path: Path) -> None:
    block = DOC.split("<!-- example:scan -->\n```\n", 1)[1].split("```", 1)[0]
    commands = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    expected = [line for line in block.splitlines() if not line.startswith("$ ")]
    assert commands[-1].startswith("hv-emu scan ")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == expected


def ours(database: Path, root: Path) -> set[tuple[str, str]]:
    done = subprocess.run([sys.executable, "-m", "hv_emu.cli.main", "scan", "--db", str(database),
                           str(root)], capture_output=True, text=True, timeout=60, check=False)
    return found_pairs(done.stdout, root)


def clamscan(database: Path, root: Path, *mode: str) -> set[tuple[str, str]]:
    assert CLAMSCAN is not None
    done = subprocess.run([CLAMSCAN, "-d", str(database), "--no-summary", "--allmatch", *mode,
                           "-r", str(root)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return found_pairs(done.stdout, root)


@needs_clamscan
def test_default_mode_differs_exactly_as_documented(tmp_path: Path) -> None:
    database = tmp_path / "doc.ndb"
    database.write_bytes(
        b"Doc.Lower:0:*:" + b"hv-emu lower body".hex().encode() + b"\n"
        b"Doc.Upper:0:*:" + b"HV-EMU Upper Body".hex().encode() + b"\n"
        b"Doc.Zipped:0:*:" + b"hv-emu gzip body".hex().encode() + b"\n"
    )
    root = tmp_path / "files"
    root.mkdir()
    # Normalisation: an upper-case, re-spaced variant of a lower-case body in a text file.
    (root / "shout.txt").write_bytes(b"some text\nHV-EMU   LOWER  BODY\nmore text\n")
    # HTML raw-skip: typed HTML by its first bytes, so the upper-case body cannot match.
    (root / "page.html").write_bytes(b"<html><head></head><body>HV-EMU Upper Body</body></html>\n")
    # Containers: the body exists only inside gzip.
    (root / "packed.gz").write_bytes(gzip.compress(b"padding " * 20 + b"hv-emu gzip body"))
    default = clamscan(database, root)
    raw = clamscan(database, root, *RAW_MODE[2:])
    assert default == {("shout.txt", "Doc.Lower"), ("packed.gz", "Doc.Zipped")}
    assert raw == {("page.html", "Doc.Upper")}
    assert ours(database, root) == raw
