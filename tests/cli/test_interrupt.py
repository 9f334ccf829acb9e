"""Ctrl-C, SIGTERM and SIGHUP end ``hv-emu run`` with one line naming the signal, status 128 + its
number (130, 143, 129) and every output written, wherever the guest is (hv_emu/cli/interrupt.py,
hv_emu/vcpu/stopping.py): a tight loop Unicorn runs without a hook, a loop of exits (CPUID,
VMCALL) where the signal lands inside a hook, a Linux program blocked reading standard input, the
gdb stub waiting for gdb; ``timeout -s TERM`` on a tight loop; and before the guest started, one
line and every output left as it was. One signal each, real processes (but the last, in-process);
the waits are bounded, nothing is timed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hv_emu.cli.run as run_module
from guest_tool.assemble import assemble
from hv_emu.cli.main import main
from hv_emu.machine import Machine
from tests.rigs.processes import (
    PATIENCE,
    ROOT,
    hv_emu_process,
    temporaries,
    wait_for,
    write_reader,
)

#: Each guest says "r" (the debug console, or the program's standard output) once it is running.
_SAY = "mov al, 'r'\n out 0xe9, al\n"
GUESTS = {
    "tight loop": _SAY + "again: jmp again",
    "cpuid exits": _SAY + "again: cpuid\n jmp again",
    "hypercalls": _SAY + "again: xor eax, eax\n xor ebx, ebx\n vmcall\n jmp again",
}
#: Each signal that ends a run: its exit status, the word of its line, its ``stop`` reason.
SIGNALS = {
    signal.SIGINT: (130, "interrupted", "interrupted (Ctrl-C)"),
    signal.SIGTERM: (143, "terminated", "terminated (SIGTERM)"),
    signal.SIGHUP: (129, "hung up", "hung up (SIGHUP)"),
}


def check_ended(child: subprocess.Popen[bytes], events: Path, signum: int = signal.SIGINT) -> str:
    """One signal; the run ends with its status, the one line, and a complete event log."""
    child.send_signal(signum)
    _, err = child.communicate(timeout=PATIENCE)
    return check_lines(child.returncode, err.decode(), events, signum)


def check_lines(status: int, err: str, events: Path, signum: int) -> str:
    expected, word, reason = SIGNALS[signal.Signals(signum)]
    lines = err.splitlines()
    assert status == expected, err
    assert lines[-1].startswith(f"hv-emu: {word} at RIP=0x"), err
    assert lines[-1].split(": ")[1].endswith(f"({reason.split('(')[1]}"), err  # names it
    assert not any("Traceback" in line or "ignored" in line for line in lines), err
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records[-1]["event"] == "stop"
    assert records[-1]["reason"] == reason
    return lines[-1]


@pytest.mark.parametrize(("guest", "signum"), [
    *((guest, signal.SIGINT) for guest in sorted(GUESTS)),
    ("tight loop", signal.SIGTERM), ("cpuid exits", signal.SIGTERM),
    ("hypercalls", signal.SIGHUP),
])  # fmt: skip
def test_one_signal_ends_a_running_guest_and_writes_every_output(
    guest: str, signum: int, tmp_path: Path
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
        check_ended(child, events, signum)
    word = SIGNALS[signal.Signals(signum)][1]
    assert report.read_text().startswith("<!DOCTYPE html>") and word in report.read_text()
    assert len(screen.read_text().splitlines()) == 25
    for line in trace.read_text().splitlines():
        json.loads(line)
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_linux_program_blocked_reading_standard_input(
    signum: int, tmp_path: Path
) -> None:
    events = tmp_path / "e.jsonl"
    read_end, write_end = os.pipe()  # held open: the program's read waits for ever
    try:
        program = write_reader(tmp_path / "reader")
        with hv_emu_process(program, "--events", str(events), "--timeout", "600",
                            stdin=read_end) as child:  # fmt: skip
            os.close(read_end)
            assert child.stdout is not None
            assert child.stdout.read(1) == b"r"  # written before the read: kept
            check_ended(child, events, signum)
    finally:
        os.close(write_end)
    assert '"nr":0' not in events.read_text()  # no read returned


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_gdb_stub_waiting_for_gdb(signum: int, tmp_path: Path) -> None:
    image, events = tmp_path / "g.bin", tmp_path / "e.jsonl"
    image.write_bytes(assemble("again: jmp again", mode=64, address=0x100000))
    with hv_emu_process(image, "--gdb", "0", "--events", str(events)) as child:
        assert child.stderr is not None
        assert b"waiting for gdb" in child.stderr.readline()
        check_ended(child, events, signum)


@pytest.mark.skipif(not Path("/proc/self/status").exists() or shutil.which("nohup") is None,
                    reason="needs Linux's /proc and nohup(1)")
def test_an_ignored_sighup_stays_ignored_as_under_nohup(tmp_path: Path) -> None:
    """``nohup hv-emu run ...``: SIGHUP was ignored when hv-emu started, so a closed terminal does
    not end the run; the SIGTERM sent after it does (a pending SIGHUP would come first)."""
    image, events = tmp_path / "g.bin", tmp_path / "e.jsonl"
    image.write_bytes(assemble(GUESTS["tight loop"], mode=64, address=0x100000))
    nohup = ["nohup", sys.executable, "-m", "hv_emu", "run", str(image), "--timeout", "600",
             "--events", str(events)]  # fmt: skip
    child = subprocess.Popen(nohup, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.read(1) == b"r"  # the guest runs
        status = Path(f"/proc/{child.pid}/status").read_text()
        masks = {k: int(v, 16) for k, v in re.findall(r"^(Sig\w+):\s*([0-9a-f]+)$", status, re.M)}
        bit = {signum: 1 << (signum - 1) for signum in SIGNALS}
        assert masks["SigIgn"] & bit[signal.SIGHUP] and not masks["SigCgt"] & bit[signal.SIGHUP]
        assert masks["SigCgt"] & bit[signal.SIGTERM] and masks["SigCgt"] & bit[signal.SIGINT]
        child.send_signal(signal.SIGHUP)
        check_ended(child, events, signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=PATIENCE)


@pytest.mark.skipif(shutil.which("timeout") is None, reason="no timeout(1)")
def test_timeout_s_term_ends_a_tight_loop_with_every_output(tmp_path: Path) -> None:
    """``timeout -s TERM 2 hv-emu run ...``: a CI runner's limit. ``--preserve-status`` passes
    hv-emu's own status on (plain ``timeout`` says 124 whatever it was)."""
    image, events, report = tmp_path / "g.bin", tmp_path / "e.jsonl", tmp_path / "r.html"
    image.write_bytes(assemble(GUESTS["tight loop"], mode=64, address=0x100000))
    argv = ["timeout", "--preserve-status", "-s", "TERM", "2", sys.executable, "-m", "hv_emu",
            "run", str(image), "--timeout", "600", "--events", str(events), "--report",
            str(report)]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, timeout=PATIENCE, check=False)  # fmt: skip
    err = done.stderr.decode()
    assert temporaries(tmp_path) == [], err
    if "at RIP=" not in err:  # a slow start: the signal came before the guest did
        assert done.returncode == 143, err
        assert err.splitlines()[-1] == ("hv-emu: terminated (SIGTERM): the output files left as "
                                        "they were"), err  # fmt: skip
        assert not report.exists()
        pytest.skip("the machine was too slow to start the guest within 2 s")
    assert done.stdout == b"r"
    check_lines(done.returncode, err, events, signal.SIGTERM)
    assert "terminated (SIGTERM) at RIP=" in report.read_text()


@pytest.mark.parametrize("signum", sorted(SIGNALS))
def test_a_signal_before_the_guest_starts_leaves_every_output_as_it_was(
    signum: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The signal lands while the machine is being built: one line, its status, no output
    touched and no temporary left."""
    image, events, report = tmp_path / "g.bin", tmp_path / "e.jsonl", tmp_path / "r.html"
    image.write_bytes(assemble(GUESTS["tight loop"], mode=64, address=0x100000))
    report.write_text("old\n")
    real = run_module.Machine

    def signalled(*args: Any, **kwargs: Any) -> Machine:
        os.kill(os.getpid(), signum)  # the handler runs before the next bytecode
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "Machine", signalled)
    status = main(["run", str(image), "--events", str(events), "--report", str(report)])
    expected, _word, reason = SIGNALS[signal.Signals(signum)]
    assert status == expected
    assert capsys.readouterr().err == f"hv-emu: {reason}: the output files left as they were\n"
    assert report.read_text() == "old\n" and not events.exists()
    assert temporaries(tmp_path) == []
    assert signal.getsignal(signum) is not None  # the handlers were put back
    if signum != signal.SIGINT:
        assert signal.getsignal(signum) == signal.SIG_DFL


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
