"""``hv-emu run``'s output files never destroy a file it did not write (hv_emu/cli/outputs.py):
an output naming an input (or another output, or a file in --state) is refused before anything is
opened; outputs are temporaries renamed into place only once the run ended (``--events`` as the
guest starts), so a refused or failed run leaves an existing file as it was (found by a new-user
tester). Ctrl-C is an ending like the others, and --events streams: tests/cli/test_interrupt.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.keys import generate_keypair
from guest_tool.programs import build_program
from hv_emu import SAMPLE_DB
from hv_emu.cli.main import main
from hv_emu.cli.outputs import Outputs, OutputText
from hv_emu.errors import ConfigError, HostError

OUTPUT_OPTIONS = ("--report", "--events", "--screen", "--trace-json")


def temporaries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp"))


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A hello guest, a database, a key pair, a disk image and a text file, each with content."""
    (tmp_path / "hello.bin").write_bytes(build_program("hello"))
    (tmp_path / "mine.db").write_bytes(SAMPLE_DB.read_bytes())
    generate_keypair(tmp_path / "k", "ed25519")
    (tmp_path / "v.img").write_bytes(b"\xaa" * 512 * 64)
    (tmp_path / "h.txt").write_text("the user's notes\n")
    return {p.stem if p.suffix != ".pub" else "pub": p for p in tmp_path.iterdir()}


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hv-emu: error: "), err
    assert out == ""  # the guest never ran
    return lines[0]


@pytest.mark.parametrize("option", OUTPUT_OPTIONS)
@pytest.mark.parametrize("victim", ["IMAGE", "--db", "--trust", "--disk", "--file", "--boot"])
def test_an_output_naming_an_input_is_refused_and_the_input_kept(
    option: str, victim: str, files: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hello = files["hello"]
    named = {"IMAGE": hello, "--db": files["mine"], "--trust": files["pub"],
             "--disk": files["v"], "--file": files["h"], "--boot": files["v"]}[victim]  # fmt: skip
    argv = ["run", str(hello)]
    if victim == "--boot":
        argv = ["run", "--boot", str(named)]
    elif victim == "--file":
        argv = ["run", "/usr/bin/true", "--sysroot", str(tmp_path), "--file", f"/h={named}"]
    elif victim != "IMAGE":
        argv += [victim, str(named)]
    before = named.read_bytes()
    assert main([*argv, option, str(named)]) == 2
    line = one_error(capsys)
    assert f"{option} {named} is the same file as " in line, line
    assert named.read_bytes() == before
    assert temporaries(tmp_path) == []


def test_a_link_to_an_input_is_the_same_file(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Symbolic links are resolved and hard links are the same inode; a path spelled through
    another directory is the same path."""
    db = files["mine"]
    (tmp_path / "soft.db").symlink_to(db.name)
    os.link(db, tmp_path / "hard.db")
    (tmp_path / "sub").mkdir()
    spellings = [tmp_path / "soft.db", tmp_path / "hard.db", tmp_path / "sub" / ".." / "mine.db"]
    for spelling in spellings:
        assert main(["run", str(files["hello"]), "--db", str(db), "--events", str(spelling)]) == 2
        assert "is the same file as --db" in one_error(capsys)
    assert db.read_bytes() == SAMPLE_DB.read_bytes()


def test_two_outputs_naming_one_file_are_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "new.out"  # not there yet: the same path still counts
    assert main(["run", str(files["hello"]), "--report", str(out), "--events", str(out)]) == 2
    assert "are the same file: give each output its own" in one_error(capsys)
    assert not out.exists() and temporaries(tmp_path) == []


def test_an_output_inside_the_state_directory_is_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    argv = ["run", str(files["hello"]), "--state", str(state), "--report", str(state / "r.html")]
    assert main(argv) == 2
    assert f"is inside --state {state}" in one_error(capsys)
    assert list(state.iterdir()) == []


def test_a_new_disk_image_is_an_input_too(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    disk = tmp_path / "new.img"
    argv = ["run", str(files["hello"]), "--disk", str(disk), "--disk-size", "1"]
    assert main([*argv, "--screen", str(disk)]) == 2
    assert "is the same file as --disk" in one_error(capsys)
    assert not disk.exists()


@pytest.mark.parametrize("option", [*OUTPUT_OPTIONS, "--capture"])
def test_a_refused_run_leaves_an_existing_output_untouched(
    option: str, files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.html"
    notes.write_text("keep\n")
    argv = ["run", str(files["hello"]), "--db", str(tmp_path / "missing.db"), option, str(notes)]
    assert main(argv) == 2
    one_error(capsys)
    assert notes.read_text() == "keep\n"
    assert temporaries(tmp_path) == []


def test_unwritable_outputs_are_refused_before_the_guest_runs(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in OUTPUT_OPTIONS:
        for path, why in [(tmp_path / "no" / "x", "cannot write"), (tmp_path, "is a directory")]:
            assert main(["run", str(files["hello"]), option, str(path)]) == 2
            assert why in one_error(capsys)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: the check is the kernel's
        return
    assert main(["run", str(files["hello"]), "--report", str(locked / "r.html")]) == 2
    assert "Permission denied" in one_error(capsys)


def test_a_run_replaces_outputs_whole_keeping_their_mode_and_links(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report, screen = tmp_path / "r.html", tmp_path / "screen-target.txt"
    report.write_text("old report")
    report.chmod(0o600)
    screen.write_text("old screen")
    (tmp_path / "screen.txt").symlink_to(screen.name)
    argv = ["run", str(files["hello"]), "--report", str(report), "--screen",
            str(tmp_path / "screen.txt"), "--events", str(tmp_path / "e.json"), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out == "hello from the guest\n"
    assert report.read_text().startswith("<!DOCTYPE html>")
    assert report.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "screen.txt").is_symlink()  # the link stays; its target is the screen
    assert len(screen.read_text().splitlines()) == 25
    assert '"event":"halt"' in (tmp_path / "e.json").read_text()
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("source,code", [("mov rax, [0x7fff0000]", 1), ("again: jmp again", 3)])
def test_a_fault_or_a_timeout_still_writes_the_outputs(
    source: str, code: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "g.bin"
    image.write_bytes(assemble(source, mode=64, address=0x100000))
    events = tmp_path / "e.json"
    events.write_text("old\n")
    assert main(["run", str(image), "--timeout", "0.3", "--events", str(events)]) == code
    capsys.readouterr()
    ending = "fault" if code == 1 else "timeout"
    assert f'"event":"{ending}"' in events.read_text() and "old" not in events.read_text()


def test_devices_are_written_directly(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/null takes an output (twice over, even); /dev/full's error is one line."""
    argv = ["run", str(files["hello"]), "-q", "--events", os.devnull, "--report", os.devnull]
    assert main(argv) == 0
    capsys.readouterr()
    for option in OUTPUT_OPTIONS:
        assert main(["run", str(files["hello"]), "-q", option, "/dev/full"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "/dev/full: No space left on device" in err, err


def test_outputs_prepare_commit_and_discard(tmp_path: Path) -> None:
    """The module on its own: a temporary per output, renamed by commit, removed by discard."""
    kept, new = tmp_path / "kept.txt", tmp_path / "new.txt"
    kept.write_text("old")
    with Outputs.prepare([("--a", kept), ("--b", new), ("--c", None)], []) as outputs:
        assert outputs.path("--c") is None
        assert [p.name.startswith(".kept.txt.") for p in [outputs.path("--a")]] == [True]
        outputs.write_text("--a", "a", "fresh")
    assert kept.read_text() == "old" and not new.exists()  # never committed: discarded
    with Outputs.prepare([("--a", kept), ("--b", new)], []) as outputs:
        outputs.write_text("--a", "a", "fresh")
        outputs.commit()
    assert kept.read_text() == "fresh" and new.read_text() == ""
    assert temporaries(tmp_path) == []
    with pytest.raises(ConfigError, match="same file as --in"):
        Outputs.prepare([("--a", kept)], [("--in", kept)])


def test_a_failed_last_flush_is_an_error_never_a_short_file() -> None:
    """The last write of a report happens at close: its error must reach the caller (who then
    discards the temporary) whether or not the stream keeps errors."""
    plain = OutputText(os.open("/dev/full", os.O_WRONLY), "r.html", "the report")
    plain.write("<html>")
    with pytest.raises(OSError, match="No space left"):
        plain.close()
    kept = OutputText(os.open("/dev/full", os.O_WRONLY), "t.json", "the trace", keep_errors=True)
    kept.write("{}\n")
    with pytest.raises(HostError, match=r"cannot write the trace to t\.json: No space left"):
        kept.close()
