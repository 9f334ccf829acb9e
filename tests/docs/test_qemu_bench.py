"""The QEMU comparison of docs/PERFORMANCE.md (``benchmarks/qemu.py``): its one guest builds, runs
on hv-emu, and, where ``qemu-system-x86_64`` is installed, runs on QEMU too and writes the same
bytes to the disk. Not timed: each guest runs a handful of units."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import qemu

CASES = (qemu.OUT, qemu.IN, qemu.PIO, qemu.MULTIPLE, qemu.DMA, qemu.PIO_READ, qemu.VMCALL)
NEEDS_QEMU = pytest.mark.skipif(qemu.qemu_path() is None,
                                reason="qemu-system-x86_64 is not installed")  # fmt: skip
#: Units per smoke run: 3 commands of WRITE MULTIPLE cover 384 KiB, several passes of the buffer.
UNITS = 3


def _written(image: Path, case: qemu.Case) -> bytes:
    start = qemu.LBA_BASE * qemu.SECTOR
    return image.read_bytes()[start : start + UNITS * case.writes + qemu.SECTOR]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"kind{c.kind}")
def test_the_guest_is_one_boot_sector(case: qemu.Case) -> None:
    sector = qemu.boot_sector(case, 1000)
    assert len(sector) == 512 and sector.endswith(b"\x55\xaa")
    assert qemu.boot_sector(case, 0) != sector  # the count is in the code


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"kind{c.kind}")
def test_hv_emu_runs_the_guest(case: qemu.Case, tmp_path: Path) -> None:
    outcome = qemu.run_hv_emu(case, UNITS, tmp_path)
    assert outcome.ok, outcome.detail
    if case.writes:
        data = _written(tmp_path / "hv.img", case)
        assert data[-qemu.SECTOR:] == bytes(qemu.SECTOR)  # nothing past the last command
        assert data[: qemu.SECTOR] != bytes(qemu.SECTOR)


@NEEDS_QEMU
@pytest.mark.parametrize("case", CASES[:-1], ids=lambda c: f"kind{c.kind}")
def test_qemu_runs_the_same_guest(case: qemu.Case, tmp_path: Path) -> None:
    outcome = qemu.run_qemu(case, UNITS, tmp_path)
    assert outcome.ok, outcome.detail
    if case.writes:
        assert qemu.run_hv_emu(case, UNITS, tmp_path).ok
        assert _written(tmp_path / "qemu.img", case) == _written(tmp_path / "hv.img", case)


@NEEDS_QEMU
def test_a_failing_guest_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu, "PCI_IDE", qemu.PCI_IDE + (1 << 11))  # BAR4 of an absent function
    for run in (qemu.run_qemu, qemu.run_hv_emu):
        assert not run(qemu.DMA, 1, tmp_path).ok


def test_the_benchmark_skips_without_qemu(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(qemu, "qemu_path", lambda: None)
    assert qemu.run() == []
    assert "skipped" in capsys.readouterr().err
