"""``hv-emu scan`` on hostile trees: depth, special files, loops, vanishing and odd names.

Each case was run through clamscan 1.4.6 first (docs/SIGNATURES.md, *Trees and special files*);
hv-emu matches its exit status and its skip rules, and never ends in an internal error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hv_emu.cli import scan_files
from hv_emu.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "e.db"
    path.write_bytes(b"EICAR=" + EICAR.hex().encode() + b"\n")
    return path


def scan(argv: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["scan", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def hv_emu(*argv: str | Path | bytes, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    """This tree's ``hv-emu`` in a child process (a blocking read cannot hang the test run), its
    standard streams strict UTF-8 as under a desktop's locale (C.UTF-8 would let anything by)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "hv_emu", *argv], env=env, capture_output=True,
                          timeout=timeout, check=False)  # fmt: skip


def test_a_tree_1000_levels_deep_stops_at_max_dir_recursion(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """clamscan -r enters directories to depth 15 (--max-dir-recursion; the named directory is
    depth 1) and silently leaves the rest; hv-emu does the same and says where it stopped."""
    top = tmp_path / "deep"
    levels = [top / "/".join(["d"] * n) for n in range(1000)]
    try:
        for level in levels:  # one at a time: mkdir(parents=True) recurses
            level.mkdir()
        for depth in (1, 15, 16, 1000):
            (levels[depth - 1] / "e.com").write_bytes(EICAR)
        code, out, err = scan(["--db", db, "-i", top], capsys)
        assert code == 1, err
        assert out.splitlines() == [f"{levels[0]}/e.com: EICAR FOUND",
                                    f"{levels[14]}/e.com: EICAR FOUND"]  # fmt: skip
        limit = f"hv-emu: warning: {levels[15]}: not scanned: deeper than --max-dir-recursion 15"
        assert limit + "\n" in err
        assert "Scanned files: 2\n" in err and "Total errors: 0\n" in err
        code, out, err = scan(["--db", db, "-i", "--max-dir-recursion", "1", top], capsys)
        assert (code, out) == (1, f"{levels[0]}/e.com: EICAR FOUND\n")
        code, out, err = scan(["--db", db, "--max-dir-recursion", "2000", top], capsys)
        assert code == 1 and len(out.splitlines()) == 4, err  # iterative: no RecursionError
    finally:  # shutil.rmtree recurses too: pytest could not clean this tree up
        for level in reversed(levels):
            if level.is_dir():
                for child in level.iterdir():
                    if not child.is_dir():
                        child.unlink()
                level.rmdir()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_special_files_named_or_linked_are_skipped_as_clamscan_does(
    tmp_path: Path, db: Path
) -> None:
    """clamscan: ``WARNING: /dev/zero: Not supported file type``, not scanned, exit 2. A FIFO
    would block, /dev/zero never end; a link to either, named or in a tree, is not followed."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "to-fifo").symlink_to(tmp_path / "fifo")
    (tmp_path / "to-zero").symlink_to("/dev/zero")
    (tmp_path / "ok.txt").write_bytes(b"clean")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "zero").symlink_to("/dev/zero")
    (tree / "fifo").symlink_to(tmp_path / "fifo")
    named = ["/dev/zero", tmp_path / "fifo", tmp_path / "to-fifo", tmp_path / "to-zero"]
    done = hv_emu("scan", "--db", db, *named, tmp_path / "ok.txt", tree, timeout=20)
    assert done.returncode == 2, done.stderr
    assert done.stdout.decode() == f"{tmp_path / 'ok.txt'}: OK\n"
    err = done.stderr.decode()
    for path in named:
        assert f"hv-emu: warning: {path}: Not supported file type\n" in err
    assert "Scanned files: 1\n" in err and "Traceback" not in err
    done = hv_emu("scan", "--db", db, "--json", "/dev/zero", timeout=20)
    assert done.returncode == 2
    assert b'"status": "error"' in done.stdout and b"Not supported file type" in done.stdout


def test_symbolic_link_loops_end(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "up").symlink_to(tree)  # a loop inside the tree: not followed
    (tree / "sub" / "e.com").write_bytes(EICAR)
    (tmp_path / "self").symlink_to(tmp_path / "self")  # named: cannot be resolved
    (tmp_path / "to-tree").symlink_to(tree)  # named link to a directory: followed
    code, out, err = scan(["--db", db, "-i", tree, tmp_path / "self", tmp_path / "to-tree"],
                          capsys)  # fmt: skip
    assert code == 1
    assert out.splitlines() == [f"{tree}/sub/e.com: EICAR FOUND",
                                f"{tmp_path}/to-tree/sub/e.com: EICAR FOUND"]  # fmt: skip
    assert f"hv-emu: {tmp_path / 'self'}: cannot access: Too many levels of symbolic links\n" in err


def test_a_directory_that_vanishes_mid_walk_is_one_line(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "b" / "c").mkdir(parents=True)
    (tree / "a" / "x").write_bytes(b"x")
    walk = scan_files.walk([tree])
    first = next(walk)
    assert first.path == tree / "a" / "x"
    shutil.rmtree(tree / "b")
    rest = list(walk)
    assert [(item.path, item.problem and item.problem.message) for item in rest] == [
        (tree / "b", "cannot list directory: No such file or directory")
    ]


def test_an_unlistable_directory_is_one_line_and_exit_2(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, mode 000 does not stop a listing: the refusal is simulated."""
    tree = tmp_path / "tree"
    (tree / "locked").mkdir(parents=True)
    (tree / "ok").write_bytes(b"clean")
    real = os.scandir

    def scandir(path: str | Path) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(scan_files.os, "scandir", scandir)
    code, out, err = scan(["--db", db, tree], capsys)
    assert (code, out) == (2, f"{tree}/ok: OK\n")
    assert f"hv-emu: {tree}/locked: cannot list directory: Permission denied\n" in err
    assert "----------- SCAN SUMMARY" in err


def test_a_file_that_grows_is_read_to_its_size_at_open(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As clamscan maps a file by its size at open: a writer appending forever cannot keep the
    scan going (and a body appended after the open is not part of this scan)."""
    monkeypatch.setattr(scan_files, "CHUNK", 10)
    grower = tmp_path / "grows.log"
    grower.write_bytes(b"." * 100)

    calls = []

    def append(size: int) -> None:
        calls.append(size)
        assert len(calls) < 1000, "the scan follows the writer and never ends"
        with grower.open("ab") as handle:
            handle.write(EICAR)

    from hv_emu.scanner.database_files import compile_files

    result = scan_files.scan_file(compile_files([db]), grower, append)
    assert (result.size, result.names, result.error) == (100, [], None)


def test_names_that_are_not_utf8_are_printed_as_their_bytes(tmp_path: Path, db: Path) -> None:
    """clamscan writes a file name's bytes as they are; so does hv-emu (never a crash)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    name = os.fsencode(tree) + b"/bad\xff\xfename.com"
    with open(name, "wb") as handle:
        handle.write(EICAR)
    done = hv_emu("scan", "--db", db, tree)
    assert done.returncode == 1, done.stderr
    assert done.stdout == name + b": EICAR FOUND\n"
    done = hv_emu("scan", "--db", db, "--json", name)
    assert done.returncode == 1 and b'bad\\udcff\\udcfename.com' in done.stdout
    done = hv_emu("scan", "--db", db, os.fsencode(tree) + b"/missing\xff")
    assert done.returncode == 2
    assert done.stderr.startswith(b"hv-emu: " + os.fsencode(tree) + b"/missing\xff: cannot access")


def test_paths_longer_than_path_max_are_one_line(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tree deeper than PATH_MAX (4096 bytes) as a path: built with directory descriptors."""
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        for _ in range(25):  # 25 x 200 bytes
            os.mkdir("x" * 199, dir_fd=fd)
            child = os.open("x" * 199, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    code, _, err = scan(["--db", db, "--max-dir-recursion", "100", tmp_path / ("x" * 199)],
                          capsys)  # fmt: skip
    assert code == 2 and "File name too long" in err, err
    assert len([line for line in err.splitlines() if line.startswith("hv-emu: ")]) == 1
    assert "----------- SCAN SUMMARY" in err


def test_infected_only_filters_json_lines_as_it_does_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hv_emu.cli.main import main

    db = tmp_path / "sig.ndb"
    db.write_text("Found.Me:0:*:68762d656d752d66696e64\n")  # "hv-emu-find"
    (tmp_path / "dirty.bin").write_bytes(b"...hv-emu-find...")
    (tmp_path / "clean.bin").write_bytes(b"nothing here at all")
    assert main(["scan", "-i", "--json", "--db", str(db), str(tmp_path / "dirty.bin"),
                 str(tmp_path / "clean.bin")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and '"found"' in lines[0] and "dirty.bin" in lines[0]
