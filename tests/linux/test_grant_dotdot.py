"""``..`` of a granted directory's root (docs/ELF.md, "Files"): the grant's parent as the program
sees it, the sysroot's directory there, or without a sysroot a synthetic read-only directory;
never the host directory's own parent, never outside the grants and the sysroot (a Hypothesis
walk over paths of ``..`` and names); and Debian's ``ls -la`` on a granted directory as
natively (exit 0, ``..`` listed with its details)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hv_emu.linux.files import FileGrant, FileTable, SyscallError
from hv_emu.linux.numbers import O_RDONLY, R_OK, S_IFDIR, Errno

ROOT = Path(__file__).resolve().parents[2]


def _ino_mode(raw: bytes) -> tuple[int, int]:
    """(st_ino, st_mode) of an x86-64 ``struct stat``."""
    ino, _nlink, mode = struct.unpack_from("<QQI", raw, 8)
    return ino, mode


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """host/: a sysroot (etc/hostname) and, beside it, the granted directory dd/ (f1) and a
    secret/ file a walk must never reach."""
    (tmp_path / "sysroot" / "etc").mkdir(parents=True)
    (tmp_path / "sysroot" / "etc" / "hostname").write_text("guest\n")
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "f1").write_text("1\n")
    (tmp_path / "dd" / "sub").mkdir()
    (tmp_path / "secret").write_text("host only\n")
    return tmp_path


def test_dotdot_of_a_grant_is_the_sysroot_directory_there(tree: Path) -> None:
    table = FileTable([FileGrant.parse(f"/data/dd={tree / 'dd'}")], sysroot=tree / "sysroot")
    (tree / "sysroot" / "data").mkdir()
    for path in ("/data/dd/..", "/data/dd/sub/../..", "/data/./dd/../"):
        assert _ino_mode(table.stat(path, 64)) == _ino_mode(table.stat("/data", 64))
    assert _ino_mode(table.stat("/data", 64))[0] == os.stat(tree / "sysroot" / "data").st_ino
    assert table.stat("/data/dd/../dd/f1", 64) == table.stat("/data/dd/f1", 64)
    # Further up stays in the sysroot: its root's parent is its root, as in a chroot.
    assert _ino_mode(table.stat("/data/dd/../../..", 64))[0] == os.stat(tree / "sysroot").st_ino
    with pytest.raises(SyscallError) as refused:
        table.stat("/data/dd/../../secret", 64)
    assert refused.value.errno == Errno.ENOENT
    fd = table.open("/data/dd/..", O_RDONLY)
    assert table.directory_path(fd) == "/data"
    table.close_all()


def test_without_a_sysroot_dotdot_of_a_grant_is_a_synthetic_directory(tree: Path) -> None:
    table = FileTable([FileGrant.parse(f"dd={tree / 'dd'}")])
    ino, mode = _ino_mode(table.stat("dd/..", 64))
    assert (ino, mode) == (0, S_IFDIR | 0o555)
    table.access("dd/..", R_OK)
    with pytest.raises(SyscallError) as refused:
        table.stat("dd/../secret", 64)
    assert refused.value.errno == Errno.ENOENT
    assert table.stat("dd/../dd/f1", 64) == table.stat("dd/f1", 64)


_PARTS = st.sampled_from(["dd", "..", ".", "f1", "sub", "secret", "etc", "hostname", ""])


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PARTS, min_size=1, max_size=8), absolute=st.booleans())
def test_no_path_of_dotdots_reaches_outside_the_grant_and_the_sysroot(tree: Path,
                                                                      parts: list[str],
                                                                      absolute: bool) -> None:
    allowed = {os.stat(p).st_ino for base in (tree / "sysroot", tree / "dd")
               for p in [base, *base.rglob("*")]}  # fmt: skip
    table = FileTable([FileGrant.parse(f"/dd={tree / 'dd'}")], sysroot=tree / "sysroot")
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        ino, _ = _ino_mode(table.stat(path, 64))
    except SyscallError as refused:
        assert refused.errno in (Errno.ENOENT, Errno.ENOTDIR)
        return
    assert ino in allowed


@pytest.mark.skipif(not (Path("/lib64/ld-linux-x86-64.so.2").exists() and
                         Path("/usr/bin/ls").exists()),
                    reason="needs an x86-64 glibc system (Debian: libc6, coreutils)")  # fmt: skip
def test_ls_la_of_a_granted_directory_lists_dotdot_as_natively(tree: Path) -> None:
    native = subprocess.run(["/usr/bin/ls", "-la", "dd"], cwd=tree, capture_output=True,
                            env={}, check=False)  # fmt: skip
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    ours = subprocess.run([sys.executable, "-m", "hv_emu", "run", "-q", "/usr/bin/ls",
                           "--sysroot", "/", "--file", f"dd={tree / 'dd'}", "--", "-la", "dd"],
                          cwd=ROOT, capture_output=True, env=env, timeout=120,
                          check=False)  # fmt: skip
    assert (ours.returncode, ours.stderr) == (native.returncode, native.stderr) == (0, b"")
    names = [line.split()[-1] for line in ours.stdout.splitlines()[1:]]
    assert names == [line.split()[-1] for line in native.stdout.splitlines()[1:]]
    assert names == [b".", b"..", b"f1", b"sub"]
    assert b"?" not in ours.stdout
