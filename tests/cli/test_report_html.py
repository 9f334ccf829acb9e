"""The report page (``hv_emu/debug/report_html.py``): its sections, the screen in colour, the bounds
said on the page, and escaping: whatever a guest (or a database) puts in a string, the page parses
to the same text and references nothing outside itself."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.debug.recorder import MAX_TEXT, RunRecorder, Screen
from hv_emu.debug.report_html import RunInfo, clean, render
from hv_emu.devices.storage.observer import StorageWrite, Verdict
from hv_emu.exits import Cpuid, Halt, Handled, Hypercall, PortOut, Stopped
from hv_emu.memory.walk import PagingState
from tests.rigs.report_page import external_references, parse

INFO = RunInfo("guest.bin", ["--db=x.db"], "guest halted", 0, "1 hypercalls")
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "</pre></table>",
           "<!-- x", "]]>", "&amp;&lt;", "'single'", "\x00\x1b[31m\x7f\x85", "\ud800\udfff",
           "\ufffe\uffff", "<style>@import url(http://e.x/)</style>"]  # fmt: skip
#: Any text, lone surrogates and control characters too.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=300)


def vmcall(nr: int) -> Hypercall:
    return Hypercall(nr, (0x1000, 2, 3, 0, 0), 64, 0x100003, PagingState(0, 0, 0, 0))


def recorded(signature: str = "Burghofer", name: str = "get_status") -> RunRecorder:
    rec = RunRecorder(hypercall_name=lambda nr: name)
    rec.on_exit(PortOut(0xE9, 1, 0x41), Handled(), 2e-6)
    rec.on_exit(vmcall(1), Handled(registers={"rax": 0}), 3e-5)
    rec.on_exit(PortOut(0xE9, 1, 0x42), Handled(), 4e-6)
    rec.on_disk_write(StorageWrite(0, bytes(512), "pio", 0x30), Verdict.commit())
    rec.on_event({"event": "detection", "t": 0.1, "signature": signature, "lba": 0, "offset": 0,
                  "length": 15, "actions": ["warn", "zero-fill"], "in_write": 1})  # fmt: skip
    rec.record_injection(14, 3, 2)
    rec.on_exit(Cpuid(0, 0), Handled(), 1e-6)
    rec.on_exit(Halt(64, 0x100010), Stopped("halt"), 1e-6)
    return rec


def test_the_page_has_each_section() -> None:
    page = parse(render(recorded(), INFO))
    assert external_references(page) == []
    assert page.text("run-program") == "guest.bin" and page.text("run-ended") == "guest halted"
    assert page.text("run-options") == "--db=x.db" and page.text("run-exit-status") == "0"
    summary = page.rows("summary")
    assert summary[0] == ["reason", "exits", "share", "total time", "mean", "min", "max"]
    assert [row[:3] for row in summary[1:4]] == [["IO_INSTRUCTION", "2", "40.00%"],
                                                ["CPUID", "1", "20.00%"], ["HLT", "1", "20.00%"]]
    assert summary[4][:2] == ["VMCALL", "1"] and summary[1][3] == "6.00 µs"
    assert summary[-1][:2] == ["all", "5"]
    detections = page.rows("table-detection")
    assert detections[0][:4] == ["t", "exit", "what", "signature"]
    assert detections[1][2:] == ["Burghofer", "Burghofer", "0", "0", "15", "warn,zero-fill", "1"]
    hypercalls = page.rows("table-hypercall")
    assert hypercalls[1][2:5] == ["get_status -> OK", "1", "get_status"]
    assert page.rows("table-injected")[1][2:] == ["#PF (14)", "14", "hardware exception", "0x2"]
    assert page.has("no-update")
    lanes = [lane for lane, _ in page.marks]
    assert lanes.count("exit") == 5 and lanes.count("hypercall") == 1
    assert lanes.count("detection") == 1 and lanes.count("disk_write") == 1
    assert lanes.count("injected") == 1
    titles = dict((lane, title) for lane, title in page.marks if lane != "exit")
    assert titles["detection"].startswith("Burghofer at t=4 (exit 4, host ")  # during exit 4
    assert "lba=0" in titles["detection"] and "type=hardware exception" in titles["injected"]


def test_marks_stand_where_their_guest_time_puts_them() -> None:
    rec = RunRecorder()
    for _ in range(3):
        rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    rec.record_injection(0x20, 0)  # before the 4th exit: at t = 4 of 4, the right end
    rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    page = render(rec, INFO)
    xs = [float(tag.split('x="', 1)[1].split('"', 1)[0])
          for tag in page.split("<rect")[1:] if 'data-lane="' in tag]  # fmt: skip
    # exits at t=1..4 of 4, then the injection at 4: equal steps, the last two together.
    steps = [round(b - a, 1) for a, b in itertools.pairwise(xs)]
    assert steps[0] == steps[1] == steps[2] > 0 and steps[3] == 0


def test_the_final_screen_is_80x25_with_cp437_and_its_colours() -> None:
    cells = bytearray(b" \x07" * 80 * 25)
    cells[0:6] = b"\xc9\x4f\x01\x4f\x48\x1f"  # box corner and a smiley on red, H on blue
    cells[80 * 2 * 24 + 158 : 80 * 2 * 25] = b"Z\x8e"  # blink bit set: yellow on black
    rec = recorded()
    rec.screen = Screen(80, 25, bytes(cells))
    text = render(rec, INFO)
    page = parse(text)
    lines = page.text("screen").split("\n")
    assert len(lines) == 25 and all(len(line) == 80 for line in lines)
    assert lines[0].startswith("╔☺H ") and lines[24].endswith("Z")
    assert '<span class="f15 b4">╔☺</span><span class="f15 b1">H</span>' in text
    assert '<span class="f14 b0">Z</span>' in text
    assert ".f14{color:#ffff55}" in text and ".b4{background:#aa0000}" in text


def test_what_was_not_kept_is_said_on_the_page() -> None:
    rec = RunRecorder(max_marks=2)
    for i in range(7):
        rec.on_exit(PortOut(0xE9, 1, i), Handled(), 1e-6)
    rec.on_exit(Halt(64, 0), Stopped("halt"), 1e-6)
    rec.capture_console(b"y" * 100_000)
    text = render(rec, INFO)
    page = parse(text)
    assert [lane for lane, _ in page.marks] == ["exit", "exit"]
    assert "VM exits: the first 2 of 8 are drawn; not drawn: IO_INSTRUCTION: 5, HLT: 1" in text
    assert "The last exit: HLT at t=8 (exit 8" in text  # the end, though not drawn
    assert page.rows("summary")[1][:2] == ["IO_INSTRUCTION", "7"]
    assert len(page.text("console")) == 64 * 1024 and "The first 65536 of 100000 bytes" in text


@settings(max_examples=80, deadline=None)
@given(signature=st.one_of(st.sampled_from(HOSTILE), ANY_TEXT),
       name=st.one_of(st.sampled_from(HOSTILE), ANY_TEXT.filter(bool)),
       words=st.lists(st.one_of(st.sampled_from(HOSTILE), ANY_TEXT), min_size=3, max_size=3),
       console=st.binary(max_size=600), screen=st.binary(min_size=4000, max_size=4000))  # fmt: skip
def test_hostile_strings_stay_text(signature: str, name: str, words: list[str], console: bytes,
                                   screen: bytes) -> None:  # fmt: skip
    rec = recorded(signature, name)
    rec.on_event({"event": "update_rejected", "t": 0.0, "source": "vmcall", "code": 3,
                  "error": words[0], "reason": words[1]})  # fmt: skip
    rec.capture_console(console + b"\n<script>" + words[2].encode("utf-8", "replace"))
    rec.screen = Screen(80, 25, screen)
    info = RunInfo(words[0], [words[1], "<b>"], words[2], 1, signature)
    text = render(rec, info)
    text.encode("utf-8")  # no lone surrogate left to break the file's encoding
    page = parse(text)
    assert external_references(page) == []
    assert not any(tag in ("script", "img", "b") for tag, _ in page.tags)

    detections = page.rows("table-detection")
    assert detections[1][3] == shown(_cut(signature))
    assert page.rows("table-hypercall")[1][4] == shown(_cut(name))
    assert page.rows("table-update")[1][3:6] == ["vmcall", shown(_cut(words[0])),
                                                 shown(_cut(words[1]))]  # fmt: skip
    assert page.text("run-program") == shown(words[0])
    assert page.text("run-ended") == shown(words[2])
    assert "<script>" in page.text("console")
    assert len(page.text("screen")) == 25 * 81 - 1


def _cut(s: str) -> str:
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "\u2026"


def shown(s: str) -> str:
    """What the page must show for ``s``: ``s`` itself, but characters HTML forbids (controls
    other than tab and newline, C1 controls, surrogates, non-characters) as U+FFFD."""
    def allowed(c: str) -> bool:
        n = ord(c)
        return not ((n < 0x20 and c not in "\t\n") or 0x7F <= n <= 0x9F
                    or 0xD800 <= n <= 0xDFFF or 0xFDD0 <= n <= 0xFDEF
                    or n in (0xFFFE, 0xFFFF))  # fmt: skip
    return "".join(c if allowed(c) else "\ufffd" for c in s)


def test_clean_escapes_markup_and_replaces_forbidden_characters() -> None:
    assert clean("<a href='x'>&</a>") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&lt;/a&gt;"
    assert clean("a\x00b\rc\td\ne\x9f\ud800") == "a\ufffdb\ufffdc\td\ne\ufffd\ufffd"
