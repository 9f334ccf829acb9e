"""The rules of the house that can be checked mechanically: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_only_the_vcpu_package_imports_unicorn() -> None:
    vcpu = ROOT / "hv_emu" / "vcpu"
    offenders = [
        p.relative_to(ROOT)
        for p in modules("hv_emu") + modules("guest_tool")
        if vcpu not in p.parents and any(m.split(".")[0] == "unicorn" for m in imports_of(p))
    ]
    assert offenders == [], f"unicorn is imported outside hv_emu/vcpu/: {offenders}"


def test_only_assemble_imports_keystone() -> None:
    offenders = [
        p.relative_to(ROOT)
        for p in modules("hv_emu") + modules("guest_tool")
        if p.name != "assemble.py" and any(m.split(".")[0] == "keystone" for m in imports_of(p))
    ]
    assert offenders == []


def test_devices_know_no_policy() -> None:
    forbidden = ("hv_emu.scanner", "hv_emu.updates", "hv_emu.cli.main", "hv_emu.inspection",
                 "hv_emu.machine")
    for path in modules("hv_emu/devices"):
        bad = [m for m in imports_of(path) if m.startswith(forbidden)]
        assert bad == [], f"{path.name} imports {bad}"


def test_nothing_imports_the_cli() -> None:
    for path in modules("hv_emu") + modules("guest_tool"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        assert not any(m.endswith(".cli") for m in imports_of(path)), path


def test_every_module_opens_with_a_docstring_saying_what_it_models() -> None:
    for path in modules("hv_emu") + modules("guest_tool"):
        if path.name == "__init__.py" and not path.read_text().strip():
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path.relative_to(ROOT)} has no module docstring"
        assert "Models" in doc or path.name == "__init__.py", f"{path.name}: say what it models"
        assert "controls" in doc, f"{path.relative_to(ROOT)}: say what the guest controls"
