"""The events docs/EVENTS.md documents: each kind with the fields its table lists."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "EVENTS.md").read_text(encoding="utf-8")


def documented() -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for section in DOC.split("\n## ")[1:]:
        title, body = section.split("\n", 1)
        fields = {
            line.split("|")[1].strip().strip("`")
            for line in body.splitlines()
            if line.startswith("| `")
        }
        kinds[title.strip()] = fields
    return kinds
