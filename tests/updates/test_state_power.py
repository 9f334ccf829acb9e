"""Power cuts during a save: record every file-system operation ``StateDir.save`` makes, replay
each prefix of it on a model of a disk that forgets whatever was not fsynced, and load the result.

The model: a file's data is durable once the file is fsynced, a directory's entries (creations,
renames, removals) once the directory is fsynced; a power cut keeps at least the durable part and
at most everything done so far, in any mix of the two (a rename may reach the disk before the
data it names, as on ext4 with ``data=writeback``). After a cut at any point the directory must
load as the old state or the new one, and after ``save`` returned it must load as the new one.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hv_emu.updates.state import STATE_FILE, InstalledState, StateDir
from tests.rigs.updates import NEW_BODY, OLD_BODY, installed

OLD = installed(OLD_BODY, 3)
NEW = installed(NEW_BODY, 4)


@dataclass
class Recorder:
    """Wraps the ``os`` calls a save makes and logs those that change the directory."""

    ops: list[tuple[object, ...]] = field(default_factory=list)
    dir_fds: set[int] = field(default_factory=set)
    inode_of: dict[int, int] = field(default_factory=dict)  # fd -> model inode
    next_inode: int = 1000

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = {name: getattr(os, name) for name in
                ("open", "write", "fsync", "replace", "unlink", "close")}

        def open_(path: str, flags: int, *args: object, **kwargs: object) -> int:
            fd: int = real["open"](path, flags, *args, **kwargs)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                self.dir_fds.add(fd)
            elif flags & os.O_CREAT:
                self.next_inode += 1
                self.inode_of[fd] = self.next_inode
                self.ops.append(("create", os.fsdecode(path), self.next_inode))
            return fd

        def write(fd: int, data: bytes) -> int:
            written: int = real["write"](fd, data)
            if fd in self.inode_of:
                self.ops.append(("write", self.inode_of[fd], bytes(data[:written])))
            return written

        def fsync(fd: int) -> None:
            real["fsync"](fd)
            if fd in self.dir_fds:
                self.ops.append(("fsync_dir",))
            elif fd in self.inode_of:
                self.ops.append(("fsync_file", self.inode_of[fd]))

        def replace(src: str, dst: str, **kwargs: int) -> None:
            real["replace"](src, dst, **kwargs)
            self.ops.append(("replace", src, dst))

        def unlink(path: str, **kwargs: int) -> None:
            real["unlink"](path, **kwargs)
            self.ops.append(("unlink", path))

        def close(fd: int) -> None:
            self.dir_fds.discard(fd)
            self.inode_of.pop(fd, None)
            real["close"](fd)

        for name, fake in (("open", open_), ("write", write), ("fsync", fsync),
                           ("replace", replace), ("unlink", unlink), ("close", close)):
            monkeypatch.setattr(os, name, fake)


@dataclass
class Disk:
    """What is on the disk, and what of it would survive a power cut."""

    names: dict[str, int]
    data: dict[int, bytes]
    durable_names: dict[str, int]
    durable_data: dict[int, bytes]

    @classmethod
    def of(cls, directory: Path) -> Disk:
        names = {entry.name: n for n, entry in enumerate(sorted(directory.iterdir()))}
        data = {n: (directory / name).read_bytes() for name, n in names.items()}
        return cls(dict(names), dict(data), dict(names), dict(data))

    def apply(self, op: tuple[object, ...]) -> None:
        kind = op[0]
        if kind == "create":
            name, inode = str(op[1]), int(op[2])  # type: ignore[call-overload]
            self.names[name], self.data[inode] = inode, b""
        elif kind == "write":
            inode = int(op[1])  # type: ignore[call-overload]
            self.data[inode] += op[2]  # type: ignore[operator]
        elif kind == "fsync_file":
            inode = int(op[1])  # type: ignore[call-overload]
            self.durable_data[inode] = self.data[inode]
        elif kind == "fsync_dir":
            self.durable_names = dict(self.names)
        elif kind == "replace":
            self.names[str(op[2])] = self.names.pop(str(op[1]))
        elif kind == "unlink":
            del self.names[str(op[1])]

    def after_a_cut(self) -> list[dict[str, bytes]]:
        """The directories a power cut now may leave: entries as done or as durable, each file's
        data as written or as durable (a never-fsynced file comes back empty)."""
        views = []
        for names, data in itertools.product((self.names, self.durable_names),
                                             (self.data, self.durable_data)):
            views.append({name: data.get(inode, b"") for name, inode in names.items()})
        return views


def materialise(view: dict[str, bytes], where: Path) -> StateDir:
    where.mkdir()
    for name, data in view.items():
        (where / name).write_bytes(data)
    return StateDir(where)


def record_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                state: InstalledState, body: bytes) -> tuple[Disk, list[tuple[object, ...]]]:
    directory = StateDir(tmp_path / "state")
    directory.save(OLD, OLD_BODY)
    disk = Disk.of(directory.path)
    recorder = Recorder()
    with monkeypatch.context() as patch:
        recorder.install(patch)
        directory.save(state, body)
    return disk, recorder.ops


def cuts(disk: Disk, ops: list[tuple[object, ...]], tmp_path: Path,
         check: Callable[[int, StateDir], None]) -> int:
    """Replay every prefix of ``ops``; ``check(prefix_length, directory)`` each possible result."""
    checked = 0
    for prefix in range(len(ops) + 1):
        if prefix:
            disk.apply(ops[prefix - 1])
        for v, view in enumerate(disk.after_a_cut()):
            check(prefix, materialise(view, tmp_path / f"cut-{prefix}-{v}"))
            checked += 1
    return checked


@pytest.mark.parametrize("same_body", [False, True])
def test_a_power_cut_anywhere_leaves_the_old_state_or_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_body: bool
) -> None:
    new, body = (installed(OLD_BODY, 4), OLD_BODY) if same_body else (NEW, NEW_BODY)
    disk, ops = record_save(tmp_path, monkeypatch, new, body)
    commit = ops.index(next(op for op in ops if op[0] == "replace" and op[2] == STATE_FILE))
    durable = ops.index(("fsync_dir",), commit) + 1  # the directory fsync after the commit
    assert ("fsync_file", ops[commit - 1][1]) in ops[:commit]  # the state draft was fsynced

    def check(prefix: int, directory: StateDir) -> None:
        loaded = directory.load()  # never an error: a cut never leaves an inconsistent state
        expected = [(new, body)] if prefix >= durable else [(OLD, OLD_BODY), (new, body)]
        assert loaded in expected, f"after {ops[:prefix]}"

    assert cuts(disk, ops, tmp_path, check) == 4 * (len(ops) + 1)


def test_the_model_catches_a_save_that_skips_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test above is only as good as its model: without the fsync of the state draft, a
    # rename that reaches the disk before the data leaves an empty state.json (a load error).
    disk, ops = record_save(tmp_path, monkeypatch, NEW, NEW_BODY)
    sloppy = [op for op in ops if op[0] != "fsync_file"]
    failures = 0

    def check(prefix: int, directory: StateDir) -> None:
        nonlocal failures
        try:
            directory.load()
        except Exception:  # counting, not judging
            failures += 1

    cuts(disk, sloppy, tmp_path, check)
    assert failures
