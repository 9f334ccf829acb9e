"""docs/UNICORN.md and the repository stand alone: no file names a path outside the repository,
every "docs/UNICORN.md Un" citation names a fact that is there, every module a fact's "Code:" line
names cites that fact, and every test the file names as a guard exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "UNICORN.md"
SCANNED = ("hv_emu", "guest_tool", "asm", "docs", "tests", "benchmarks", "README.md")

# Assembled from pieces so that this file does not match its own patterns.
_SHARED, _NOTES, _WORK = "shared", "no" + "tes", "wo" + "rk"
#: Paths that lead out of the repository. The one path allowed outside it is the test data
#: directory (``<shared>/data``, where rfxn.ndb lives), named by tests/conftest.py and benchmarks.
OUTSIDE = re.compile(
    "|".join(
        (
            rf"\b{_SHARED}\s*/\s*{_NOTES}\b",  # the background notes, as a path
            rf"\"{_SHARED}\"\s*/\s*\"{_NOTES}\"",  # ... or as pathlib parts
            rf"\.\./{_SHARED}/(?!data\b)",  # any sibling of the data directory
            rf"\.\./{_SHARED}\b(?!/)",  # the shared directory itself
            rf"/{_WORK}/",  # an absolute path of this machine
            rf"\b{_NOTES}/[\w.-]+\.md\b",  # a notes file by name (unicorn-keystone.md, ...)
            rf"\b{_NOTES}/(?:unicorn|update|bitvisor|clamav|ahci|linux|interrupts)",
        )
    )
)
#: A citation: "docs/UNICORN.md U3", "docs/UNICORN.md U2, U3", "``docs/UNICORN.md`` (U26-U33)".
CITATION = re.compile(r"docs/UNICORN\.md`{0,2}\s+\(?(U\d+(?:\s*(?:-|,|and)\s*U\d+)*)")
#: A bare anchor in parentheses, in a file that cites docs/UNICORN.md: "(U11)", "(U9, U10)".
BARE = re.compile(r"\((U\d+(?:\s*(?:-|,|and)\s*U\d+)*)[),:;]")
ANCHOR = re.compile(r"^### U(\d+)\. ", re.M)
GUARD = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
#: A file on a fact's "Code:" line: `hv_emu/vcpu/traps.py`, `asm/include/macros16.s`.
CODE_FILE = re.compile(r"`([\w/.-]+\.(?:py|s))`")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
            continue
        files.extend(
            p for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".so"}
        )  # fmt: skip
    return files


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # a binary fixture names no path


def anchors() -> set[int]:
    return {int(n) for n in ANCHOR.findall(DOC_PATH.read_text(encoding="utf-8"))}


def expand(cited: str) -> set[int]:
    """``"U1-U3, U5"`` -> {1, 2, 3, 5}."""
    numbers: set[int] = set()
    for part in re.split(r"\s*(?:,|and)\s*", cited):
        ends = [int(n) for n in re.findall(r"U(\d+)", part)]
        if len(ends) == 2:
            numbers.update(range(ends[0], ends[1] + 1))
        else:
            numbers.update(ends)
    return numbers


def outside_paths(text: str) -> list[str]:
    return [m.group(0) for m in OUTSIDE.finditer(text)]


def cited_anchors(text: str) -> set[int]:
    cited: set[int] = set()
    for m in CITATION.finditer(text):
        cited |= expand(m.group(1))
    if "docs/UNICORN.md" in text:
        for m in BARE.finditer(text):
            cited |= expand(m.group(1))
    return cited


def test_no_file_names_a_path_outside_the_repository() -> None:
    found = {}
    for path in scanned_files():
        text = text_of(path)
        if text is not None and (hits := outside_paths(text)):
            found[str(path.relative_to(ROOT))] = hits
    assert found == {}


def test_the_pattern_catches_outside_paths_and_allows_the_data_directory() -> None:
    bad = [f"{_SHARED}/{_NOTES}/x.md", f"../{_SHARED}/{_NOTES}", f"/{_WORK}/main/x",
           f"{_NOTES}/unicorn-keystone.md", f'ROOT.parent / "{_SHARED}" / "{_NOTES}"',
           f"../{_SHARED}"]  # fmt: skip
    for text in bad:
        assert outside_paths(text), text
    for text in (f"../{_SHARED}/data/rfxn.ndb", f'ROOT.parent / "{_SHARED}" / "data"',
                 "the update-protocol design notes", "docs/UNICORN.md U3"):  # fmt: skip
        assert not outside_paths(text), text


def test_anchors_are_numbered_once_each_from_u1() -> None:
    """From U1, each number once, in increasing order; gaps are allowed between blocks of
    numbers reserved for work done in parallel (U50-U54: the MMIO facts)."""
    numbers = [int(n) for n in ANCHOR.findall(DOC_PATH.read_text(encoding="utf-8"))]
    # Ascending, each once; parts written in parallel take ranges of their own (U60-U64...), so
    # a range may start after a gap.
    assert numbers[0] == 1 and numbers == sorted(set(numbers))


def test_every_citation_names_an_anchor_that_exists() -> None:
    known = anchors()
    cited_somewhere = False
    dangling = {}
    for path in scanned_files():
        text = text_of(path)
        if text is None or path == Path(__file__).resolve():
            continue
        cited = cited_anchors(text)
        cited_somewhere |= bool(cited)
        if missing := cited - known:
            dangling[str(path.relative_to(ROOT))] = sorted(missing)
    assert dangling == {}
    assert cited_somewhere


@pytest.mark.parametrize(
    ("text", "numbers"),
    [("see docs/UNICORN.md U3.", {3}), ("(docs/UNICORN.md U2, U3)", {2, 3}),
     ("``docs/UNICORN.md`` (U26-U33)", set(range(26, 34))),
     ("docs/UNICORN.md: lost (U11) and (U9, U10).", {9, 10, 11}),
     ("U64 = 0xFFFF; x & U64, (U64)", set())],
)  # fmt: skip
def test_citations_are_parsed(text: str, numbers: set[int]) -> None:
    assert cited_anchors(text) == numbers


def test_every_fact_names_its_code_and_its_guard() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    sections = re.split(r"^### ", doc, flags=re.M)[1:]
    for section in sections:
        if section.startswith("U"):
            assert "- Code:" in section and "- Tests:" in section, section.splitlines()[0]


def code_files(doc: str) -> dict[int, list[str]]:
    """Fact number -> the files its "- Code:" line names (the line may run over several)."""
    facts: dict[int, list[str]] = {}
    for section in re.split(r"^### ", doc, flags=re.M)[1:]:
        if fact := re.match(r"U(\d+)\. ", section):
            code = re.search(r"^- Code:(.*?)(?=^- |^#|\Z)", section, re.S | re.M)
            facts[int(fact.group(1))] = CODE_FILE.findall(code.group(1)) if code else []
    return facts


def uncited(doc: str) -> list[str]:
    """Each module named on a fact's "Code:" line that does not cite that fact."""
    problems = []
    for number, files in code_files(doc).items():
        for file in files:
            path = ROOT / file
            text = text_of(path) if path.is_file() else None
            if text is None:
                problems.append(f"U{number} names {file}, which is not a text file here")
            elif number not in cited_anchors(text):
                problems.append(f"{file} relies on U{number} (its Code: line) but does not cite "
                                f"it: add docs/UNICORN.md U{number} where it relies on it")
    return problems


def test_every_module_a_fact_names_cites_that_fact() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    named = code_files(doc)
    assert len(named) == len(anchors()) and sum(map(len, named.values())) > 40, "parse broken"
    assert uncited(doc) == []


def test_an_uncited_or_missing_module_is_reported() -> None:
    doc = ("### U7. A fact\n\nText.\n\n- Code: `hv_emu/memory/walk.py` (`read_virt`),\n"
           "  `hv_emu/vcpu/nowhere.py`.\n- Tests: none.\n\n### U1. Another\n\n"
           "- Code: `hv_emu/memory/walk.py`.\n- Tests: none.\n")
    assert code_files(doc) == {7: ["hv_emu/memory/walk.py", "hv_emu/vcpu/nowhere.py"],
                               1: ["hv_emu/memory/walk.py"]}  # fmt: skip
    problems = uncited(doc)
    assert len(problems) == 2, problems
    assert problems[0].startswith("U7 names hv_emu/vcpu/nowhere.py")
    assert problems[1].startswith("hv_emu/memory/walk.py relies on U1 ")


def test_every_test_named_in_the_doc_exists() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    named = GUARD.findall(doc)
    assert len(named) > 20
    missing = []
    for file, name in named:
        path = ROOT / file
        source = path.read_text(encoding="utf-8") if path.is_file() else ""
        if not re.search(rf"^def {name}\(", source, re.M):
            missing.append(f"{file}::{name}")
    assert missing == []
