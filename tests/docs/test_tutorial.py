"""docs/TUTORIAL.md, run as written: every command in order, its output compared with the page.

Times and percentages vary from run to run, so numbers with a decimal point compare as equal and
runs of blanks as one; a line ``...`` on the page stands for any number of lines.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "TUTORIAL.md"
BLOCK = re.compile(r"```(console|asm)\n(.*?)```", re.DOTALL)
SAVE_AS = re.compile(r"as `([\w.-]+\.s)`:")


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


def console_commands(text: str) -> list[Command]:
    commands: list[Command] = []
    for line in text.rstrip("\n").splitlines():
        if line.startswith("$ "):
            commands.append(Command(line[2:]))
        else:
            commands[-1].expected.append(line)
    return commands


def normal(line: str) -> str:
    return " ".join(re.sub(r"\d+\.\d+", "N", line).split())


def matches(expected: list[str], actual: list[str]) -> bool:
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and normal(expected[0]) == normal(actual[0]) and matches(
        expected[1:], actual[1:])


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_matching_rules() -> None:
    assert matches(["a 1.5us", "...", "z"], ["a  2.25us", "b", "c", "z"])
    assert matches(["..."], [])
    assert not matches(["a", "z"], ["a", "b", "z"])
    assert not matches(["hello"], ["hello", "extra"])


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    doc = DOC.read_text(encoding="utf-8")
    # The commands run this tree's code (a worktree's, not only the installed checkout's).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT),
                                                        os.environ.get("PYTHONPATH")))))
    cwd = tmp_path
    ran = skipped = 0
    for block in BLOCK.finditer(doc):
        kind, text = block.groups()
        if kind == "asm":
            name = SAVE_AS.findall(doc[: block.start()])[-1]
            (cwd / name).write_text(text, encoding="utf-8")
            continue
        commands = console_commands(text)
        if any(c.line.startswith("gdb ") for c in commands) and shutil.which("gdb") is None:
            skipped += len(commands)  # the gdb step needs gdb (CI installs it)
            continue
        port = str(free_port())
        background: list[subprocess.Popen[bytes]] = []
        for command in commands:
            line = command.line.replace("1234", port)
            if line.startswith("cd "):
                cwd = cwd / line[3:]
                continue
            if line.endswith("&"):
                background.append(subprocess.Popen(["bash", "-c", line[:-1]], cwd=cwd, env=env,
                                                   stdin=subprocess.DEVNULL))  # fmt: skip
                continue
            done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, timeout=120,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, check=False)  # fmt: skip
            ran += 1
            actual = done.stdout.rstrip("\n").splitlines()
            assert matches(command.expected, actual), (
                f"$ {command.line}\n--- the tutorial shows:\n" + "\n".join(command.expected)
                + "\n--- the command printed:\n" + done.stdout)  # fmt: skip
        for job in background:
            assert job.wait(timeout=60) == 0
    assert ran + skipped >= 18
    if skipped:
        pytest.skip(f"gdb is not installed: {skipped} commands of the gdb step not run")


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Learning and testing with hv-emu\n", 1)[1].split("\n## ", 1)[0]


def test_the_readmes_commands_run_as_written(tmp_path: Path) -> None:
    section = readme_section()
    blocks = re.findall(r"```\n(.*?)```", section, re.DOTALL)
    trace, debug = (block.strip().splitlines() for block in blocks)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def sh(line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    for line in trace:
        done = sh(line)
        assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the guest\n"
    assert "IO_INSTRUCTION" in done.stderr and "Analyze events for all VCPUs:" in done.stderr
    if shutil.which("gdb") is None:
        pytest.skip("gdb is not installed: the README's gdb example not run")
    doc = DOC.read_text(encoding="utf-8")
    remap = re.search(r"as `remap\.s`:\n\n```asm\n(.*?)```", doc, re.DOTALL)
    assert remap is not None
    (tmp_path / "remap.s").write_text(remap.group(1), encoding="utf-8")
    assert sh("guest-tool build --asm remap.s -o remap.bin").returncode == 0
    port = str(free_port())
    hv = subprocess.Popen(["bash", "-c", debug[0].replace("1234", port)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    gdb = sh(debug[1].replace("1234", port))
    out, err = hv.communicate(timeout=60)
    assert "Breakpoint 1, 0x0000000000100044" in gdb.stdout, gdb.stdout + gdb.stderr
    assert hv.returncode == 0 and out == "1\n" and "guest halted: 1 hypercalls" in err
