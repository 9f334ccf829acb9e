"""docs/ELF.md agrees with the code: its system-call table matches hv_emu/linux/numbers.py and the
personality's handlers, and its "Try it" commands run as written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hv_emu.linux.numbers import I386, X86_64
from tests.rigs.linux import run_program

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ELF.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent


def table() -> dict[str, tuple[int | None, int | None, str]]:
    section = DOC.split("## The system-call table", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[int | None, int | None, str]] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            name, x64, i386, what = (cell.strip() for cell in line.strip("|").split("|"))
            rows[name.strip("`")] = (None if x64 == "-" else int(x64),
                                     None if i386 == "-" else int(i386), what)  # fmt: skip
    return rows


def test_the_system_call_table_matches_the_abi_tables_and_the_handlers() -> None:
    rows = table()
    assert {n: nr for n, (nr, _, _) in rows.items() if nr is not None} == {
        name: nr for nr, name in X86_64.items()}
    assert {n: nr for n, (_, nr, _) in rows.items() if nr is not None} == {
        name: nr for nr, name in I386.items()}
    implemented = run_program("").process.implemented
    for name, (_, _, what) in rows.items():
        assert what.startswith("-ENOSYS") == (name not in implemented), name


def test_the_try_it_commands_run_as_written(tmp_path: Path) -> None:
    block = DOC.split("## Try it\n\n```\n", 1)[1].split("```", 1)[0]
    commands = [line.split() for line in block.strip().splitlines()]
    expected = {"./hvupdate": 3, "hv-emu run vmcall": 1}  # no hv-emu natively; get_status is 1
    for line in commands:
        argv = list(line)
        if argv[0] == "gcc" and shutil.which("gcc") is None:
            pytest.skip("needs gcc (Debian: gcc) for the examples/vmcall.c step")
        argv = [str(ROOT / a) if a.startswith(("hv_emu/", "examples/")) else a for a in argv]
        if argv[0] in ("hv-emu", "guest-tool"):
            argv[0] = str(BIN / argv[0])
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        key = " ".join(line)
        want = next((code for prefix, code in expected.items() if key.startswith(prefix)), 0)
        assert done.returncode == want, f"{argv}: {done.stderr}"
        if argv[1:2] == ["run"] and "hvupdate" in argv[2]:
            assert done.stdout == "hvupdate: rc=0 (OK)\n"


def test_the_readme_elf_example_is_among_the_commands_run_above() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Running real guest update binaries", 1)[1].split("```\n", 1)[1]
    commands = block.split("```", 1)[0].strip().splitlines()
    tried = DOC.split("## Try it\n\n```\n", 1)[1].split("```", 1)[0].splitlines()
    assert commands and all(command in tried for command in commands)
