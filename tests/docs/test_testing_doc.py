"""docs/TESTING.md's examples (and the README's), each run as a test file of its own with
only the pytest plugin to provide `hv`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "TESTING.md"


def examples() -> list[str]:
    """The python blocks of docs/TESTING.md and of the README's section on testing."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Learning and testing with hv-emu\n", 1)[1].split("\n## ", 1)[0]
    text = DOC.read_text(encoding="utf-8") + section
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_the_plugin_is_registered_under_pytest11() -> None:
    from importlib.metadata import entry_points

    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("hv_emu") == "hv_emu.testing.pytest_plugin"


def test_every_example_in_the_testing_doc_passes(tmp_path: Path) -> None:
    blocks = examples()
    assert len(blocks) >= 5
    for number, block in enumerate(blocks):
        (tmp_path / f"test_example_{number}.py").write_text(block, encoding="utf-8")
    expected = sum(len(re.findall(r"^def test_", block, re.MULTILINE)) for block in blocks)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{expected} passed" in done.stdout
