"""docs/STORAGE.md's AHCI commands run as written (with this tree's code: ``python -m``), and
print what the page says they print."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "STORAGE.md").read_text(encoding="utf-8")
MODULES = {"hv-emu": "hv_emu", "guest-tool": "guest_tool"}


def ahci_commands() -> list[list[str]]:
    section = DOC.split("## AHCI (`--disk-controller ahci`)\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line) for line in block.strip().splitlines()]


def test_the_ahci_commands_of_the_storage_doc_work_as_written(tmp_path: Path) -> None:
    commands = ahci_commands()
    assert [c[:2] for c in commands] == [["guest-tool", "build"], ["hv-emu", "run"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outputs = []
    for tool, *args in commands:
        done = subprocess.run([sys.executable, "-m", MODULES[tool], *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    lines = outputs[1].splitlines()
    assert lines[0] == "ahci: CAP=c0141f05 PI=0000003f VS=00010000"
    assert "readback: 0 bytes differ" in outputs[1] and lines[-1] == "ahci: done"
    assert (tmp_path / "ahci.img").stat().st_size == 1 << 20


def test_the_wiring_of_the_devices_doc_runs() -> None:
    """docs/DEVICES.md's AHCI wiring, executed with a disk, RAM and an observer of the tests'."""
    from hv_emu.devices.storage.ahci import AhciHba
    from hv_emu.devices.storage.disk import MemoryDisk
    from hv_emu.memory.guest import GuestMemory
    from hv_emu.mmio import MmioBus
    from tests.rigs.devices import Recorder

    doc = (ROOT / "docs" / "DEVICES.md").read_text(encoding="utf-8")
    section = doc.split("## AHCI host bus adapter", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    names: dict[str, object] = {"disk": MemoryDisk(64), "mem": GuestMemory(4 << 20),
                                "observer": Recorder()}  # fmt: skip
    exec(compile(code, "DEVICES.md", "exec"), names)
    mmio, hba = names["mmio"], names["hba"]
    assert isinstance(mmio, MmioBus) and isinstance(hba, AhciHba)
    assert [r.name for r in mmio.regions] == ["ahci"] and hba.on_interrupt is not None
