"""The ``--report`` page in a real browser (Debian's Chromium, headless): what it shows (the summary
rows, the detection, the final screen in its colours, the timeline's marks laid out, a booted
guest's timer interrupts on the injected lane), that markup a guest or a database wrote stays
text, and that the page asks the network for nothing.

Skipped, saying why, where /usr/bin/chromium is missing (``.ci/run`` installs it)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.disk_programs import build_disk_write_program
from hv_emu.cli.main import main
from hv_emu.layout import PORT_DEBUGCON, VGA_TEXT_BASE
from tests.rigs.chromium import Browser, dump_dom, need_chromium
from tests.rigs.report_page import external_references, parse, tick_disk

BURGHOFER = "8e06120033ff8bf30e1fb90d02f3a4"
#: A signature name that would run a script and hide the page if it became markup (a .db name
#: holds anything but "="; the warning box puts it on the guest's screen too).
EVIL_NAME = ("Evil<script>document.write(String.fromCharCode(80,87,78))</script>"
             "<style>body{display:none}</style>")  # fmt: skip
#: What the hostile guest prints on its console and its screen.
EVIL_TEXT = ('<img src="http://127.0.0.1:9/console.png"><script>document.title'
             "='pwned'</script>&amp;")  # fmt: skip
HOSTILE_GUEST = f"""
    lea rsi, [rip + text]
    mov edi, {VGA_TEXT_BASE + 2 * 160}
    mov edx, {PORT_DEBUGCON}
next:
    lodsb
    test al, al
    jz done
    out dx, al
    mov [rdi], al
    mov byte ptr [rdi + 1], 0x1e        # yellow on blue
    add rdi, 2
    jmp next
done:
    hlt
text: .byte {", ".join(str(b) for b in EVIL_TEXT.encode())}, 0
"""

pytestmark = pytest.mark.usefixtures("chromium")


@pytest.fixture
def chromium() -> None:
    need_chromium()


def detected_run(tmp_path: Path) -> Path:
    """The disk-write guest writes Burghofer, found under a hostile name and zero-filled."""
    db = tmp_path / "evil.db"
    db.write_text(f"{EVIL_NAME}={BURGHOFER}\n", encoding="utf-8")
    image = tmp_path / "diskwrite.bin"
    image.write_bytes(build_disk_write_program(bytes.fromhex(BURGHOFER), 0, "pio").image)
    report = tmp_path / "run.html"
    assert main(["run", str(image), "--disk", str(tmp_path / "disk.img"), "--disk-size", "1",
                 "--db", str(db), "--report", str(report), "-q"]) == 0  # fmt: skip
    return report


ROWS = """JSON.stringify([...document.querySelectorAll('#summary tr')].map(
    r => [...r.cells].map(c => c.innerText)))"""
MARKS = """JSON.stringify([...document.querySelectorAll('#timeline rect.mark')].map(r => {
    const b = r.getBoundingClientRect(), s = document.getElementById('timeline')
        .getBoundingClientRect();
    return [r.dataset.lane, b.width > 0 && b.height > 0 && b.left >= s.left && b.right <= s.right
            && b.top >= s.top && b.bottom <= s.bottom, b.left];
}))"""


def test_what_the_browser_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = detected_run(tmp_path)
    capsys.readouterr()
    ours = parse(report.read_text(encoding="utf-8"))
    with Browser() as browser:
        browser.open(report)
        shown = browser.evaluate("document.body.innerText")
        assert "Exits by reason" in shown and "Timeline" in shown and "Final screen" in shown
        # The summary rows as rendered are the rows in the file.
        rows = json.loads(browser.evaluate(ROWS))
        assert rows == [[" ".join(c.split()) for c in row] for row in ours.rows("summary")]
        assert rows[1][0] == "IO_INSTRUCTION" and int(rows[1][1]) > 100
        assert [r[:2] for r in rows if r[0] == "HLT"] == [["HLT", "1"]]
        # The detection, its hostile name shown as text: no script ran, the page is not hidden.
        detection = browser.evaluate(
            "document.querySelector('#table-detection tbody tr').cells[3].innerText")
        assert detection == EVIL_NAME
        assert browser.evaluate("document.scripts.length") == 0
        assert browser.evaluate("getComputedStyle(document.body).display") == "block"
        assert "PWN" not in shown.replace(EVIL_NAME, "")
        # The final screen: the warning box's text, in white on red (attribute 0x4f).
        screen = browser.evaluate("document.getElementById('screen').innerText")
        assert "MALWARE SIGNATURE IN A DISK WRITE" in screen and "signature: Evil<script>" in screen
        colours = browser.evaluate("""JSON.stringify([...document.querySelectorAll('#screen span')]
            .filter(s => s.innerText.includes('MALWARE')).map(s => {
                const c = getComputedStyle(s); return [c.color, c.backgroundColor]; }))""")
        assert json.loads(colours) == [["rgb(255, 255, 255)", "rgb(170, 0, 0)"]]
        # The timeline: every mark laid out inside the picture; the detection among the exits.
        marks = json.loads(browser.evaluate(MARKS))
        assert all(inside for _, inside, _ in marks)
        lanes = [lane for lane, _, _ in marks]
        assert lanes.count("exit") == sum(int(r[1]) for r in rows[1:-1])
        assert lanes.count("detection") == 2 and lanes.count("disk_write") == 1  # + network cut
        exits_x = [x for lane, _, x in marks if lane == "exit"]
        (write_x,) = [x for lane, _, x in marks if lane == "disk_write"]
        assert min(exits_x) < write_x < max(exits_x)
        assert browser.requests() == [report.as_uri()]


def test_the_dumped_dom_holds_what_the_file_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = detected_run(tmp_path)
    capsys.readouterr()
    dom = parse(dump_dom(report))
    ours = parse(report.read_text(encoding="utf-8"))
    assert external_references(dom) == []
    assert "script" not in [tag for tag, _ in dom.tags]
    assert [tag for tag, _ in dom.tags].count("style") == 1  # ours; the name's stayed text
    assert dom.rows("summary") == ours.rows("summary")
    assert dom.rows("table-detection")[1][3] == EVIL_NAME
    assert dom.text("screen") == ours.text("screen")
    assert dom.marks == ours.marks and len(dom.marks) > 100


def test_a_hostile_guest_on_console_and_screen_makes_no_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "evil.bin"
    image.write_bytes(assemble(HOSTILE_GUEST, mode=64, address=0x100000))
    report = tmp_path / "evil.html"
    assert main(["run", str(image), "--report", str(report)]) == 0
    assert capsys.readouterr().out == EVIL_TEXT
    with Browser() as browser:
        browser.open(report)
        assert browser.evaluate("document.title").startswith("hv-emu run ")
        assert browser.evaluate("document.images.length + document.scripts.length") == 0
        assert browser.evaluate("document.getElementById('console').innerText") == EVIL_TEXT
        screen = browser.evaluate("document.getElementById('screen').innerText").split("\n")
        assert len(screen) == 25 and (screen[2] + screen[3]).rstrip() == EVIL_TEXT  # 80 a row
        colour = browser.evaluate("""(() => { const s = [...document.querySelectorAll(
            '#screen span')].find(s => s.innerText.startsWith('<img'));
            const c = getComputedStyle(s); return c.color + ' on ' + c.backgroundColor; })()""")
        assert colour == "rgb(255, 255, 85) on rgb(0, 0, 170)"
        assert browser.requests() == [report.as_uri()]


def test_a_booted_guest_s_interrupts_on_the_injected_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TUTORIAL step 9's tick guest: the browser lays out its eleven injected events inside the
    picture, five timer ticks evenly spaced on the axis of guest time, and shows the table."""
    report = tmp_path / "ticks.html"
    assert main(["run", "--boot", str(tick_disk(tmp_path)), "--report", str(report), "-q"]) == 0
    capsys.readouterr()
    with Browser() as browser:
        browser.open(report)
        marks = json.loads(browser.evaluate(MARKS))
        injected = [x for lane, inside, x in marks if lane == "injected" and inside]
        assert len(injected) == len([m for m in marks if m[0] == "injected"]) == 11
        titles = json.loads(browser.evaluate("""JSON.stringify([...document.querySelectorAll(
            '#timeline rect.mark[data-lane="injected"] title')].map(t => t.textContent))"""))
        ticks = [x for x, title in zip(injected, titles, strict=True)
                 if "type=external interrupt" in title]  # fmt: skip
        assert len(ticks) == 5
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        assert max(gaps) - min(gaps) < 1.0 and min(gaps) > 10  # even steps of a 54.9 ms tick
        row = browser.evaluate("""[...document.querySelector('#table-injected tbody tr').cells]
            .map(c => c.innerText).slice(2).join('|')""")
        assert row == "vector 0x08|8|external interrupt|0000:7c12|delivered -> f000:1080"
        assert browser.requests() == [report.as_uri()]


def test_the_request_check_sees_a_page_that_fetches(tmp_path: Path) -> None:
    """The control: a page with an external image does show up in ``requests``."""
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><p>x<img src="http://127.0.0.1:9/x.png">', encoding="utf-8")
    with Browser() as browser:
        browser.open(page)
        assert "http://127.0.0.1:9/x.png" in browser.requests()
