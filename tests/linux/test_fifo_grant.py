"""A FIFO or socket granted with --file is refused (``EACCES``) without ever blocking hv-emu, for
reading and for writing; devices (``/dev/full``, ``/dev/zero``) and regular files still open, and
block again for their reads and writes (docs/ELF.md "Standard streams and failed writes")."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hv_emu.linux.files import FileGrant, FileTable, SyscallError
from hv_emu.linux.numbers import O_RDONLY, O_RDWR, O_WRONLY, Errno
from tests.rigs.linux import build_c, gcc_can

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("access", [O_RDONLY, O_WRONLY, O_RDWR])
def test_a_granted_fifo_is_refused_without_waiting_for_its_other_end(tmp_path: Path,
                                                                     access: int) -> None:
    os.mkfifo(tmp_path / "ff")
    table = FileTable([FileGrant.parse(f"/x={tmp_path / 'ff'}:rw")])
    with pytest.raises(SyscallError) as refused:
        table.open("/x", access)
    assert refused.value.errno == Errno.EACCES
    assert not any(table.is_open(fd) for fd in range(3, 8))


def test_a_granted_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        table = FileTable([FileGrant.parse(f"/s={path}")])
        with pytest.raises(SyscallError) as refused:
            table.open("/s", O_RDONLY)
    assert refused.value.errno == Errno.EACCES  # the host says ENXIO: no FIFO-like end here


def test_granted_devices_open_and_block_as_before() -> None:
    table = FileTable([FileGrant.parse("/z=/dev/zero"), FileGrant.parse("/o=/dev/full:rw")])
    zero = table.open("/z", O_RDONLY)
    assert table.read(zero, 5) == b"\0" * 5
    full = table.open("/o", O_WRONLY)
    with pytest.raises(SyscallError) as refused:
        table.write(full, b"x")
    assert refused.value.errno == Errno.ENOSPC
    table.close_all()


READER = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDONLY);
  printf("open %d %s\n", fd, fd < 0 ? strerror(errno) : "");
  return fd < 0 ? 2 : 0;
}
"""


@pytest.mark.skipif(not gcc_can(), reason="needs gcc and static glibc (Debian: gcc, libc6-dev)")
def test_a_program_opening_a_granted_fifo_ends_with_eacces(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "ff")
    program = build_c(tmp_path, "reader", READER)
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    # timeout= only keeps a regression from hanging the suite; the run itself never waits.
    done = subprocess.run([sys.executable, "-m", "hv_emu", "run", "-q", str(program),
                           "--timeout", "30", "--file", f"x={tmp_path / 'ff'}", "--", "x"],
                          capture_output=True, env=env, cwd=ROOT, timeout=120,
                          check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (2, b"open -1 Permission denied\n")
