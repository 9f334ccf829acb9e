"""``hv-emu demo --workdir DIR``: a bad path is one line and exit status 2, only the last component
is created, and the demo never overwrites a file it did not write (``hv_emu/cli/demo/story.py``).

In-process (``hv_emu.cli.main.main``): the ``hv-emu`` on PATH may be another checkout's."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.cli.demo.story import DEMO_FILES
from hv_emu.cli.main import main


def demo(workdir: Path | str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["demo", "--workdir", str(workdir)])
    return status, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_file_is_not_a_workdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    status, err = demo(file, capsys)
    assert status == 2 and "not a directory" in one_line(err)
    assert file.read_text() == "mine"


def test_only_the_last_component_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = demo(tmp_path / "a" / "b", capsys)
    assert status == 2 and "only the last component" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_cannot_be_made_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    status, err = demo("/proc/hv-emu-demo", capsys)
    assert status == 2 and "cannot create it" in one_line(err)
    status, err = demo("/proc/nonexistent-pid/x", capsys)
    assert status == 2 and "is not a directory" in one_line(err)


def test_the_demo_never_overwrites_a_file_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "demo.key").write_text("the user's own key")
    status, err = demo(tmp_path, capsys)
    assert status == 2 and "already holds demo.key" in one_line(err)
    assert (tmp_path / "demo.key").read_text() == "the user's own key"
    assert [p.name for p in tmp_path.iterdir()] == ["demo.key"]


def test_a_new_directory_gets_exactly_the_demo_files_and_a_second_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("kept")
    assert main(["demo", "--workdir", str(work)]) == 0
    written = {p.name for p in work.iterdir()} - {"notes.txt"}
    assert written == set(DEMO_FILES)
    assert (work / "notes.txt").read_text() == "kept"
    capsys.readouterr()
    status, err = demo(work, capsys)
    assert status == 2 and "already holds demo.key, demo.pub" in one_line(err)
