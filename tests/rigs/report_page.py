"""Reading a ``--report`` page back as a browser's parser would: its tags and attributes, the text
of each element with an id, the rows of each table, the marks of the timeline; and the check that
it references nothing outside itself. Also the guest of the report's interrupt tests: the tick
boot sector of docs/TUTORIAL.md step 9, as a disk ``hv-emu run --boot`` boots."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from tests.rigs.firmware import boot_sector

#: docs/TUTORIAL.md, whose step 9 holds the tick guest.
TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "TUTORIAL.md"

#: Every tag the page may contain.
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "thead", "tbody",
        "tfoot", "tr", "th", "td", "code", "p", "svg", "rect", "text", "line", "pre",
        "span"}  # fmt: skip
#: Attributes that make a browser fetch something (or run something, ``on*``).
FETCHING = {"src", "href", "xlink:href", "srcset", "action", "formaction", "data", "poster",
            "background", "ping", "manifest", "codebase", "cite", "longdesc", "usemap"}  # fmt: skip
_VOID = {"meta", "br", "img", "input", "link", "hr", "base", "source", "wbr", "col", "area"}


@dataclass
class Page(HTMLParser):
    """Feed it a page; then read ``tags``, ``text(id)``, ``rows(id)`` and ``marks``."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    _texts: dict[str, list[str]] = field(default_factory=dict)
    _open: list[tuple[str, str | None]] = field(default_factory=list)
    _tables: dict[str, list[list[str]]] = field(default_factory=dict)
    _table: str | None = None
    _cell: list[str] | None = None
    _in_style: bool = False
    marks: list[tuple[str, str]] = field(default_factory=list)  # (lane, title) of each mark
    _mark_lane: str | None = None

    def __post_init__(self) -> None:
        HTMLParser.__init__(self, convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attributes))
        if "style" in attributes:
            self.styles.append(attributes["style"])
        if tag in _VOID:
            return
        ident = attributes.get("id")
        self._open.append((tag, ident))
        if ident is not None:
            self._texts.setdefault(ident, [])
        if tag == "table":
            self._table = ident
            self._tables.setdefault(ident or "", [])
        elif tag == "tr" and self._table is not None:
            self._tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "style":
            self._in_style = True
        elif tag == "rect" and "data-lane" in attributes:
            self._mark_lane = attributes["data-lane"]
        elif tag == "title" and self._mark_lane is not None:
            self._cell = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "title" and self._mark_lane is not None and self._cell is not None:
            self.marks.append((self._mark_lane, "".join(self._cell)))
            self._cell = None
        elif tag == "rect":
            self._mark_lane = None
        elif tag == "table":
            self._table = None
        elif tag == "style":
            self._in_style = False
        for i in range(len(self._open) - 1, -1, -1):  # close up to the matching open tag
            if self._open[i][0] == tag:
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)
        for _, ident in self._open:
            if ident is not None:
                self._texts[ident].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, ident: str) -> str:
        return "".join(self._texts[ident])

    def has(self, ident: str) -> bool:
        return ident in self._texts

    def rows(self, ident: str) -> list[list[str]]:
        """The table's rows (header rows included), each a list of cell texts."""
        return self._tables[ident]


def parse(page: str) -> Page:
    parsed = Page()
    parsed.feed(page)
    parsed.close()
    return parsed


def external_references(page: Page) -> list[str]:
    """Everything in the page that would make a browser fetch or run something: empty if none."""
    found = [f"<{tag}>" for tag, _ in page.tags if tag not in TAGS]
    for tag, attributes in page.tags:
        for name in attributes:
            if name in FETCHING or name.startswith("on"):
                found.append(f"<{tag} {name}={attributes[name]!r}>")
    found += [f"style {s!r}" for s in page.styles if "url(" in s or "@import" in s]
    return found


def tick_disk(directory: Path) -> Path:
    """TUTORIAL step 9's ``ticks.s`` (an int 1Ch handler counting five timer ticks, HLT between
    them) as a 1 MiB disk whose sector 0 is it: ``directory/ticks.img``."""
    found = re.search(r"```asm\n(# ticks\.s .*?)```", TUTORIAL.read_text(encoding="utf-8"),
                      re.DOTALL)  # fmt: skip
    assert found is not None, "docs/TUTORIAL.md step 9 has no ticks.s"
    disk = directory / "ticks.img"
    disk.write_bytes(boot_sector(found[1]).ljust(1 << 20, b"\0"))
    return disk
