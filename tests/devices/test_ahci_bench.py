"""The AHCI rows of ``make bench`` (``benchmarks/ahci.py``): its guest writes what it is timed for,
on hv-emu and, where it is installed, on QEMU q35. Not timed: each guest runs a few commands."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from benchmarks import ahci
from tests.rigs.qemu import needs_qemu

PAYLOAD = random.Random(16).randbytes(128 << 10)
COMMANDS = 3


def image_of(tmp_path: Path) -> Path:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(ahci.DISK_BYTES))
    return disk


def written(disk: Path) -> bytes:
    return disk.read_bytes()[: (COMMANDS + 1) * len(PAYLOAD)]


def test_the_guest_writes_its_payload_count_times_on_hv_emu(tmp_path: Path) -> None:
    disk = image_of(tmp_path)
    assert ahci.in_process_ms_per_mib(ahci.ahci_program(PAYLOAD, COMMANDS), COMMANDS * len(PAYLOAD),
                                      disk, None) > 0  # fmt: skip
    assert written(disk) == PAYLOAD * COMMANDS + bytes(len(PAYLOAD))


@pytest.mark.parametrize("count", [0, COMMANDS])
@needs_qemu
def test_qemu_and_hv_emu_processes_write_the_same(tmp_path: Path, count: int) -> None:
    kernel = tmp_path / "ahci.bin"
    kernel.write_bytes(ahci.ahci_program(PAYLOAD, count))
    disks = []
    for name, make in (("qemu", ahci.qemu_command), ("hv", ahci.hv_emu_command)):
        (tmp_path / name).mkdir()
        disk = image_of(tmp_path / name)
        done = subprocess.run(make(kernel, disk), capture_output=True, timeout=120, check=False,
                              cwd=Path(ahci.ROOT))  # fmt: skip
        assert done.returncode in (0, 1), done.stderr
        disks.append(written(disk))
    assert disks[0] == disks[1] == PAYLOAD * count + bytes((COMMANDS - count + 1) * len(PAYLOAD))
