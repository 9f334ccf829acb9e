"""The tests' own layout (docs/ARCHITECTURE.md): a test module imports shared helpers only from
``tests/rigs/`` and ``tests/conftest.py``, never from another test module (nor in the code it hands
to a subprocess); the modules of ``tests/rigs/`` are not named ``test_*``, so pytest never collects
them.

Each failure names the file and line, ``path:line: what is wrong``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
RIGS = TESTS / "rigs"
#: What a module under tests/ may import from tests/: the rigs, and the top conftest.
ALLOWED = ("tests.rigs", "tests.conftest")
#: An import written in a string, such as the code a test runs with ``python -c``.
IMPORT_IN_TEXT = re.compile(r"\b(?:from|import)\s+(tests(?:\.\w+)*)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def allowed(imported: str) -> bool:
    return any(imported == prefix or imported.startswith(prefix + ".") for prefix in ALLOWED)


def imports_of(tree: ast.Module, name: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every module of ``tests`` that the module ``name`` imports, relative
    imports resolved, ``from tests.rigs import nic`` counted as ``tests.rigs.nic``, and imports
    written in string constants included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}" if base in ("tests", "tests.rigs")
                       else base) for alias in node.names]  # fmt: skip
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m) for m in IMPORT_IN_TEXT.findall(node.value)]
    return [(line, module) for line, module in found
            if module == "tests" or module.startswith("tests.")]  # fmt: skip


def problems_in(source: str, path: Path) -> list[str]:
    """What is wrong with the module at ``path`` (inside tests/) whose text is ``source``."""
    where = path.relative_to(ROOT).as_posix()
    name = module_name(path)
    tree = ast.parse(source, where)
    problems = [f"{where}:{line}: imports {module}; helpers shared between test modules belong "
                f"in tests/rigs/ (or tests/conftest.py)"
                for line, module in imports_of(tree, name, path.name == "__init__.py")
                if not allowed(module)]  # fmt: skip
    if path.is_relative_to(RIGS) and path.name.startswith("test_"):
        problems.append(f"{where}:1: a rig is named test_*: pytest would collect it as tests")
    return problems


def test_test_modules_import_helpers_only_from_the_rigs_and_conftest() -> None:
    paths = sorted(TESTS.rglob("*.py"))
    assert len(paths) > 50 and any(p.is_relative_to(RIGS) for p in paths), "the scan is broken"
    problems = [problem for path in paths
                for problem in problems_in(path.read_text(encoding="utf-8"), path)]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_the_check_sees_each_way_of_breaking_the_rule() -> None:
    """The check fails on what it is for: a test module importing from another, absolutely,
    relatively, as a module, or in code handed to a subprocess; and a rig named test_*."""
    module = TESTS / "net" / "test_example.py"
    cli = "tests" + ".cli"  # split, so this file's own text passes the check
    other = f"{cli}.test_cli"
    for source in (f"from {other} import sh\n", "from ..cli.test_cli import sh\n",
                   "from .test_frames import build\n", f"import {other}\n",
                   f"from {cli} import test_cli\n", f"code = 'from {other} import sh'\n"):
        assert problems_in(source, module), source
    for source in ("from tests.rigs.nic import drain\n", "from tests.rigs import nic\n",
                   "from tests.conftest import ROOT\n", "from ..rigs.commands import sh\n",
                   "import tests.rigs.commands\n"):
        assert problems_in(source, module) == [], source
    assert problems_in("", RIGS / ("test_" + "helpers.py"))
    assert problems_in("", RIGS / "helpers.py") == []
