"""Shared helpers: assemble a small guest, boot it on a real Machine, look at what happened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from hv_emu.loaders.flat import default_load
from hv_emu.machine import Machine, MachineConfig, RunResult

ROOT = Path(__file__).resolve().parent.parent
RFXN = ROOT.parent / "shared" / "data" / "rfxn.ndb"

# The helpers of tests/rigs/ assert too: their failures read as a test module's would.
pytest.register_assert_rewrite("tests.rigs")

Boot = Callable[..., tuple[Machine, RunResult]]


def boot_asm(
    source: str,
    *,
    mode: int = 64,
    paging: str = "none",
    config: MachineConfig | None = None,
    machine: Machine | None = None,
) -> tuple[Machine, RunResult]:
    """Assemble ``source`` at the default load address of ``mode``, boot it, run it to its end."""
    image = assemble(source, mode=mode, address=default_load(mode))
    machine = machine or Machine(config or MachineConfig(timeout=10.0))
    machine.load(image, mode=mode, paging=paging)
    return machine, machine.run()


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test's ``hv-emu scan`` (in this process or a child) keeps its compiled databases in
    a cache directory of the test's own, never in the user's ``~/.cache/hv-emu``."""
    root = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "hv-emu"


@pytest.fixture
def boot() -> Boot:
    return boot_asm


@pytest.fixture
def rfxn() -> Path:
    if not RFXN.is_file():
        pytest.skip(f"the shared rfxn.ndb is not at {RFXN}")
    return RFXN


@pytest.fixture
def small_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hv-emu scan``'s grid made small (``GRID_CHUNK``-byte chunks, units of twice that): a
    shared scan, and ``-j``'s pieces, cut everywhere in a file of a few KiB."""
    from hv_emu.cli import scan_files, scan_parallel, scan_shared
    from tests.rigs.scanner import GRID_CHUNK  # here: the rigs load after assert rewriting

    monkeypatch.setattr(scan_files, "CHUNK", GRID_CHUNK)
    monkeypatch.setattr(scan_shared, "CHUNK", GRID_CHUNK)
    monkeypatch.setattr(scan_parallel, "CHUNK", GRID_CHUNK)
    monkeypatch.setattr(scan_shared, "UNIT", 2 * GRID_CHUNK)
    monkeypatch.setattr(scan_shared, "PROBE", 2 * GRID_CHUNK)
