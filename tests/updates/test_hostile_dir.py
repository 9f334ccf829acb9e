"""hv_emu/hostile_dir.py on its own: what a planted entry gets (the state directory and the cache
both rely on it; their own tests cover their policies)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hv_emu.hostile_dir import RefusedEntry, create_exclusive, read_regular, temporary_name


@pytest.fixture
def dir_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_a_regular_file_is_read_whole(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "a").write_bytes(b"x" * 3_000_000)
    assert read_regular(dir_fd, "a", 3_000_000) == b"x" * 3_000_000


def test_a_link_a_fifo_a_directory_and_a_big_file_are_refused_unread(
    tmp_path: Path, dir_fd: int
) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")  # opened non-blocking: no writer never means a hang
    (tmp_path / "dir").mkdir()
    (tmp_path / "big").write_bytes(bytes(11))
    with pytest.raises(OSError) as link:
        read_regular(dir_fd, "link")
    assert link.value.errno == errno.ELOOP
    with pytest.raises(RefusedEntry, match="not a regular file"):
        read_regular(dir_fd, "fifo")
    with pytest.raises((RefusedEntry, IsADirectoryError)):
        read_regular(dir_fd, "dir")
    with pytest.raises(RefusedEntry, match="larger than 10 bytes"):
        read_regular(dir_fd, "big", 10)
    with pytest.raises(FileNotFoundError):
        read_regular(dir_fd, "missing")


def test_private_means_unreadable_by_others(tmp_path: Path, dir_fd: int) -> None:
    (tmp_path / "s").write_bytes(b"k")
    os.chmod(tmp_path / "s", 0o644)
    with pytest.raises(RefusedEntry, match="readable by others"):
        read_regular(dir_fd, "s", private=True)
    os.chmod(tmp_path / "s", 0o600)
    assert read_regular(dir_fd, "s", private=True) == b"k"


def test_creation_never_goes_through_a_planted_entry(tmp_path: Path, dir_fd: int) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (tmp_path / "planted").symlink_to(outside)
    with pytest.raises(FileExistsError):
        create_exclusive(dir_fd, "planted", b"data", 0o600)
    assert outside.read_bytes() == b"keep"
    create_exclusive(dir_fd, "fresh", b"data", 0o600, durable=True)
    assert (tmp_path / "fresh").read_bytes() == b"data"
    assert (tmp_path / "fresh").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_leaves_nothing(
    tmp_path: Path, dir_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        create_exclusive(dir_fd, "half", b"data", 0o600)
    monkeypatch.undo()
    assert not (tmp_path / "half").exists()


def test_temporary_names_do_not_repeat() -> None:
    names = {temporary_name("state.json") for _ in range(1000)}
    assert len(names) == 1000
    assert all(n.startswith("state.json.") and n.endswith(".tmp") for n in names)
