"""docs/EVENTS.md documents every event the code emits, with exactly the fields it emits."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.rigs.events import documented

ROOT = Path(__file__).resolve().parents[2]


def emitted() -> dict[str, set[str]]:
    """kind -> keyword fields, from every ``*.emit("kind", field=...)`` call in hv_emu/ (and
    ``*._emit``: ``EventLog``'s own with its lock held, the compile worker's that cannot raise)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "hv_emu").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("emit", "_emit")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                fields = {kw.arg for kw in node.keywords if kw.arg is not None}
                found.setdefault(node.args[0].value, set()).update(fields)
    return found


def test_every_emitted_event_is_documented_with_its_exact_fields() -> None:
    code, doc = emitted(), documented()
    assert code, "found no emit() calls: the scan is broken"
    assert set(code) == set(doc), f"code: {set(code) - set(doc)}; doc: {set(doc) - set(code)}"
    for kind, fields in code.items():
        assert fields == doc[kind], f"{kind}: code {sorted(fields)} vs doc {sorted(doc[kind])}"
