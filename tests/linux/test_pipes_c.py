"""Writes that fail as on Linux (docs/ELF.md "Standard streams and failed writes"), compared with
the same programs run natively: a write to a standard output whose reader has gone sends SIGPIPE
(default: killed, status 141; ignored or blocked: -1/EPIPE; handled: the handler runs, then
-1/EPIPE); a write to a full device is ENOSPC, whether the device was granted with --file or is
hv-emu's own standard output. C programs for x86-64 and i386 (gcc -m32), and Debian's cat with
--sysroot /. Each hv-emu run is ``python -m hv_emu`` from this checkout, so its standard output
can be a real pipe or device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from tests.rigs.linux import C_ABIS, build_c

ROOT = Path(__file__).resolve().parents[2]


#: argv[1]: "d" the default SIGPIPE action, "i" ignored, "h" handled, "b" blocked; "f" writes one
#: byte to the file argv[2] names.
WRITER = r"""
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void on_pipe(int sig) { char m[] = "handler 13\n"; m[9] = '0' + sig % 10; write(2, m, 11); }
int main(int argc, char **argv) {
  char mode = argc > 1 ? argv[1][0] : 'd';
  if (mode == 'f') {
    int fd = open(argv[2], O_WRONLY);
    ssize_t n = write(fd, "x", 1);
    printf("open %d write %d %s\n", fd >= 0, (int)n, n < 0 ? strerror(errno) : "");
    return 0;
  }
  if (mode == 'i') signal(SIGPIPE, SIG_IGN);
  if (mode == 'h') signal(SIGPIPE, on_pipe);
  if (mode == 'b') {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigprocmask(SIG_BLOCK, &set, 0);
  }
  ssize_t n = write(1, "hello\n", 6);
  fprintf(stderr, "write %d %s\n", (int)n, n < 0 ? strerror(errno) : "");
  return 7;
}
"""


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _run(argv: list[str], stdout: int | IO[bytes], *, ours: bool) -> tuple[int, bytes]:
    """(status as a shell shows it, standard error) of ``argv`` natively or under hv-emu."""
    if ours:
        env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
        argv = [sys.executable, "-m", "hv_emu", "run", "-q", argv[0], "--", *argv[1:]]
    else:
        env = {}
    done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=ROOT,
                          timeout=120, check=False)  # fmt: skip
    return _status(done.returncode), done.stderr


def _into_broken_pipe(argv: list[str], *, ours: bool) -> tuple[int, bytes]:
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first write
    try:
        return _run(argv, writer, ours=ours)
    finally:
        os.close(writer)


@pytest.mark.parametrize("flags", C_ABIS)
@pytest.mark.parametrize(("mode", "expected"), [
    ("d", (141, b"")),
    ("i", (7, b"write -1 Broken pipe\n")),
    ("b", (7, b"write -1 Broken pipe\n")),
    ("h", (7, b"handler 13\nwrite -1 Broken pipe\n")),
])  # fmt: skip
def test_a_write_to_a_pipe_without_reader_is_sigpipe_as_native(
        tmp_path: Path, flags: tuple[str, ...], mode: str, expected: tuple[int, bytes]) -> None:
    program = str(build_c(tmp_path, "writer", WRITER, *flags))
    native = _into_broken_pipe([program, mode], ours=False)
    assert native == expected
    assert _into_broken_pipe([program, mode], ours=True) == native


@pytest.mark.parametrize("flags", C_ABIS)
def test_a_write_to_a_granted_full_device_is_enospc(tmp_path: Path,
                                                     flags: tuple[str, ...]) -> None:  # fmt: skip
    program = str(build_c(tmp_path, "writer", WRITER, *flags))
    native = subprocess.run([program, "f", "/dev/full"], capture_output=True, check=False)
    assert native.stdout == b"open 1 write -1 No space left on device\n"
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    ours = subprocess.run([sys.executable, "-m", "hv_emu", "run", "-q", program,
                           "--file", "/o=/dev/full:rw", "--", "f", "/o"],
                          capture_output=True, env=env, cwd=ROOT, timeout=120,
                          check=False)  # fmt: skip
    assert (ours.returncode, ours.stdout) == (native.returncode, native.stdout)


@pytest.mark.skipif(not Path("/lib64/ld-linux-x86-64.so.2").exists() or
                    not Path("/usr/bin/cat").exists(),
                    reason="needs an x86-64 glibc system (Debian: libc6, coreutils)")  # fmt: skip
def test_cat_into_a_full_standard_output_fails_as_native(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"some text\n" * 100)
    with open("/dev/full", "wb") as full:
        native = _run(["/usr/bin/cat", str(tmp_path / "in.txt")], full, ours=False)
    assert native == (1, b"/usr/bin/cat: write error: No space left on device\n")
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    with open("/dev/full", "wb") as full:
        ours = subprocess.run([sys.executable, "-m", "hv_emu", "run", "-q", "/usr/bin/cat",
                               "--sysroot", "/", "--file", f"/in.txt={tmp_path / 'in.txt'}",
                               "--", "/in.txt"], stdout=full, stderr=subprocess.PIPE, env=env,
                              cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert (ours.returncode, ours.stderr) == native
