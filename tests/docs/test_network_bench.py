"""The network benchmarks of docs/PERFORMANCE.md's issue-11 front-path section run, small: the
per-class rows (each flood class through the I/O thread's step, with the raw front path, on the
batch path and on the layered path, whose receivers must count alike) and the goal row (an
install over loopback beside a flood process, here paced slowly so that the run stays short)."""

from __future__ import annotations

import math

import pytest

from benchmarks import network_classes, network_loopback
from benchmarks.network_fixtures import one_megabyte_update


def test_the_flood_class_rows_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_classes, "PASSES", 1)
    rows = network_classes.class_rows(one_megabyte_update())
    names = [row.name for row in rows]
    for cls in network_loopback.FLOOD_CLASSES:
        assert f"flood class per datagram, frame to verdict: {cls}" in names
        assert f"flood class per datagram, batch path: {cls}" in names  # w-batch's subsection
    assert all(math.isfinite(row.value) and row.peer_value is not None for row in rows)


def test_the_goal_row_runs_and_installs() -> None:
    rows = network_loopback.flood_goal_rows(runs=1, rate=2000.0)
    install, memory = rows
    assert "paced at 2,000/s" in install.name and "reinstalled 0 times" in install.name
    assert install.value > 0 and install.peer_value is not None
    assert memory.peer_value is not None and 0 < memory.value <= memory.peer_value
