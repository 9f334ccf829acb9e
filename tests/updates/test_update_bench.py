"""The 100k-signature update benchmark (``benchmarks/update.py``, docs/PERFORMANCE.md) measures
what it says: its rfxn-style database has the constructs it claims and loads in hv-emu (every line
applied) and in clamscan, and one timed update comes into force with the times in order. Small
sizes here; the figures are ``python -m benchmarks.update``'s."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import update
from hv_emu.scanner.database import compile_database
from hv_emu.scanner.signatures import Literal, parse_database


def test_the_rfxn_style_database_has_wildcards_and_loads_whole() -> None:
    body = update.rfxn_style_ndb(500)
    signatures = parse_database(body, kind="ndb", source="r.ndb")
    assert len(signatures) == 500 and all(s.not_applied is None for s in signatures)
    text = body.decode()
    for construct in ("(22|27)", "??", "{0-16}", "*"):
        assert text.count(construct) > 10, construct
    wild = [s for s in signatures if len(s.parts) > 1 or len(s.parts[0].variants[0]) > 1]
    assert 80 <= len(wild) <= 100  # one line in five
    plain = [s for s in signatures if s not in wild]
    assert all(isinstance(s.parts[0].variants[0][0], Literal) for s in plain)
    assert compile_database(body, kind="ndb", version=1, source="r.ndb").count == 500


@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan is not installed")
def test_clamscan_loads_the_rfxn_style_database(tmp_path: Path) -> None:
    db = tmp_path / "r.ndb"
    db.write_bytes(update.rfxn_style_ndb(500))
    (tmp_path / "empty").write_bytes(b"")
    done = subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(tmp_path / "empty")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    timed = update.clamscan_once(db, tmp_path)
    assert timed is not None and timed[0] > 0 and timed[1] > 0


def test_one_timed_update_comes_into_force(tmp_path: Path) -> None:
    pause, active, cpu, pause_cpu = update.activation_s(update.rfxn_style_ndb(300), tmp_path)
    assert 0 < pause < active and cpu > 0 and 0 < pause_cpu < cpu


def test_the_rows_are_the_pause_active_and_cpu_of_each_database() -> None:
    rows = update.large_rows(repeat=1, count=2_000)
    assert [row.name for row in rows] == [
        f"{what} ({label})" if what.startswith("2k") else f"{what} (2,000 {label} signatures)"
        for label in ("synthetic", "rfxn-style")
        for what in ("update_signatures guest pause", "update_signatures guest pause, CPU time",
                     "2k-signature update: VMCALL to active",
                     "2k-signature update: VMCALL to active, CPU time")]  # fmt: skip
    for pause, pause_cpu, active, cpu in zip(rows[::4], rows[1::4], rows[2::4], rows[3::4],
                                             strict=True):  # fmt: skip
        assert 0 < pause.value < active.value and 0 < pause_cpu.value < cpu.value
