"""``hv-emu run --report FILE`` end to end: shipped guests run with the other options, and the page
says what they did (checked against ``--trace``, ``--events`` and ``--screen`` of the same run);
the one-line errors before the guest runs."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.disk_programs import build_disk_write_program
from guest_tool.linux_programs import build_hvupdate
from guest_tool.programs import build_program, build_update_program
from hv_emu import SAMPLE_DB
from hv_emu.cli.main import main
from hv_emu.debug.recorder import DEFAULT_MAX_MARKS
from hv_emu.layout import PORT_DEBUGCON
from tests.rigs.linux import build_c, gcc_can
from tests.rigs.nic import cli_run_receiving_update
from tests.rigs.report_page import Page, external_references, parse, tick_disk
from tests.rigs.updates import Publisher

#: The Burghofer signature of the sample database (docs/TUTORIAL.md, step 6).
BURGHOFER = bytes.fromhex("8e06120033ff8bf30e1fb90d02f3a4")
SUMMARY_ROW = re.compile(r"^ *([A-Z_]+) +(\d+) ")


def trace_counts(stderr: str) -> dict[str, int]:
    """Exits by reason from ``--trace``'s summary table."""
    table = stderr.split("Analyze events for all VCPUs:", 1)[1].split("Total Samples", 1)[0]
    rows = (SUMMARY_ROW.match(line) for line in table.splitlines())
    return {m[1]: int(m[2]) for m in rows if m and m[1] != "VM"}


def report_of(path: Path) -> Page:
    page = parse(path.read_text(encoding="utf-8"))
    assert external_references(page) == []
    return page


def test_a_detected_disk_write_with_every_storage_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "diskwrite.bin"
    image.write_bytes(build_disk_write_program(BURGHOFER, 0, "pio").image)
    report, events, screen = tmp_path / "run.html", tmp_path / "ev.jsonl", tmp_path / "screen.txt"
    code = main(["run", str(image), "--disk", str(tmp_path / "disk.img"), "--disk-size", "1",
                 "--db", str(SAMPLE_DB), "--on-detect", "warn,zero-fill", "--events", str(events),
                 "--screen", str(screen), "--trace", "--report", str(report)])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    page = report_of(report)
    assert page.text("run-program") == str(image)
    assert "--on-detect=warn,zero-fill" in page.text("run-options").split()
    assert "--trace" in page.text("run-options").split()
    assert page.text("run-ended").startswith("guest halted")
    assert page.text("run-exit-status") == "0"
    assert "1 detections in disk writes" in page.text("run-summary")
    # The summary table counts what --trace counted in the same run.
    rows = {row[0]: int(row[1]) for row in page.rows("summary")[1:-1]}
    assert rows == trace_counts(err) and rows["HLT"] == 1
    assert page.rows("summary")[-1][1] == str(sum(rows.values()))
    # The detection, as the event log has it.
    (logged,) = [json.loads(line) for line in events.read_text().splitlines()
                 if '"detection"' in line]  # fmt: skip
    (detection,) = page.rows("table-detection")[1:]
    assert detection[2:9] == ["Burghofer", "Burghofer", str(logged["lba"]),
                              str(logged["offset"]), str(logged["length"]), "warn,zero-fill",
                              "1"]  # fmt: skip
    lanes = [lane for lane, _ in page.marks]
    assert lanes.count("exit") == sum(rows.values())
    assert lanes.count("disk_write") == 1 and lanes.count("detection") == 1
    (write,) = [title for lane, title in page.marks if lane == "disk_write"]
    assert write.startswith("LBA 0 +1 at t=") and "verdict=written modified" in write
    # The final screen is the one --screen wrote, the warning box on it.
    shown = [line.rstrip() for line in page.text("screen").split("\n")]
    assert shown == screen.read_text(encoding="utf-8").splitlines()
    assert any("MALWARE SIGNATURE IN A DISK WRITE" in line for line in shown)
    assert page.text("console") == out == ("diskwrite: LBA 0, 1 sectors via pio in 1 commands: "
                                           "ok\nread back: 14 bytes differ\n")  # fmt: skip


def test_hypercalls_and_an_update_by_vmcall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher = Publisher(tmp_path)
    bundle, signature = publisher.sign(version=3)
    (tmp_path / "u.hvdb").write_bytes(bundle)
    (tmp_path / "u.hvdb.sig").write_bytes(signature)
    image = tmp_path / "update.bin"
    image.write_bytes(build_update_program(bundle, signature))
    report = tmp_path / "run.html"
    code = main(["run", str(image), "--trust", str(publisher.pub), "--report", str(report)])
    assert code == 0, capsys.readouterr().err
    page = report_of(report)
    calls = page.rows("table-hypercall")
    assert [row[2] for row in calls[1:]] == ["get_vmmcall_number -> 0x2", "update_signatures -> OK"]
    updates = [row[2] for row in page.rows("table-update")[1:]]
    assert updates == ["v3 accepted", "v3 in force"]
    # update_signatures' handler accepted the update: the same exit (the second), not the one before
    accepted, in_force = (int(row[1]) for row in page.rows("table-update")[1:])
    assert accepted == int(calls[2][1]) == 2 and in_force >= accepted
    titles = [title for lane, title in page.marks if lane == "update"]
    assert titles[0].startswith("v3 accepted at t=2 (exit 2, ")
    assert page.rows("summary")[1:-1][0][:2] == ["IO_INSTRUCTION", str(len(
        "hvupdate: rc=0 (OK)\n"))]  # fmt: skip
    assert page.has("no-detection") and page.has("no-injected")


def test_a_fault_and_a_timeout_say_how_the_run_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faulting = tmp_path / "fault.bin"
    faulting.write_bytes(assemble("mov rax, [0x7fff0000]\nhlt", mode=64, address=0x100000))
    assert main(["run", str(faulting), "--report", str(tmp_path / "f.html")]) == 1
    page = report_of(tmp_path / "f.html")
    assert page.text("run-exit-status") == "1"
    assert page.text("run-ended").startswith("guest fault: ")
    assert page.rows("summary")[1][:2] == ["EXCEPTION_NMI", "1"]
    looping = tmp_path / "loop.bin"
    looping.write_bytes(assemble("again: jmp again", mode=64, address=0x100000))
    code = main(["run", str(looping), "--timeout", "0.3", "--report", str(tmp_path / "t.html")])
    assert code == 3
    page = report_of(tmp_path / "t.html")
    assert page.text("run-exit-status") == "3" and page.text("run-ended").startswith("timeout")
    assert page.rows("summary")[1][:2] == ["WATCHDOG", "1"]
    capsys.readouterr()


def test_an_update_over_the_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--net``: the update arrives on the network's I/O thread; its events reach the page."""
    report = tmp_path / "run.html"
    codes, _ = cli_run_receiving_update(tmp_path, "--report", str(report))
    assert codes == [0], capsys.readouterr().err
    page = report_of(report)
    rows = page.rows("table-update")
    assert rows[1][2] == "v7 accepted" and rows[1][3] == "network"
    assert "v7 in force" in [row[2] for row in rows[1:]]
    assert "update receiver" in page.text("run-summary")


def test_a_report_that_cannot_be_written_stops_before_the_guest_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hello = tmp_path / "hello.bin"
    hello.write_bytes(build_program("hello"))
    cases = [
        (tmp_path / "missing" / "run.html", "cannot write --report "),
        (tmp_path, "is a directory: give a file to write"),
    ]
    for path, message in cases:
        assert main(["run", str(hello), "--report", str(path)]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("hv-emu: error: ")
        assert out == ""  # the guest never ran
    # An existing file is replaced, as --events and --screen replace theirs.
    old = tmp_path / "old.html"
    old.write_text("not a report")
    assert main(["run", str(hello), "--report", str(old), "-q"]) == 0
    assert capsys.readouterr().out == "hello from the guest\n"
    page = report_of(old)
    assert page.text("console") == "hello from the guest\n"


def test_a_guest_making_many_exits_gets_a_bounded_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past 2000 marks a lane draws no more and says how many it left out; the summary counts
    every exit, and the exit that ended the run is still named."""
    looping = tmp_path / "loop.bin"
    looping.write_bytes(assemble(f"""
        mov ecx, 5000
        mov edx, {PORT_DEBUGCON}
    again:
        mov al, 0x2e
        out dx, al
        dec ecx
        jnz again
        hlt
    """, mode=64, address=0x100000))  # fmt: skip
    report = tmp_path / "run.html"
    assert main(["run", str(looping), "--report", str(report), "-q"]) == 0
    assert capsys.readouterr().out == "." * 5000
    text = report.read_text(encoding="utf-8")
    page = report_of(report)
    assert [lane for lane, _ in page.marks] == ["exit"] * DEFAULT_MAX_MARKS
    assert page.rows("summary")[1][:2] == ["IO_INSTRUCTION", "5000"]
    assert (f"VM exits: the first {DEFAULT_MAX_MARKS} of 5001 are drawn; not drawn: "
            f"IO_INSTRUCTION: {5000 - DEFAULT_MAX_MARKS}, HLT: 1") in text  # fmt: skip
    assert "The last exit: HLT at t=5001 (exit 5001" in text
    assert page.text("console") == "." * 5000
    assert len(text) < 1_000_000


def test_a_linux_program_s_exit_status_heads_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A static ELF program run without its arguments prints its usage and exits 2: the report
    says so, and counts its system calls (SYSCALL exits) and the stop that ended it."""
    program = tmp_path / "hvupdate"
    program.write_bytes(build_hvupdate())
    report = tmp_path / "elf.html"
    assert main(["run", str(program), "--report", str(report), "-q"]) == 2
    assert capsys.readouterr().err.startswith("usage: hvupdate")
    page = report_of(report)
    assert page.text("run-ended") == "program exited with status 2"
    assert page.text("run-exit-status") == "2"
    rows = {row[0]: row[1] for row in page.rows("summary")[1:-1]}
    assert rows == {"SYSCALL": "2", "STOP": "1"}
    assert not page.has("console")  # it wrote to its stderr, not to the debug console


ABORTS = r"""
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    fflush(stdout);
    abort();
}
"""


@pytest.mark.skipif(not gcc_can(), reason="gcc cannot link a static C program here")
def test_a_program_abort_killed_reports_as_the_cli_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The header says what the CLI's last line says (killed by SIGABRT, the system calls); the
    console section says where a Linux program's output went; the options are the command line a
    shell takes back (quoting and the ``--`` before the program's arguments kept)."""
    program = build_c(tmp_path, "aborts", ABORTS)
    report = tmp_path / "sig.html"
    code = main(["run", str(program), "--report", str(report), "--", "a b", "<i>"])
    out, err = capsys.readouterr()
    assert code == 134 and out == "arg 1: a b\narg 2: <i>\n"
    last = err.strip().splitlines()[-1]
    assert last.startswith("hv-emu: program killed by SIGABRT, exited with status 134: ")
    page = report_of(report)
    ending, summary = last.removeprefix("hv-emu: ").split(": ", 1)
    assert page.text("run-ended") == ending and page.text("run-exit-status") == "134"
    calls = re.match(r"(\d+) system calls, ", summary)
    assert calls is not None and page.text("run-summary").startswith(calls[0])
    # The summary's time differs by nothing else than the report's own: compare the rest.
    assert page.text("run-summary").split("; ", 1)[1] == summary.split("; ", 1)[1]
    assert shlex.split(page.text("run-options")) == [f"--report={report}", "--", "a b", "<i>"]
    assert page.has("console-linux") and "printed nothing" not in report.read_text("utf-8")


def test_a_booted_guest_s_timer_interrupts_fill_the_injected_lane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """TUTORIAL step 9's tick guest: five IRQ0s (vector 08h, external) through the BIOS's int 08h
    stub, each calling the guest's int 1Ch handler (software), then its int 1Ah: eleven
    injections, agreeing with ``--trace``'s INJECT lines, on an axis of guest milliseconds (a
    timer ran: the PIT's 65,536 counts at 1,193,182 Hz are 54.9 ms a tick)."""
    disk = tick_disk(tmp_path)
    report = tmp_path / "ticks.html"
    assert main(["run", "--boot", str(disk), "--report", str(report), "--trace"]) == 0
    out, err = capsys.readouterr()
    assert out == ".....5\n"
    page = report_of(report)
    assert page.text("run-program") == str(disk)
    assert page.text("run-guest-time").startswith("milliseconds: virtual")
    injected = [title for lane, title in page.marks if lane == "injected"]
    traced = [line for line in err.splitlines() if " INJECT " in line]
    assert len(injected) == len(traced) == 11
    vectors = [re.search(r"vector=(\d+);", title)[1] for title in injected]  # type: ignore[index]
    assert vectors == ["8", "28"] * 5 + ["26"]
    rows = page.rows("table-injected")
    assert rows[0] == ["t", "exit", "what", "vector", "type", "at", "result"]
    first_tick, first_hook = rows[1], rows[2]
    assert first_tick[2:] == ["vector 0x08", "8", "external interrupt", "0000:7c12",
                              "delivered -> f000:1080"]  # fmt: skip
    assert first_hook[2:] == ["vector 0x1c", "28", "software interrupt", "f000:1084",
                              "delivered -> 0000:7c2c"]  # fmt: skip
    # The ticks stand 65536 / 1193182 s apart on the axis, whatever the host's speed.
    ticks = [float(row[0]) for row in rows[1:] if row[3] == "8"]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(abs(gap - 65536 / 1193.182) < 0.01 for gap in gaps), gaps
    # Each injection is stamped with the exit it comes before: the BIOS's int 08h stub's trap.
    exits = {int(row[1]) for row in rows[1:] if row[3] == "8"}
    firmware = {m[1] for _, t in page.marks if (m := re.match(r"FIRMWARE .*\(exit (\d+),", t))}
    assert {str(n) for n in exits} <= firmware
