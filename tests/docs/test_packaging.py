"""pyproject.toml against the tree: the wheel lists every package, ships every asm/ source and
py.typed, its commands and plugin resolve, and every dependency says why it is there.

tests/installed/user_flow.sh proves the same from the outside (a built wheel in a fresh venv); these
checks fail first, and name the file."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def data_packages(top: Path, package: str) -> dict[str, Path]:
    """Every folder below ``top`` that holds files but no ``__init__.py``, as the package it is
    installed as (``asm/programs/linux`` -> ``guest_tool.asm.programs.linux``)."""
    return {
        ".".join((package, *folder.relative_to(top).parts)): folder
        for folder in sorted({p.parent for p in top.rglob("*") if p.is_file()})
        if not (folder / "__init__.py").exists() and "__pycache__" not in folder.parts
    }


def asm_data_packages() -> dict[str, Path]:
    """asm/'s folders of sources (``asm/`` itself is a package, with an ``__init__.py``)."""
    return data_packages(ROOT / "asm", "guest_tool.asm")


def test_every_package_of_the_tree_is_listed_and_asm_is_mapped_into_guest_tool() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("hv_emu", "guest_tool")
        for init in (ROOT / top).rglob("__init__.py")
        if not init.parent.relative_to(ROOT).as_posix().startswith("guest_tool/asm")
    }
    # Folders of data are packages too: listed, or setuptools warns "Package would be ignored".
    expected = on_disk | {"guest_tool.asm"} | set(asm_data_packages()) \
        | set(data_packages(ROOT / "hv_emu", "hv_emu"))
    assert "hv_emu.data" in expected
    assert set(SETUPTOOLS["packages"]) == expected
    assert SETUPTOOLS["package-dir"] == {"guest_tool.asm": "asm"}
    assert (ROOT / "asm" / "__init__.py").is_file()


def test_package_data_ships_every_assembly_source_the_sample_database_and_py_typed() -> None:
    data = SETUPTOOLS["package-data"]
    shipped = {p for package, folder in asm_data_packages().items()
               for pattern in data.get(package, []) for p in folder.glob(pattern)}
    sources = set((ROOT / "asm").rglob("*.s"))
    assert sources and sources == shipped, f"not in the wheel: {sorted(sources - shipped)}"
    wanted = {"hv_emu": ["py.typed"], "hv_emu.data": ["sample.db"], "guest_tool": ["py.typed"]}
    for package, files in wanted.items():
        for name in files:
            assert (ROOT / package.replace(".", "/") / name).is_file()
            assert any(Path(name).match(pattern) for pattern in data[package]), name


def test_the_commands_and_the_pytest_plugin_resolve() -> None:
    targets = [*PYPROJECT["project"]["scripts"].values(),
               *PYPROJECT["project"]["entry-points"]["pytest11"].values()]
    for target in targets:
        module, _, attr = target.partition(":")
        loaded = importlib.import_module(module)
        assert not attr or callable(getattr(loaded, attr)), target


def test_every_dependency_is_justified_by_a_comment_beside_it() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    requirements = [*PYPROJECT["project"]["dependencies"],
                    *PYPROJECT["project"]["optional-dependencies"]["test"]]
    lines = text.splitlines()
    for requirement in requirements:
        at = next(i for i, line in enumerate(lines) if line.strip() == f'"{requirement}",')
        assert lines[at - 1].strip().startswith("#"), f"{requirement}: say why, on the line above"


def test_the_version_has_one_home() -> None:
    import hv_emu

    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert SETUPTOOLS["dynamic"]["version"] == {"attr": "hv_emu.__version__"}
    assert hv_emu.__version__.count(".") == 2
