"""``hv-emu run --boot DISK.img`` (in process: the worktree's own CLI): a boot sector runs from
0000:7C00 with DL = 80h, every other run option applies, and a wrong combination or an
unbootable disk is one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hv_emu.cli.main import main
from tests.rigs.firmware import SIG, boot_sector

BOOT = """
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov al, dl               # the boot drive, as a character: 80h + 'A' - 80h
    sub al, 0x80 - 'A'
    out 0xe9, al
    mov ah, 0x0e
    int 0x10                 # needs the CPU's IVT delivery (or a BIOS call by far call)
    cli
    hlt
"""

FAR_CALL_BOOT = """
    xor ax, ax
    mov ds, ax
    mov al, dl
    sub al, 0x80 - 'A'
    out 0xe9, al
    mov ah, 0x0e
    pushf
    lcall [0x10 * 4]         # int 10h's stub, called as a chaining handler would
    mov si, dap
    mov ah, 0x43
    mov dl, 0x80
    pushf
    lcall [0x13 * 4]
    cli
    hlt
dap: .byte 16, 0
    .word 1, sig, 0          # one sector from the signature on: to LBA 3
    .long 3, 0
sig: .byte """ + ", ".join(f"{b:#x}" for b in SIG) + "\n"


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_boot_runs_sector_0_at_7c00_with_dl_80h(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector(FAR_CALL_BOOT) + bytes(8192))
    sigs = tmp_path / "sig.ndb"
    sigs.write_text(f"Test.Sig:0:*:{SIG.hex()}\n")
    screen, events = tmp_path / "screen.txt", tmp_path / "events.jsonl"
    status = main(["run", "--boot", str(disk), "--db", str(sigs), "--on-detect", "warn,zero-fill",
                   "--screen", str(screen), "--events", str(events)])  # fmt: skip
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out == "A"
    assert screen.read_text().splitlines()[0] == "A"
    assert "1 detections in disk writes" in err
    written = disk.read_bytes()[3 * 512 : 4 * 512]
    assert SIG not in written and written.startswith(bytes(len(SIG)))  # zero-filled
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert "detection" in kinds and kinds[-1] == "halt"


def test_boot_with_trace_names_the_firmware_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector(FAR_CALL_BOOT) + bytes(8192))
    assert main(["run", "--boot", str(disk), "--trace"]) == 0
    err = capsys.readouterr().err
    assert "FIRMWARE" in err and "bios int 10h" in err and "bios int 13h" in err, err


@pytest.mark.parametrize(("extra", "says"), [
    (["IMAGE"], "--boot DISK.img takes the place of IMAGE: give one or the other"),
    (["--disk", "other.img"], "--disk and --disk-size cannot go with it"),
    (["--disk-size", "1"], "--disk and --disk-size cannot go with it"),
    (["--load", "0x7c00"], "apply to an IMAGE, not to --boot"),
])  # fmt: skip
def test_boot_refuses_what_cannot_go_with_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             extra: list[str], says: str) -> None:  # fmt: skip
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector("hlt"))
    (tmp_path / "IMAGE").write_bytes(b"\xf4")
    extra = [str(tmp_path / e) if e == "IMAGE" else e for e in extra]
    assert main(["run", "--boot", str(disk), *extra]) == 2
    assert says in one_line(capsys.readouterr().err)


def test_a_disk_without_55_aa_is_no_bootable_device(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "blank.img"
    disk.write_bytes(bytes(4096))
    assert main(["run", "--boot", str(disk)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"hv-emu: error: {disk}: no bootable device: sector 0 does not end in 55 AA")


def test_boot_of_a_missing_file_and_no_image_at_all_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--boot", str(tmp_path / "nope.img")]) == 2
    assert "no such disk image file" in one_line(capsys.readouterr().err)
    assert main(["run", "--boot", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err).endswith(f"--boot {tmp_path}: is not a regular file")
    assert main(["run"]) == 2
    assert "needs an IMAGE to run, or --boot DISK.img" in one_line(capsys.readouterr().err)
