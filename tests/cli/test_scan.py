"""``hv-emu scan``: output lines, exit codes, chunked reading, JSON, progress, errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hv_emu.cli import scan as scan_command
from hv_emu.cli import scan_files
from hv_emu.cli.main import main
from hv_emu.scanner.database_files import compile_files

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
NDB = (
    b"Test.Plain:0:*:" + b"hv-emu-test-body".hex().encode() + b"\n"
    b"Test.Wild:0:*:414243??444546*474849\n"
    b"Test.Tail:0:EOF-4:54414c21\n"
    b"Test.Pe:1:EP+0:4d5a9000\n"
)


@pytest.fixture
def dbs(tmp_path: Path) -> list[Path]:
    (tmp_path / "t.ndb").write_bytes(NDB)
    (tmp_path / "e.db").write_bytes(b"EICAR=" + EICAR.hex().encode() + b"\n")
    return [tmp_path / "t.ndb", tmp_path / "e.db"]


def scan(argv: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["scan", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def db_args(dbs: list[Path]) -> list[str | Path]:
    return [arg for db in dbs for arg in ("--db", db)]


def test_lines_exit_codes_and_summary(
    tmp_path: Path, dbs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    (tree / "deep" / "er").mkdir(parents=True)
    (tree / "eicar.com").write_bytes(EICAR)
    (tree / "deep" / "er" / "both.bin").write_bytes(b"..ABC\x00DEF" + b"x" * 50 + b"GHI" + EICAR)
    (tree / "deep" / "clean.txt").write_bytes(b"nothing\n")
    (tree / "tail.bin").write_bytes(b"TAL!\x00\x00\x00" + b"TAL!")  # EOF-4: only the last
    code, out, err = scan([*db_args(dbs), tree], capsys)
    assert code == 1
    assert sorted(out.splitlines()) == sorted([
        f"{tree}/deep/clean.txt: OK",
        f"{tree}/deep/er/both.bin: Test.Wild FOUND",
        f"{tree}/deep/er/both.bin: EICAR FOUND",
        f"{tree}/eicar.com: EICAR FOUND",
        f"{tree}/tail.bin: Test.Tail FOUND",
    ])
    assert "Infected files: 3\n" in err and "Scanned files: 4\n" in err
    assert "Signatures found: 4\n" in err
    # The PE-only line is accepted, and said once not to apply, naming file and line.
    assert f"hv-emu: warning: {dbs[0]}:4: Test.Pe: target type 1" in err
    code, out, _ = scan([*db_args(dbs), "-i", tree / "deep" / "clean.txt"], capsys)
    assert (code, out) == (0, "")


def test_json_records_one_object_per_file(
    tmp_path: Path, dbs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a").write_bytes(b"hv-emu-test-body and hv-emu-test-body")
    (tmp_path / "b").write_bytes(b"")
    code, out, _ = scan([*db_args(dbs), "--json", tmp_path / "a", tmp_path / "b",
                         tmp_path / "missing"], capsys)  # fmt: skip
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1  # found wins over the error, as in clamscan
    assert [(r["status"], r["names"], r["bytes"]) for r in records] == [
        ("found", ["Test.Plain"], 37), ("clean", [], 0), ("error", [], 0),
    ]
    assert "No such file" in records[2]["error"]


def test_bodies_straddling_chunks_are_found(
    tmp_path: Path, dbs: list[Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A disk image read in small chunks: every split of the body across a chunk boundary."""
    monkeypatch.setattr(scan_files, "CHUNK", 64)
    body = b"hv-emu-test-body"
    for split in range(len(body) + 1):
        image = tmp_path / f"disk{split}.img"
        image.write_bytes(bytes(64 * 3 - split) + body + bytes(100))
    code, out, _ = scan([*db_args(dbs), "-i", tmp_path], capsys)
    assert code == 1
    assert len(out.splitlines()) == len(body) + 1
    assert all(line.endswith(": Test.Plain FOUND") for line in out.splitlines())


def test_errors_are_one_line_and_exit_2(
    tmp_path: Path, dbs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = scan([*db_args(dbs), tmp_path / "missing"], capsys)
    assert code == 2 and out == ""
    assert f"hv-emu: {tmp_path / 'missing'}: cannot access: No such file or directory\n" in err
    bad = tmp_path / "bad.ndb"
    bad.write_bytes(b"Good:0:*:414243\nBad:0:*:41424g\n")
    code, out, err = scan(["--db", bad, tmp_path], capsys)
    assert (code, out) == (2, "")
    assert err == f"hv-emu: error: {bad}:2:14: bad hex digit 'g'\n"
    code, _, err = scan(["--db", tmp_path / "x.yara", tmp_path], capsys)
    assert code == 2 and "unknown signature database suffix" in err
    with pytest.raises(SystemExit) as usage:
        main(["scan", str(tmp_path)])  # --db is required
    assert usage.value.code == 2


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc/self/mem")
def test_an_unreadable_file_is_reported_and_the_rest_scanned(
    tmp_path: Path, dbs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Reading /proc/self/mem at offset 0 fails with EIO (nothing is mapped there), even as root.
    unreadable = Path("/proc/self/mem")
    (tmp_path / "z.com").write_bytes(EICAR)
    code, out, err = scan([*db_args(dbs), "-i", unreadable, tmp_path / "z.com"], capsys)
    assert code == 1
    assert out == f"{tmp_path / 'z.com'}: EICAR FOUND\n"
    assert f"hv-emu: {unreadable}: cannot read: Input/output error" in err
    code, out, err = scan([*db_args(dbs), "--json", unreadable], capsys)
    assert code == 2 and json.loads(out)["status"] == "error"


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_appears_on_a_terminal_for_long_scans_only(
    tmp_path: Path, dbs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_files, "CHUNK", 1000)
    (tmp_path / "big.img").write_bytes(bytes(10_000))
    db = compile_files(dbs)
    ticks = iter(range(1000))

    def clock() -> float:
        return float(next(ticks))  # one second per call: a "long" scan

    err = FakeTty()
    code = scan_command.run_scan(db, [tmp_path / "big.img"], out=io.StringIO(), err=err,
                                 clock=clock)
    assert code == 0
    assert "\r[" in err.getvalue() and "big.img" in err.getvalue()
    plain = io.StringIO()  # not a terminal: no progress, just the summary
    scan_command.run_scan(db, [tmp_path / "big.img"], out=io.StringIO(), err=plain, clock=clock)
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().startswith("----------- SCAN SUMMARY")


def test_symbolic_links_inside_directories_are_not_followed(
    tmp_path: Path, dbs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "outside.com").write_bytes(EICAR)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link.com").symlink_to(tmp_path / "outside.com")
    code, out, _ = scan([*db_args(dbs), "-i", tree], capsys)
    assert (code, out) == (0, "")
    code, out, _ = scan([*db_args(dbs), "-i", tree / "link.com"], capsys)  # named: followed
    assert (code, out) == (1, f"{tree / 'link.com'}: EICAR FOUND\n")


def test_special_files_inside_directories_are_skipped(tmp_path: Path) -> None:
    """A FIFO (or a device node) met in a directory would block the scan or never end, as
    ``hv-emu scan /dev`` reading /dev/zero would: only regular files are scanned there."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"clean")
    os.mkfifo(tree / "pipe")
    assert list(scan_files.walk([tree])) == [scan_files.Item(tree / "a.txt")]


def test_the_installed_command_runs(tmp_path: Path, dbs: list[Path]) -> None:
    (tmp_path / "eicar.com").write_bytes(EICAR)
    done = subprocess.run(
        [Path(sys.executable).parent / "hv-emu", "scan", "--db", dbs[1], tmp_path / "eicar.com"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stdout == f"{tmp_path / 'eicar.com'}: EICAR FOUND\n"
