"""The AHCI path end to end: ``asm/programs/ahci32.s`` (the learners' driver) on the real vCPU
through MMIO, from the command line, with the inspection on, and against QEMU q35's own ICH9
AHCI: the same bytes print the same lines and leave byte-identical disk images."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest_tool.programs import build_program
from hv_emu.cli.main import main
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.qemu import Drive, needs_qemu, run_qemu

DISK_MIB = 1
#: The LBAs the driver writes and which bytes of its 64 KiB pattern land there.
LAYOUT = ((8, 0, 12288), (40, 16384, 2048), (64, 12288, 4096))


def guest_pattern() -> bytes:
    """The driver's data (its ``fill`` loop): dword i = ((i * 0x9e3779b1) mod 2^32 >> 13) ^ i."""
    words = (((i * 0x9E3779B1) & 0xFFFFFFFF) >> 13 ^ i for i in range(0x4000))
    return b"".join(w.to_bytes(4, "little") for w in words)


def expected_image(zero: tuple[int, int] | None = None) -> bytes:
    image = bytearray(DISK_MIB << 20)
    data = guest_pattern()
    for lba, start, n in LAYOUT:
        image[lba * 512 : lba * 512 + n] = data[start : start + n]
    if zero is not None:
        image[zero[0] : zero[1]] = bytes(zero[1] - zero[0])
    return bytes(image)


@pytest.fixture(scope="module")
def driver() -> bytes:
    return build_program("ahci", mode=32)


def run_on_hv_emu(tmp_path: Path, image: bytes, db: Path | None = None,
                  actions: tuple[str, ...] = ("warn",)) -> tuple[str, Machine]:  # fmt: skip
    m = Machine(MachineConfig(timeout=20.0, disk=tmp_path / "disk.img", disk_size_mib=DISK_MIB,
                              disk_controller="ahci", db=db, on_detect=actions))  # fmt: skip
    try:
        m.load(image, mode=32)
        result = m.run()
        assert result.halted, result.exit
        return m.debugcon.text(), m
    finally:
        m.close()


def test_the_driver_brings_the_port_up_writes_with_prdts_and_ncq_and_reads_back(
    tmp_path: Path, driver: bytes
) -> None:
    text, m = run_on_hv_emu(tmp_path, driver)
    lines = text.splitlines()
    assert lines[0] == "ahci: CAP=c0141f05 PI=0000003f VS=00010000"
    assert lines[1] == "port0: SSTS=00000113 SIG=00000101 TFD=00000130"
    assert lines[2].startswith(f"identify: sectors={DISK_MIB * 2048} ncq-depth=32 lba48=1 ")
    assert "write dma ext (3 PRD entries): PRDBC=12288 TFD=00000050" in text
    assert "SDBS=1 FIS=000000a1" in text
    assert "readback: 0 bytes differ" in text and "ncq read (tag 5): 0 bytes differ" in text
    assert "read beyond the disk: TFD=00000401 TFES=1 CI=00000080 CI=00000000" in text
    assert lines[-1] == "ahci: done"
    assert (tmp_path / "disk.img").read_bytes() == expected_image()
    assert m.inspector is not None and m.inspector.sectors_written == 24 + 8 + 4


def test_a_signature_across_a_prd_entry_of_the_guests_write_is_zero_filled(
    tmp_path: Path, driver: bytes
) -> None:
    """The first write's PRD entries end at 5 KiB: a signature made of the 20 bytes around that
    boundary is found there, zero-filled before the image sees it, and the read-back says so."""
    sig = guest_pattern()[5120 - 10 : 5120 + 10]
    db = tmp_path / "test.ndb"
    db.write_text(f"Test.Prd:0:*:{sig.hex()}\n")
    text, m = run_on_hv_emu(tmp_path, driver, db, ("warn", "zero-fill"))
    assert m.detections == 1
    nonzero = 20 - sig.count(0)  # the zero bytes of the signature read back the same
    assert f"readback: {nonzero} bytes differ" in text and nonzero > 10
    at = 8 * 512 + 5120 - 10
    assert (tmp_path / "disk.img").read_bytes() == expected_image(zero=(at, at + 20))


def test_hv_emu_run_takes_disk_controller(tmp_path: Path, driver: bytes,
                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    image = tmp_path / "ahci32.bin"
    image.write_bytes(driver)
    disk = tmp_path / "disk.img"
    status = main(["run", str(image), "--mode", "32", "--disk", str(disk), "--disk-size", "1",
                   "--disk-controller", "ahci", "-q"])  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0 and out.endswith("ahci: done\n")
    # Without AHCI the driver finds no controller at 00:1f.2 and says so.
    status = main(["run", str(image), "--mode", "32", "--disk", str(disk), "-q"])
    assert status == 0 and capsys.readouterr().out == "ahci: no ICH9 AHCI at 00:1f.2\n"
    status = main(["run", str(image), "--mode", "32", "--disk-controller", "ahci"])
    assert status == 2
    assert "--disk-controller needs --disk" in capsys.readouterr().err


@needs_qemu
def test_the_driver_prints_the_same_and_writes_the_same_image_on_qemu_q35(
    tmp_path: Path, driver: bytes
) -> None:
    """QEMU loads the same bytes as a Multiboot kernel (the a.out-kludge header), SeaBIOS has
    assigned BAR5, and its ICH9 AHCI runs the commands: console and image must be identical."""
    kernel = tmp_path / "ahci32.bin"
    kernel.write_bytes(driver)
    qemu_disk = tmp_path / "qemu.img"
    qemu_disk.write_bytes(bytes(DISK_MIB << 20))
    qemu = run_qemu(tmp_path, machine="q35", kernel=kernel,
                    drives=[Drive(qemu_disk, interface="ahci")])  # fmt: skip
    assert qemu.exit_value == 0, qemu
    hv_dir = tmp_path / "hv"
    hv_dir.mkdir()
    text, _ = run_on_hv_emu(hv_dir, driver)
    assert text.encode() == qemu.console
    assert qemu.console.endswith(b"ahci: done\n")
    assert (hv_dir / "disk.img").read_bytes() == qemu_disk.read_bytes() == expected_image()
