"""Every file a command reads by name refuses a FIFO (or /dev/zero) in one line, exit 2, instead of
waiting forever for a writer: the image, trusted keys, the database, the bundle and its
signature, assembly sources (found by a new user trying the installed wheel)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from guest_tool.cli import main as guest_tool
from hv_emu.cli.main import main as hv_emu
from tests.rigs.named_files import bounded, fifo

Command = Callable[[Path, Path], list[str]]

COMMANDS: dict[str, tuple[Callable[[list[str]], int], Command]] = {
    "run IMAGE": (hv_emu, lambda bad, _: ["run", str(bad)]),
    "run --trust": (hv_emu, lambda bad, ok: ["run", str(ok), "--trust", str(bad)]),
    "bundle --db": (guest_tool, lambda bad, ok: ["bundle", "--db", str(bad), "--kind", "db",
                                                 "--version", "1", "--key", str(ok), "-o",
                                                 str(ok.parent / "x.hvdb")]),
    "bundle --key": (guest_tool, lambda bad, ok: ["bundle", "--db", str(ok.parent / "s.db"),
                                                  "--version", "1", "--key", str(bad), "-o",
                                                  str(ok.parent / "x.hvdb")]),
    "build --bundle": (guest_tool, lambda bad, ok: ["build", "--bundle", str(bad), "--sig",
                                                    str(ok), "-o", str(ok.parent / "x.bin")]),
    "build --asm": (guest_tool, lambda bad, ok: ["build", "--asm", str(bad), "-o",
                                                 str(ok.parent / "x.bin")]),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_a_special_file_named_as_input_is_one_line_not_a_hang(
    name: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main, argv = COMMANDS[name]
    ok = tmp_path / "ok.bin"
    ok.write_bytes(b"\xf4")  # hlt: a valid flat image, and some file for the other slots
    (tmp_path / "s.db").write_text("Sig=41424344\n")
    bad = tmp_path / "input"
    if kind == "fifo":
        fifo(bad)
    else:
        os.symlink("/dev/zero", bad)
    code = bounded(lambda: main(argv(bad, ok)), blocking_on=bad)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and "not a regular file" in err, err
