"""Ctrl-C ends ``hv-emu run`` with one line, status 130 and every output written, wherever the
guest is (hv_emu/cli/interrupt.py, hv_emu/vcpu/stopping.py): a tight loop Unicorn runs without a
hook, a loop of exits (CPUID, VMCALL) where the signal lands inside a hook, a Linux program
blocked reading standard input, the gdb stub waiting for gdb. One SIGINT each, real processes;
the waits are bounded, nothing is timed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from tests.rigs.processes import hv_emu_process, temporaries, wait_for, write_reader

#: Each guest says "r" (the debug console, or the program's standard output) once it is running.
_SAY = "mov al, 'r'\n out 0xe9, al\n"
GUESTS = {
    "tight loop": _SAY + "again: jmp again",
    "cpuid exits": _SAY + "again: cpuid\n jmp again",
    "hypercalls": _SAY + "again: xor eax, eax\n xor ebx, ebx\n vmcall\n jmp again",
}
def check_interrupted(child: subprocess.Popen[bytes], events: Path) -> str:
    """Ctrl-C once; the run ends with status 130, the one line, and a complete event log."""
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    lines = err.decode().splitlines()
    assert child.returncode == 130, err
    assert lines[-1].startswith("hv-emu: interrupted at RIP=0x"), err
    assert not any("Traceback" in line or "ignored" in line for line in lines), err
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records[-1]["event"] == "stop"
    assert records[-1]["reason"] == "interrupted (Ctrl-C)"
    return lines[-1]


@pytest.mark.parametrize("guest", sorted(GUESTS))
def test_one_ctrl_c_ends_a_running_guest_and_writes_every_output(
    guest: str, tmp_path: Path
) -> None:
    image = tmp_path / "g.bin"
    image.write_bytes(assemble(GUESTS[guest], mode=64, address=0x100000))
    events, report, screen, trace = (tmp_path / name for name in
                                     ("e.jsonl", "r.html", "s.txt", "t.jsonl"))  # fmt: skip
    report.write_text("old\n")
    extra = ["--report", str(report), "--screen", str(screen), "--trace-json", str(trace)]
    with hv_emu_process(image, "--events", str(events), "--timeout", "600", *extra) as child:
        assert child.stdout is not None
        assert child.stdout.read(1) == b"r"  # the guest runs
        check_interrupted(child, events)
    assert report.read_text().startswith("<!DOCTYPE html>") and "interrupted" in report.read_text()
    assert len(screen.read_text().splitlines()) == 25
    for line in trace.read_text().splitlines():
        json.loads(line)
    assert temporaries(tmp_path) == []


def test_ctrl_c_ends_a_linux_program_blocked_reading_standard_input(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    read_end, write_end = os.pipe()  # held open: the program's read waits for ever
    try:
        program = write_reader(tmp_path / "reader")
        with hv_emu_process(program, "--events", str(events), "--timeout", "600",
                            stdin=read_end) as child:  # fmt: skip
            os.close(read_end)
            assert child.stdout is not None
            assert child.stdout.read(1) == b"r"  # written before the read: kept
            check_interrupted(child, events)
    finally:
        os.close(write_end)
    assert '"nr":0' not in events.read_text()  # no read returned


def test_ctrl_c_ends_the_gdb_stub_waiting_for_gdb(tmp_path: Path) -> None:
    image, events = tmp_path / "g.bin", tmp_path / "e.jsonl"
    image.write_bytes(assemble("again: jmp again", mode=64, address=0x100000))
    with hv_emu_process(image, "--gdb", "0", "--events", str(events)) as child:
        assert child.stderr is not None
        assert b"waiting for gdb" in child.stderr.readline()
        check_interrupted(child, events)


def test_a_timeout_ends_a_linux_program_blocked_reading_standard_input(tmp_path: Path) -> None:
    events = tmp_path / "e.jsonl"
    read_end, write_end = os.pipe()
    try:
        program = write_reader(tmp_path / "reader")
        with hv_emu_process(program, "--events", str(events), "--timeout", "0.5",
                            stdin=read_end) as child:  # fmt: skip
            os.close(read_end)
            out, err = child.communicate(timeout=120)
    finally:
        os.close(write_end)
    assert child.returncode == 3, err
    assert out == b"r"  # what the program wrote before it blocked
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hv-emu: timeout: the guest ran 0.5 s"), err
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["event"] for r in records] == ["timeout"]


def test_streamed_events_are_there_while_the_run_goes_and_after_a_kill(tmp_path: Path) -> None:
    image, events = tmp_path / "g.bin", tmp_path / "e.jsonl"
    image.write_bytes(assemble(GUESTS["hypercalls"], mode=64, address=0x100000))
    events.write_text("the old log\n")
    linked = tmp_path / "other-name.jsonl"
    os.link(events, linked)
    with hv_emu_process(image, "--events", str(events), "--timeout", "600") as child:
        # tail -f: hypercall events reach FILE itself while the guest runs.
        assert wait_for(lambda: events.read_text().count('"event":"hypercall"') >= 3)
        child.kill()
        child.wait(timeout=60)
    text = events.read_text()
    complete = text[: text.rfind("\n") + 1]  # a kill may cut the last line short
    records = [json.loads(line) for line in complete.splitlines()]
    assert len(records) >= 3 and {r["event"] for r in records} == {"hypercall"}
    assert linked.read_text() == "the old log\n"  # replaced by a rename, never truncated
