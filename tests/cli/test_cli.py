"""The command lines as a user meets them: the README's commands, exit codes, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from tests.rigs.commands import BIN, one_line, sh

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "hv_emu" / "data" / "sample.db"


def test_the_readme_commands_work_as_written(tmp_path: Path) -> None:
    """The five commands of the README, in order, from an empty directory: nothing is read from
    the checkout (the sample database comes from ``guest-tool sample-db``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("The same steps by hand:\n```\n", 1)[1].split("```", 1)[0]
    commands = [line.split() for line in block.strip().splitlines()]
    assert [c[:2] for c in commands] == [
        ["guest-tool", "keygen"], ["guest-tool", "sample-db"], ["guest-tool", "bundle"],
        ["guest-tool", "build"], ["hv-emu", "run"],
    ]
    for argv in commands:
        done = sh(*argv, cwd=tmp_path)
        assert done.returncode == 0, (argv, done.stderr)
    assert done.stdout == "hvupdate: rc=0 (OK)\n"
    assert re.match(r"hv-emu: guest halted: 2 hypercalls, .* database v7 \(5 signatures\)",
                    done.stderr)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    # The compile thread logs database_active at some point after the acceptance.
    assert kinds.index("update_accepted") < kinds.index("database_active")
    kinds.remove("database_active")
    assert kinds == ["hypercall", "update_accepted", "hypercall", "halt"]
    assert events[1]["db_version"] == 7 and events[1]["signatures"] == 5
    assert (tmp_path / "sample.db").read_bytes() == SAMPLE.read_bytes()
    for name in ("demo.key", "demo.pub", "update.hvdb", "update.hvdb.sig", "update-guest.bin"):
        assert (tmp_path / name).is_file()


def test_run_db_names_a_directory_is_one_line_pointing_to_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process (the installed command may be another tree's): a directory of databases is
    ``hv-emu scan --db``'s, not ``run``'s."""
    from hv_emu.cli.main import main

    guest = image(tmp_path, "hlt")
    assert main(["run", str(guest), "--db", str(tmp_path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"hv-emu: error: --db {tmp_path} is a directory: hv-emu run takes one "
                    "database file (a directory of databases is accepted by hv-emu scan only)")


@pytest.mark.parametrize("mode", [16, 32])
def test_build_prints_how_to_run_other_modes(tmp_path: Path, mode: int) -> None:
    assert sh("guest-tool", "keygen", "k", cwd=tmp_path).returncode == 0
    assert sh("guest-tool", "bundle", "--db", SAMPLE, "--version", "1", "--key", "k.key",
              "-o", "u.hvdb", cwd=tmp_path).returncode == 0  # fmt: skip
    built = sh("guest-tool", "build", "--bundle", "u.hvdb", "-o", "g.bin", "--mode", str(mode),
               cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0
    hint = built.stdout.split("run it with: ")[1].strip()
    argv = hint.replace("KEY.pub", "k.pub").split()
    assert argv[:4] == ["hv-emu", "run", "g.bin", "--mode"]
    ran = sh(*argv, cwd=tmp_path)
    assert (ran.returncode, ran.stdout) == (0, "hvupdate: rc=0 (OK)\n"), ran.stderr


def image(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "guest.bin"
    path.write_bytes(assemble(source, mode=64, address=0x100000))
    return path


def test_a_guest_fault_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    done = sh("hv-emu", "run", image(tmp_path, "mov rbx, 0x40000000\n mov dword ptr [rbx], 1"),
              cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1
    line = one_line(done.stderr)
    for part in ("guest fault: #PF at 0x40000000", "64-bit mode", "CS:RIP=0x0018:0x100007",
                 "mov dword ptr [rbx], 1", "RBX=0x40000000", "CR2=0x40000000"):
        assert part in line, line


def test_a_timeout_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    done = sh("hv-emu", "run", image(tmp_path, "spin: jmp spin"), "--timeout", "0.3", cwd=tmp_path)
    assert done.returncode == 3
    assert "timeout" in one_line(done.stderr)


def test_debug_console_goes_to_stdout_and_messages_to_stderr(tmp_path: Path) -> None:
    src = 'lea rsi, [rip+m]\n mov dx, 0xe9\n mov ecx, 3\n rep outsb\n hlt\n m: .ascii "hi\\n"'
    done = sh("hv-emu", "run", image(tmp_path, src), "--quiet", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "hi\n", "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.bin"], "cannot read image missing.bin"),
        (["run", "GUEST", "--mode", "48"], "invalid choice"),
        (["run", "GUEST", "--mem", "1"], "--mem must be"),
        (["run", "GUEST", "--load", "0x10000"], "overlaps the loader's page tables"),
        (["run", "GUEST", "--load", "0x7ffffff0"], "does not fit"),
        (["run", "GUEST", "--entry", "0x0"], "outside the image"),
        (["run", "GUEST", "--trust", "nope.pem"], "nope.pem"),
        (["run", "GUEST", "--db", "bad.db"], "bad.db:1"),
        (["run", "GUEST", "--timeout", "-1"], "greater than 0"),
        (["run", "GUEST", "--timeout", "inf"], "finite"),
        (["run", "GUEST", "--timeout", "nan"], "finite"),
        (["run", "GUEST", "--max-update", "-1"], "--max-update"),
        (["run", "GUEST", "--max-update", "0x10000000000"], "--max-update"),
        (["run", "GUEST", "--paging", "pae"], "--paging applies to --mode 32"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    guest = image(tmp_path, "hlt")
    (tmp_path / "bad.db").write_text("Broken=zz\n")
    done = sh("hv-emu", *[str(guest) if a == "GUEST" else a for a in argv], cwd=tmp_path)
    assert done.returncode == 2
    assert message in one_line(done.stderr)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bundle", "--db", "bad.db", "--version", "1", "--key", "k.key", "-o", "u"], "bad.db:1"),
        (["bundle", "--db", "x.txt", "--version", "1", "--key", "k.key", "-o", "u"], "x.txt"),
        (["bundle", "--db", "SAMPLE", "--version", "0", "--key", "k.key", "-o", "u"], "version"),
        (["bundle", "--db", "SAMPLE", "--version", "1", "--key", "k.pub", "-o", "u"], "k.pub"),
        (["build", "--bundle", "missing.hvdb", "-o", "g"], "missing.hvdb"),
        (["keygen", "k"], "exists"),
        (["keygen", "z", "--alg", "dsa"], "invalid choice"),
    ],
)
def test_guest_tool_errors_are_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    assert sh("guest-tool", "keygen", "k", cwd=tmp_path).returncode == 0
    (tmp_path / "bad.db").write_text("Broken=zz\n")
    (tmp_path / "x.txt").write_text("whatever\n")
    done = sh("guest-tool", *[str(SAMPLE) if a == "SAMPLE" else a for a in argv], cwd=tmp_path)
    assert done.returncode == 2
    assert message in one_line(done.stderr)


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    done = sh("hv-emu", "demo", "--workdir", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    results = re.findall(r"guest \| hvupdate: rc=(\d+) \((\w+)\)", out)
    assert results == [("0", "OK"), ("2", "BAD_SIGNATURE"), ("0", "OK"), ("5", "STALE_VERSION"),
                       ("0", "OK")]  # the last one: the disk chapter's update
    states = re.findall(r"database in force: v(\d+), (\d+) signatures \((\w+)\)", out)
    assert states == [("1", "5", "replaced"), ("1", "5", "unchanged"), ("2", "6", "replaced"),
                      ("2", "6", "unchanged")]
    # The disk: the file passes before the update, is caught by PIO and by DMA after it.
    disk = out.split("7. The disk", 1)[1].split("\n11. ", 1)[0]  # steps 7-10
    writes = re.findall(r"read back: (\d+) bytes differ", disk)
    assert writes == ["0", "14", "14"]
    found = re.findall(r"DETECTED (\S+) at LBA (\d+), byte (\d+)", disk)
    assert found == [("Demo.New-Virus-1", "200", "506"), ("Demo.New-Virus-1", "300", "506")]
    assert disk.count("network cut:") == 1 and "nothing found" in disk.split("8.", 1)[0]
    assert re.search(r"screen\| +║ signature: Demo.New-Virus-1", disk)
    assert "on disk: 69 6e 67 20 " + "00 " * 17 + "6f 77 6e 20" in disk
    assert "state | detections: 2\n    state | network: cut" in disk


def test_run_writes_events_without_keeping_them_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guest that calls VMCALL in a loop for the whole ``--timeout`` makes an event per call;
    ``hv-emu run`` writes them to ``--events`` and must not also hold every one in RAM."""
    import hv_emu.cli.main
    import hv_emu.cli.run
    from hv_emu.events import EventLog

    logs: list[EventLog] = []

    class Recorded(EventLog):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            logs.append(self)

    monkeypatch.setattr(hv_emu.cli.run, "EventLog", Recorded)
    guest = image(tmp_path, "mov ecx, 5\n again: xor eax, eax\n vmcall\n loop again\n hlt")
    events = tmp_path / "events.jsonl"
    assert hv_emu.cli.main.main(["run", str(guest), "--quiet", "--events", str(events)]) == 0
    written = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert written.count("hypercall") == 5
    assert [log.records for log in logs] == [[]]


def test_a_reader_that_goes_away_does_not_stop_the_hypervisor(tmp_path: Path) -> None:
    """``hv-emu run guest | head -1``: once the pipe closes, the guest's output has nowhere to go;
    the debug console stops streaming and the run ends as it would have (no internal error)."""
    guest = image(tmp_path, "l: mov dx, 0xe9\n mov al, 0x41\n out dx, al\n mov al, 10\n"
                            " out dx, al\n jmp l")  # fmt: skip
    run = subprocess.Popen([str(BIN / "hv-emu"), "run", str(guest), "--timeout", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert run.stdout is not None and run.stderr is not None
    assert run.stdout.read(4) == b"A\nA\n"
    run.stdout.close()  # the reader (head) exits
    stderr = run.stderr.read().decode()
    assert run.wait(60) == 3  # the watchdog ended the spinning guest, as without the pipe
    assert "timeout" in one_line(stderr)


def update_image(tmp_path: Path, version: int = 7) -> tuple[Path, Path]:
    """An update guest for ``version`` of the sample database and the key that signed it, made
    in-process (so the worktree's own code builds it)."""
    from guest_tool.bundle import write_bundle
    from guest_tool.keys import generate_keypair
    from guest_tool.programs import build_update_program

    key, pub = generate_keypair(tmp_path / "k")
    bundle, signature = write_bundle(SAMPLE, version=version, key_path=key,
                                     out=tmp_path / "u.hvdb")  # fmt: skip
    guest = tmp_path / "update-guest.bin"
    guest.write_bytes(build_update_program(bundle.read_bytes(), signature.read_bytes()))
    return guest, pub


def test_sync_updates_answers_the_vmcall_once_the_database_is_active(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hv-emu run --sync-updates`` (in-process: the worktree's own CLI): the compile ends before
    the guest hears OK, so ``database_active`` comes before the update's ``hypercall`` event."""
    import hv_emu.cli.main

    guest, pub = update_image(tmp_path)
    events = tmp_path / "events.jsonl"
    argv = ["run", str(guest), "--trust", str(pub), "--sync-updates", "--events", str(events)]
    assert hv_emu.cli.main.main(argv) == 0
    out, err = capsys.readouterr()
    assert out == "hvupdate: rc=0 (OK)\n"
    assert re.search(r"guest halted: 2 hypercalls, .* database v7 \(5 signatures\)$", err.strip())
    kinds = [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert kinds == ["hypercall", "update_accepted", "database_active", "hypercall", "halt"]


def test_the_summary_names_an_accepted_database_that_never_came_into_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hv_emu.cli.main
    from hv_emu.errors import DatabaseError
    from hv_emu.updates import compile_worker

    def refuse(*args: object, **kwargs: object) -> object:
        raise DatabaseError("update v7", 0, 0, "Hyperscan cannot compile it: out of memory")

    monkeypatch.setattr(compile_worker, "compile_signatures", refuse)
    guest, pub = update_image(tmp_path)
    assert hv_emu.cli.main.main(["run", str(guest), "--trust", str(pub)]) == 0
    err = capsys.readouterr().err.strip()
    assert err.endswith("database v0 (0 signatures), v7 accepted but not in force (failed)"), err


def test_every_run_option_is_in_the_readme() -> None:
    """The README's ``hv-emu run`` section names every option ``hv-emu run --help`` lists."""
    import argparse

    from hv_emu.cli.run_options import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    run = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {o for a in run.choices["run"]._actions for o in a.option_strings
               if o.startswith("--") and o != "--help"}  # fmt: skip
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## `hv-emu run`", 1)[1].split("\n## ", 1)[0]
    missing = sorted(o for o in options if not re.search(re.escape(o) + r"(?![\w-])", section))
    assert missing == []


def test_the_demo_tells_accepted_from_active(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (the worktree's own demo): an acceptance is told as such, and the disk chapter
    shows get_status's database lines once the update is active."""
    import hv_emu.cli.main

    assert hv_emu.cli.main.main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "update accepted: database v1, 5 signatures; OK now, v0 scans until its compile" in out
    step8 = out.split("\n8. ", 1)[1].split("\n9. ", 1)[0]
    assert step8.endswith("state | db_version: 2\n    state | db_active_version: 2\n"
                          "    state | db_state: active\n")
    assert "state | detections: 2\n    state | network: cut" in out


def test_a_screen_path_that_is_a_directory_is_refused_before_the_run(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from hv_emu.cli.main import main

    guest = tmp_path / "say.bin"
    guest.write_bytes(b"\xb0X\xe6\xe9\xf4")  # mov al, 'X'; out 0xe9, al; hlt
    assert main(["run", str(guest), "--screen", str(tmp_path)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and "is a directory" in err  # the guest never ran
