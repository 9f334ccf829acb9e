"""Standard output that cannot be written is one line and exit status 2, a reader of it that went
away is a quiet 141 (hv_emu/usage.py), never "internal error" and 70; an option naming one file
given twice is refused; a trailing ``--`` is no program arguments (found by a new-user tester)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from guest_tool.cli import main as guest_tool
from guest_tool.keys import generate_keypair
from guest_tool.programs import build_program
from hv_emu import SAMPLE_DB
from hv_emu.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CAT = Path("/usr/bin/cat")


def command(*argv: str, shell_tail: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGV...`` from the worktree, its redirections in ``shell_tail``."""
    script = '"$0" "$@" ' + shell_tail
    return subprocess.run(["sh", "-c", script, sys.executable, *argv], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    image = tmp_path / "hello.bin"
    image.write_bytes(build_program("hello"))
    return image


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Enough files that their OK lines overflow a pipe's buffer (64 KiB)."""
    top = tmp_path / "tree"
    top.mkdir()
    for n in range(1500):
        (top / f"file-with-a-longish-name-{n:05}.txt").write_bytes(b"clean")
    return top


def test_scan_into_a_closed_pipe_ends_quietly_with_141(tree: Path) -> None:
    child = subprocess.Popen([sys.executable, "-m", "hv_emu", "scan", "--no-cache", "--db",
                              str(SAMPLE_DB), str(tree)], cwd=ROOT, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline().endswith(b": OK\n")
    child.stdout.close()  # as `| head -1` does
    err = child.stderr.read()
    assert child.wait(timeout=120) == 141
    assert b"Error" not in err and b"internal" not in err and b"Traceback" not in err


@pytest.mark.parametrize("tool", ["hv_emu", "guest_tool"])
def test_a_full_disk_on_standard_output_is_one_line(tool: str, tree: Path, tmp_path: Path) -> None:
    argv = (["scan", "--no-cache", "--db", str(SAMPLE_DB), str(tree)] if tool == "hv_emu"
            else ["sample-db", "-o", str(tmp_path / "s.db")])  # fmt: skip
    done = command("-m", tool, *argv, shell_tail="> /dev/full")
    prog = tool.replace("_", "-")
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{prog}: ")]
    assert errors == [f"{prog}: error: cannot write standard output: No space left on device"]
    assert done.returncode == 2 and "Traceback" not in done.stderr


@pytest.mark.parametrize("tool", ["hv_emu", "guest_tool"])
def test_a_closed_standard_output_is_one_line(tool: str, hello: Path, tmp_path: Path) -> None:
    argv = ["run", str(hello)] if tool == "hv_emu" else ["sample-db", "-o", str(tmp_path / "s")]
    done = command("-m", tool, *argv, shell_tail=">&-")
    prog = tool.replace("_", "-")
    assert done.stderr.startswith(f"{prog}: error: standard output is closed")
    assert done.stderr.count("\n") == 1 and done.returncode == 2
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_closed_standard_output_in_process(
    hello: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["run", str(hello)]) == 2
    assert "standard output is closed" in capsys.readouterr().err


def test_guest_tool_writing_to_a_full_device_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert guest_tool(["sample-db", "-o", "/dev/full"]) == 2
    assert capsys.readouterr().err == (
        "guest-tool: error: cannot write /dev/full: No space left on device\n")


@pytest.mark.skipif(not CAT.is_file(), reason="needs /usr/bin/cat")
def test_a_linux_program_writing_to_a_full_disk_gets_an_error_not_hv_emu(tmp_path: Path) -> None:
    """The program's write(2) fails (EIO: the personality's errno list has no ENOSPC); it says
    so and exits 1; hv-emu reports the program's status, no internal error."""
    (tmp_path / "in.txt").write_text("some text\n")
    done = command("-m", "hv_emu", "run", str(CAT), "--sysroot", "/", "--file",
                   f"/in.txt={tmp_path / 'in.txt'}", "--", "/in.txt",
                   shell_tail="> /dev/full")  # fmt: skip
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert done.returncode == 1 and "cat: write error" in done.stderr


@pytest.mark.parametrize("option", ["--db", "--report", "--events", "--state", "--disk"])
def test_an_option_naming_one_file_twice_is_refused(
    option: str, hello: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse would keep the last and drop the first without a word."""
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(SystemExit) as stopped:
        main(["run", str(hello), option, str(a), option, str(b)])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"hv-emu run: error: {option} given twice ({a}, {b}): it takes one (see --help)\n")


def test_trust_still_repeats(tmp_path: Path, hello: Path) -> None:
    _, one = generate_keypair(tmp_path / "one")
    _, two = generate_keypair(tmp_path / "two")
    assert main(["run", str(hello), "-q", "--trust", str(one), "--trust", str(two)]) == 0


def test_a_trailing_double_dash_is_no_program_arguments(
    hello: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(hello), "-q", "--"]) == 0
    assert capsys.readouterr().out == "hello from the guest\n"
    assert main(["run", str(hello), "-q", "--", "x"]) == 2  # a flat image takes no arguments
    assert "apply to ELF programs only" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/usr/bin/true").is_file(), reason="needs /usr/bin/true")
def test_an_elf_program_with_empty_arguments_after_double_dash() -> None:
    done = command("-m", "hv_emu", "run", "/usr/bin/true", "--sysroot", "/", "-q", "--")
    assert done.returncode == 0, done.stderr
