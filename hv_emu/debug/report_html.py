"""The run report: one self-contained HTML page drawn from a ``RunRecorder`` (``--report FILE``).

Models: what a VMM's tracing front end (``perf kvm stat report``, kvmshark, Intel VTune's VM-exit
views) shows of a run, as one page a browser opens with no network: a header (the program, the
options as a shell takes them back, ``shlex.join``, and how the run ended), the exits by reason
(count, share, total and mean handling time), a timeline over guest time (the recorder's axis:
the guest's clock if a timer ran, else exits) with one lane per kind of mark (exits, injected
events, hypercalls, disk writes, detections, updates; each mark has a title a browser shows on
hover), tables of the detections, hypercalls, updates and injected events, the guest's final
80x25 text screen in its colours, and what it printed on the debug console (a Linux program's
standard streams are hv-emu's own, so the page says its output went there, not that it printed
nothing).

Follows: HTML5 (html.spec.whatwg.org) with inline SVG; IBM VGA text attributes (foreground in bits
3:0, background in bits 6:4) in the 16 CGA colours; code page 437 for the screen's characters
(``devices/vga.py``). The page references nothing outside itself: no scripts at all, one inline
style sheet, no ``src``/``href``/``url()``, and a Content-Security-Policy of ``default-src 'none'``
so a browser would refuse any fetch a bug let in.

Leaves out: zooming and filtering (a browser's own zoom and find work); blinking text (attribute
bit 7 is ignored); fonts (the page names only generic families).

Guest controls: every string drawn (signature names come from a database an update may bring; the
screen and the console are the guest's own bytes, hypercall values its registers) and how many
marks there are, up to the recorder's bounds. Every string is escaped (``&<>"'``) and characters
HTML forbids (C0/C1 controls, lone surrogates, non-characters) become U+FFFD, so nothing a guest
writes can become markup or break the page's encoding.
"""

from __future__ import annotations

import html
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hv_emu import __version__
from hv_emu.debug.recorder import LANES, Mark, RunRecorder, Screen
from hv_emu.devices.vga import CELL, CP437

#: What each lane is called on the page.
LANE_TITLES = {"exit": "VM exits", "injected": "injected", "hypercall": "hypercalls",
               "disk_write": "disk writes", "detection": "detections",
               "update": "updates"}  # fmt: skip
#: The 16 CGA/VGA text colours, by attribute nibble.
PALETTE = ("#000000", "#0000aa", "#00aa00", "#00aaaa", "#aa0000", "#aa00aa", "#aa5500",
           "#aaaaaa", "#555555", "#5555ff", "#55ff55", "#55ffff", "#ff5555", "#ff55ff",
           "#ffff55", "#ffffff")  # fmt: skip
#: Colours of exit reasons on the timeline, in summary order (then repeating).
REASON_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf", "#d62728")  # fmt: skip
LANE_COLOURS = {"injected": "#9467bd", "hypercall": "#ff7f0e", "disk_write": "#2ca02c",
                "detection": "#d62728", "update": "#17becf"}  # fmt: skip
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_WIDTH, _LEFT, _RIGHT, _LANE_H, _TOP = 1060, 160, 24, 30, 8

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:monospace}
.note{color:#555;font-size:.9em}
svg text{font-family:sans-serif;font-size:11px;fill:#333}
svg .lane{fill:#f4f4f4}svg .axis{stroke:#999;stroke-width:1}
pre.screen{display:inline-block;line-height:1.15;font-size:14px;padding:4px;background:#000;
margin:0}
pre.console{background:#f6f6f6;padding:.5em;max-height:30em;overflow:auto;white-space:pre-wrap}
.swatch{display:inline-block;width:.8em;height:.8em;margin:0 .25em 0 .8em}
""" + "".join(f".f{i}{{color:{c}}}" for i, c in enumerate(PALETTE)) + "".join(
    f".b{i}{{background:{c}}}" for i, c in enumerate(PALETTE[:8]))


@dataclass(frozen=True)
class RunInfo:
    """The header's facts: what ran, with which options, and how it ended."""

    program: str
    options: Sequence[str]
    ending: str  # one line: halted, a fault report, a timeout, a stop
    status: int | None = None  # hv-emu's exit status
    summary: str = ""  # the run's summary line (hypercalls, seconds, database, detections)
    linux: bool = False  # a Linux program: its stdout and stderr were hv-emu's own


def clean(text: str) -> str:
    """``text`` safe to put in HTML: characters HTML forbids as U+FFFD, then ``&<>"'`` escaped."""
    return html.escape(_FORBIDDEN.sub("\ufffd", text), quote=True)


def render(recorder: RunRecorder, info: RunInfo) -> str:
    """The whole page, as one string."""
    title = clean(f"hv-emu run {info.program}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        f"<title>{title}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{title}</h1>",
        _header(recorder, info),
        _summary(recorder),
        _timeline(recorder),
        _lane_table(recorder, "detection", "Detections",
                    ("signature", "lba", "offset", "length", "actions", "in_write", "reason")),
        _lane_table(recorder, "hypercall", "Hypercalls",
                    ("nr", "name", "rbx", "rcx", "rdx", "ret", "result")),
        _lane_table(recorder, "update", "Updates",
                    ("source", "db_version", "error", "reason", "signatures", "engine")),
        _lane_table(recorder, "injected", "Injected events",
                    ("vector", "type", "error_code", "at", "result")),
        _screen(recorder.screen),
        _console(recorder, info.linux),
        f'<p class="note">hv-emu {clean(__version__)}</p>',
        "</body></html>",
    ]  # fmt: skip
    return "\n".join(parts) + "\n"


def _header(recorder: RunRecorder, info: RunInfo) -> str:
    rows = [("program", f"<code>{clean(info.program)}</code>"),
            ("options", f"<code>{clean(shlex.join(info.options))}</code>"),
            ("ended", clean(info.ending))]  # fmt: skip
    if info.status is not None:
        rows.append(("exit status", str(info.status)))
    if info.summary:
        rows.append(("summary", clean(info.summary)))
    if recorder.timed:
        unit = (f"{recorder.unit}: virtual unless --realtime, it moves with the guest's code while "
                "a timer is armed and jumps to the next deadline while the guest waits in HLT")
    elif recorder.clock is not None:
        unit = "exits (the exit's ordinal): the guest's clock stood still, no timer ran"
    else:
        unit = "exits (the exit's ordinal)"
    rows.append(("guest time", f"{clean(unit)}; {recorder.exits} exits in all"))
    body = "".join(f'<tr><th>{name}</th><td id="run-{name.replace(" ", "-")}">{value}</td></tr>'
                   for name, value in rows)  # fmt: skip
    return f'<table id="run">{body}</table>'


def _ordered_reasons(recorder: RunRecorder) -> list[str]:
    return sorted(recorder.reasons, key=lambda r: (-recorder.reasons[r].count, r))


def _summary(recorder: RunRecorder) -> str:
    total_n = sum(s.count for s in recorder.reasons.values())
    total_t = sum(s.total for s in recorder.reasons.values())
    rows = []
    for reason in _ordered_reasons(recorder):
        s = recorder.reasons[reason]
        share = 100 * s.count / total_n if total_n else 0.0
        rows.append(
            f'<tr data-reason="{clean(reason)}"><td>{clean(reason)}</td><td class="n">{s.count}'
            f'</td><td class="n">{share:.2f}%</td><td class="n">{_us(s.total)}</td>'
            f'<td class="n">{_us(s.mean)}</td><td class="n">{_us(s.least)}</td>'
            f'<td class="n">{_us(s.most)}</td></tr>'
        )
    head = ("<tr><th>reason</th><th>exits</th><th>share</th><th>total time</th><th>mean</th>"
            "<th>min</th><th>max</th></tr>")  # fmt: skip
    foot = (f'<tr><th>all</th><td class="n">{total_n}</td><td></td>'
            f'<td class="n">{_us(total_t)}</td><td colspan="3"></td></tr>')  # fmt: skip
    return (
        '<h2>Exits by reason</h2><p class="note">Host time spent handling each exit, as '
        "<code>--trace</code> measures it; every exit is counted, kept on the timeline or not."
        f'</p><table id="summary"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
        f"<tfoot>{foot}</tfoot></table>"
    )


def _timeline(recorder: RunRecorder) -> str:
    span = recorder.t_max or 1.0
    timed = recorder.timed
    inner = _WIDTH - _LEFT - _RIGHT
    height = _TOP + _LANE_H * len(LANES) + 30
    colours = {r: REASON_COLOURS[i % len(REASON_COLOURS)]
               for i, r in enumerate(_ordered_reasons(recorder))}  # fmt: skip
    out = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
           f'height="{height}" viewBox="0 0 {_WIDTH} {height}" role="img">']  # fmt: skip
    for i, lane in enumerate(LANES):
        y = _TOP + i * _LANE_H
        out.append(f'<rect class="lane" x="{_LEFT}" y="{y}" width="{inner}" '
                   f'height="{_LANE_H - 4}"/>')  # fmt: skip
        out.append(f'<text x="4" y="{y + 17}">{LANE_TITLES[lane]} '
                   f"({recorder.total(lane)})</text>")  # fmt: skip
        kept = recorder.marks[lane]
        if recorder.dropped[lane] and kept:  # where the lane stops being drawn, to the end
            x = _LEFT + inner * min(max(recorder.when(kept[-1], timed) / span, 0.0), 1.0)
            left_out = sum(recorder.dropped[lane].values())
            out.append(f'<rect class="gap" x="{x:.1f}" y="{y + 2}" width="{_LEFT + inner - x:.1f}" '
                       f'height="{_LANE_H - 8}" fill="#ddd"><title>{left_out} more '
                       f"{LANE_TITLES[lane]} not drawn</title></rect>")  # fmt: skip
        for mark in kept:
            colour = colours.get(mark.label, "#444") if lane == "exit" else LANE_COLOURS[lane]
            at = recorder.when(mark, timed)
            x = _LEFT + inner * min(max(at / span, 0.0), 1.0)
            out.append(
                f'<rect class="mark" data-lane="{lane}" x="{x - 1:.1f}" y="{y + 2}" width="2" '
                f'height="{_LANE_H - 8}" fill="{colour}"><title>{_title(mark, at)}</title></rect>'
            )
    axis_y = _TOP + _LANE_H * len(LANES) + 4
    out.append(f'<line class="axis" x1="{_LEFT}" y1="{axis_y}" x2="{_LEFT + inner}" '
               f'y2="{axis_y}"/>')  # fmt: skip
    for k in range(6):
        x = _LEFT + inner * k / 5
        out.append(f'<line class="axis" x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" '
                   f'y2="{axis_y + 4}"/><text x="{x:.1f}" y="{axis_y + 16}" '
                   f'text-anchor="middle">{_g(span * k / 5)}</text>')  # fmt: skip
    out.append("</svg>")
    unit = recorder.unit
    legend = "".join(f'<span class="swatch" style="background:{c}"></span>{clean(r)}'
                     for r, c in colours.items())  # fmt: skip
    notes = [f'<p class="note">Guest time in {clean(unit)}, from 0 to {_g(span)}. Hover over '
             f"a mark for what it was. Exit reasons: {legend}</p>"]  # fmt: skip
    for lane in LANES:
        dropped = recorder.dropped[lane]
        if dropped:
            counts = ", ".join(f"{clean(label)}: {n}" for label, n in
                               sorted(dropped.items(), key=lambda kv: -kv[1])[:20])  # fmt: skip
            notes.append(
                f'<p class="note dropped" data-lane="{lane}">{LANE_TITLES[lane]}: the first '
                f"{len(recorder.marks[lane])} of {recorder.total(lane)} are drawn; not drawn: "
                f"{counts}</p>"
            )
    if recorder.final is not None and recorder.final not in recorder.marks["exit"]:
        final = recorder.final
        notes.append(f'<p class="note">The last exit: {_title(final, recorder.when(final))}</p>')
    return '<h2>Timeline</h2>' + "".join(out) + "".join(notes)


def _title(mark: Mark, at: float) -> str:
    details = "; ".join(f"{k}={v}" for k, v in mark.details)
    return clean(f"{mark.label} at t={_g(at)} (exit {mark.exit_no}, host "
                 f"{mark.host:.6f} s){': ' if details else ''}{details}")  # fmt: skip


def _lane_table(recorder: RunRecorder, lane: str, heading: str, columns: Iterable[str]) -> str:
    marks = recorder.marks[lane]
    if not marks:
        return f'<h2>{heading}</h2><p class="note" id="no-{lane}">None.</p>'
    present = {k for m in marks for k, _ in m.details}
    cols = [c for c in columns if c in present]
    head = "<tr><th>t</th><th>exit</th><th>what</th>" + "".join(
        f"<th>{clean(c)}</th>" for c in cols) + "</tr>"
    rows = []
    timed = recorder.timed
    for m in marks:
        values = dict(m.details)
        cells = "".join(f"<td>{clean(values.get(c, ''))}</td>" for c in cols)
        rows.append(f'<tr><td class="n">{_g(recorder.when(m, timed))}</td><td class="n">'
                    f"{m.exit_no}</td><td>{clean(m.label)}</td>{cells}</tr>")  # fmt: skip
    note = ""
    if recorder.dropped[lane]:
        note = (f'<p class="note">The first {len(marks)} of {recorder.total(lane)}; the '
                "timeline's notes count the rest.</p>")  # fmt: skip
    return (f'<h2>{heading}</h2><table id="table-{lane}"><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table>{note}")  # fmt: skip


def _screen(screen: Screen | None) -> str:
    if screen is None:
        return '<h2>Final screen</h2><p class="note">Not captured.</p>'
    lines = []
    for row in range(screen.rows):
        start = row * screen.cols * CELL
        cells = screen.cells[start : start + screen.cols * CELL]
        spans: list[str] = []
        run_attr, run_text = -1, ""
        for c in range(0, len(cells) - 1, CELL):
            char, attr = cells[c], cells[c + 1] & 0x7F  # bit 7: blink, not drawn
            if attr != run_attr and run_text:
                spans.append(_span(run_attr, run_text))
                run_text = ""
            run_attr = attr
            run_text += CP437[char]
        if run_text:
            spans.append(_span(run_attr, run_text))
        lines.append("".join(spans))
    return f'<h2>Final screen</h2><pre class="screen" id="screen">{chr(10).join(lines)}</pre>'


def _span(attr: int, text: str) -> str:
    return f'<span class="f{attr & 0xF} b{(attr >> 4) & 0x7}">{clean(text)}</span>'


def _console(recorder: RunRecorder, linux: bool = False) -> str:
    if linux:  # a program's writes to descriptors 1 and 2 are hv-emu's own (linux/streams.py)
        note = ('<p class="note" id="console-linux">A Linux program\'s standard output and error '
                "are hv-emu's own: what it wrote went to the terminal (or wherever hv-emu's output "
                "was sent), not to the debug console, and is not kept here.</p>")  # fmt: skip
    else:
        note = ""
    if not recorder.console_total:
        return ('<h2>Debug console</h2>'
                + (note or '<p class="note">The guest printed nothing.</p>'))  # fmt: skip
    text = recorder.console.decode("utf-8", errors="replace").replace("\r\n", "\n")
    cut = ""
    if recorder.console_total > len(recorder.console):
        cut = (f'<p class="note">The first {len(recorder.console)} of '
               f"{recorder.console_total} bytes.</p>")  # fmt: skip
    return (f'<h2>Debug console</h2>{note}<pre class="console" id="console">'
            f"{clean(text)}</pre>{cut}")  # fmt: skip


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def _g(value: float) -> str:
    """A time: whole numbers (exit ordinals) as integers, others to 6 significant digits."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
