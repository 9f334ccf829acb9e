"""The disk on the command line: docs/STORAGE.md's commands as written, ``--disk``, ``--disk-size``,
``--on-detect``, ``--screen``, ``guest-tool build --write``, and their one-line errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.rigs.commands import one_line, sh

DOC = (ROOT / "docs" / "STORAGE.md").read_text(encoding="utf-8")


def doc_commands() -> list[list[str]]:
    block = DOC.split("## By hand\n\n```\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.strip().splitlines()]


def test_the_storage_doc_commands_work_as_written(tmp_path: Path) -> None:
    commands = doc_commands()
    assert [c[:2] for c in commands] == [
        ["guest-tool", "sample-db"], ["python", "-c"], ["guest-tool", "build"], ["hv-emu", "run"],
        ["hv-emu", "run"],
    ]
    outputs = []
    for argv in commands:
        done = sh(*argv, cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
        outputs.append(done)
    assert "2 sectors at LBA 100 via dma in 1 command" in outputs[2].stdout
    # Aircop's 16-byte body has one zero byte already: 15 bytes change.
    assert outputs[3].stdout == ("diskwrite: LBA 100, 2 sectors via dma in 1 commands: ok\n"
                                 "read back: 15 bytes differ\n")  # fmt: skip
    assert "1 detections in disk writes" in outputs[3].stderr
    assert outputs[4].stdout == ("diskwrite: LBA 100, 2 sectors via dma in 1 commands: "
                                 "refused at LBA 100 (error 4)\n")  # fmt: skip
    screen = (tmp_path / "screen.txt").read_text(encoding="utf-8").split("\n")
    assert len(screen) == 26 and screen[-1] == ""  # 25 lines, each ending in a newline
    assert any("signature: Aircop" in row for row in screen)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    [found] = [e for e in events if e["event"] == "detection"]
    assert (found["signature"], found["lba"], found["offset"], found["length"]) == (
        "Aircop", 100, 500, 16)
    assert [e["event"] for e in events].count("network_cut") == 1
    image = (tmp_path / "disk.img").read_bytes()
    payload = bytearray((tmp_path / "payload.bin").read_bytes().ljust(1024, b"\0"))
    payload[500:516] = bytes(16)
    expected = bytearray(16 << 20)
    expected[100 * 512 : 102 * 512] = payload
    assert image == expected  # the refused second write changed nothing


def test_screen_without_a_disk_is_the_guests_own_screen(tmp_path: Path) -> None:
    from guest_tool.assemble import assemble

    (tmp_path / "g.bin").write_bytes(assemble(
        "mov rdi, 0xb8000\n mov word ptr [rdi], 0x0748\n mov word ptr [rdi + 2], 0x0769\n hlt",
        mode=64, address=0x100000))  # fmt: skip
    done = sh("hv-emu", "run", "g.bin", "--screen", "s.txt", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "s.txt").read_text(encoding="utf-8") == "Hi\n" + "\n" * 24


@pytest.mark.parametrize(("extra", "message"), [
    (["--on-detect", "warn,shred"], "argument --on-detect: unknown action 'shred'"),
    (["--on-detect", ""], "argument --on-detect: no action given"),
    (["--disk-size", "4"], "--disk-size needs --disk"),
    (["--disk", "missing.img"], "cannot open disk image missing.img"),
    (["--disk", "d.img", "--disk-size", "0"], "disk size must be a positive number of MiB"),
    (["--disk", "exists.img", "--disk-size", "4"], "exists; refusing to overwrite it"),
    (["--disk", "tiny.img"], "smaller than one sector"),
    (["--disk", "d.img", "--disk-size", "4", "--screen", "nodir/s.txt"],
     "nodir/s.txt: No such file or directory"),
])  # fmt: skip
def test_disk_flags_fail_in_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    from guest_tool.assemble import assemble

    (tmp_path / "g.bin").write_bytes(assemble("hlt", mode=64, address=0x100000))
    (tmp_path / "exists.img").write_bytes(bytes(4096))
    (tmp_path / "tiny.img").write_bytes(bytes(100))
    done = sh("hv-emu", "run", "g.bin", *extra, cwd=tmp_path)
    assert done.returncode == 2
    assert message in one_line(done.stderr)


@pytest.mark.parametrize(("extra", "message"), [
    (["--lba", "-1"], "outside 48-bit addressing"),
    (["--via", "usb"], "argument --via: invalid choice"),
    (["--per-command", "300"], "sectors per command must be 1..256"),
    (["--prd-bytes", "3", "--via", "dma"], "even size"),
    (["--per-command", "256", "--prd-bytes", "2", "--via", "dma"], "bus master walks at most"),
    (["--mode", "32"], "64-bit guest only"),
    (["--bundle", "x.hvdb"], "not allowed with argument --write"),
])  # fmt: skip
def test_build_write_fails_in_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    (tmp_path / "p.bin").write_bytes(bytes(256 * 512))
    done = sh("guest-tool", "build", "--write", "p.bin", "-o", "g.bin", *extra, cwd=tmp_path)
    assert done.returncode == 2
    assert message in one_line(done.stderr)
    assert not (tmp_path / "g.bin").exists()


def test_build_write_of_an_empty_or_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty.bin").write_bytes(b"")
    for name, message in (("empty.bin", "payload is empty"), ("none.bin", "cannot read payload")):
        done = sh("guest-tool", "build", "--write", name, "-o", "g.bin", cwd=tmp_path)
        assert done.returncode == 2 and message in one_line(done.stderr)
