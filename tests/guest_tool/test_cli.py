"""``guest-tool build --program NAME`` as a new user meets it: every program the help lists builds
and runs, and the programs that need data name the option that builds them.

The commands run in-process (``guest_tool.cli.main``): the ``guest-tool`` on PATH may be another
checkout's."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from guest_tool.cli import main
from guest_tool.programs import NEEDS_DATA, available_programs, buildable_programs
from hv_emu import __version__
from hv_emu.machine import MachineConfig
from hv_emu.testing import Hypervisor
from hv_emu.usage import plural

#: What each program prints first when run as ``guest-tool build`` says to (with a disk).
FIRST_WORDS = {"hello": "hello from the guest", "identify": "identify: HV-EMU HARDDISK",
               "nic": "nic: no card", "status": "hv-emu ", "ahci": "ahci: CAP=c0141f05"}


def test_the_help_lists_the_programs_build_program_builds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    listed = re.search(r"--program NAME .*?one of: ([\w, ]+)", help_text)
    assert listed is not None, help_text
    assert listed.group(1).strip().split(", ") == list(buildable_programs())
    assert set(buildable_programs()) | set(NEEDS_DATA) == set(available_programs())
    assert set(FIRST_WORDS) == set(buildable_programs())


@pytest.mark.parametrize("name", list(buildable_programs()))
def test_every_listed_program_builds_and_runs(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"{name}.bin"
    mode = max(buildable_programs()[name])  # 64 where there is one (the default), else the widest
    mode_args = [] if mode == 64 else ["--mode", str(mode)]
    assert main(["build", "--program", name, "-o", str(out), *mode_args]) == 0
    hint = shlex.split(capsys.readouterr().out.split("run it with: ", 1)[1])
    assert hint[:3] == ["hv-emu", "run", str(out)]
    controller = "ahci" if name == "ahci" else "ide"
    config = MachineConfig(disk=tmp_path / "disk.img", disk_size_mib=1, timeout=10.0,
                           disk_controller=controller)  # fmt: skip
    if name == "identify":
        assert hint[3:] == ["--disk", "DISK.img"]
    if name == "ahci":
        assert hint[3:] == [*mode_args, "--disk", "DISK.img", "--disk-controller", "ahci"]
    hv = Hypervisor(config)
    try:
        run = hv.run_image(out.read_bytes(), mode=mode)
    finally:
        hv.close()
    assert run.halted, run.exit
    assert run.output.startswith(FIRST_WORDS[name]), run.output


@pytest.mark.parametrize("name", list(NEEDS_DATA))
def test_a_program_that_needs_data_names_its_option(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--program", name, "-o", str(tmp_path / "g.bin")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"guest-tool build {NEEDS_DATA[name].option}" in err
    assert "()" not in err  # no Python function for a command-line user


def test_an_unknown_program_lists_the_ones_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", "--program", "nosuch", "-o", str(tmp_path / "g.bin")]) == 2
    err = capsys.readouterr().err
    assert f"no program 'nosuch'; one of: {', '.join(buildable_programs())}" in err
    assert not (tmp_path / "g.bin").exists()


def test_python_dash_m_guest_tool_is_the_command() -> None:
    root = Path(__file__).resolve().parents[2]  # `python -m` imports this checkout's guest_tool
    done = subprocess.run([sys.executable, "-m", "guest_tool", "--version"], cwd=root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"guest-tool {__version__}\n", "")


def test_counts_agree_with_their_nouns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [plural(n, "sector") for n in (0, 1, 2)] == ["0 sectors", "1 sector", "2 sectors"]
    assert [plural(n, "entry", "entries") for n in (1, 3)] == ["1 entry", "3 entries"]
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 10)
    out = tmp_path / "write.bin"
    assert main(["build", "--write", str(payload), "-o", str(out)]) == 0
    assert ": 1 sector at LBA 0 via pio in 1 command; run it with" in capsys.readouterr().out
    payload.write_bytes(b"x" * 1024)
    assert main(["build", "--write", str(payload), "--per-command", "1", "-o", str(out)]) == 0
    assert ": 2 sectors at LBA 0 via pio in 2 commands; run it with" in capsys.readouterr().out
    assert main(["build", "--write", str(payload), "--lba", str(1 << 48), "-o", str(out)]) == 2
    assert f"LBA {1 << 48} + 2 sectors is outside" in capsys.readouterr().err
