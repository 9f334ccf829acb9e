"""``--db`` names a file the user chose: a regular file or a link to one is read, at most
``MAX_DATABASE_BYTES + 1`` bytes of it; a FIFO, a device or a larger file is refused in one line,
and nothing blocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hv_emu.errors import ConfigError
from hv_emu.named_file import RefusedFile, read_named_file
from hv_emu.scanner import kinds
from hv_emu.scanner.signatures import load_database_file
from tests.rigs.named_files import bounded, fifo

NDB = b"Test.A:0:*:41424344\n"


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = fifo(tmp_path / "fifo.ndb")
    outcome = bounded(lambda: load_database_file(path), path)
    assert isinstance(outcome, ConfigError), outcome
    assert str(outcome) == f"{path}: cannot read signature database: not a regular file"


def test_a_link_to_a_device_is_refused_unread(tmp_path: Path) -> None:
    link = tmp_path / "z.ndb"
    link.symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_database_file(link)


def test_a_link_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.ndb").write_bytes(NDB)
    (tmp_path / "link.ndb").symlink_to("real.ndb")
    assert load_database_file(tmp_path / "link.ndb") == (NDB, "ndb")


def test_a_larger_file_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kinds, "MAX_DATABASE_BYTES", len(NDB))  # read by load_database_file
    path = tmp_path / "t.ndb"
    path.write_bytes(NDB)
    assert load_database_file(path) == (NDB, "ndb")
    path.write_bytes(NDB + b"\n")
    with pytest.raises(ConfigError, match=f"larger than {len(NDB)} bytes") as info:
        load_database_file(path)
    assert "\n" not in str(info.value)


def test_read_named_file_reads_at_most_one_byte_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    assert read_named_file(path, 10) == b"x" * 10
    with pytest.raises(RefusedFile, match="larger than 9 bytes"):
        read_named_file(path, 9)
    with pytest.raises(RefusedFile, match="not a regular file"):
        read_named_file(tmp_path, 9)
    with pytest.raises(FileNotFoundError):
        read_named_file(tmp_path / "missing", 9)
    assert os.path.exists(path)
