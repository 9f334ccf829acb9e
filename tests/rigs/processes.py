"""``hv-emu run`` as a child process of this worktree's code (``python -m hv_emu`` with the
checkout first on ``PYTHONPATH``), for tests that signal or kill it; the outputs' leftovers; and
a Linux program that blocks reading standard input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable

ROOT = Path(__file__).resolve().parents[2]
#: write(1, "r", 1), then read(0, buf, 64), then exit(7): it blocks in the read.
READER = """
 mov edi, 1
 lea rsi, [rip + msg]
 mov edx, 1
 mov eax, 1
 syscall
 sub rsp, 64
 xor edi, edi
 mov rsi, rsp
 mov edx, 64
 xor eax, eax
 syscall
 mov edi, 7
 mov eax, 231
 syscall
msg: .ascii "r"
"""
PATIENCE = 120.0  # seconds a bounded wait gives up after (a loaded machine, never a speed claim)


def temporaries(directory: Path) -> list[str]:
    """The outputs' temporaries (``.NAME.<16 hex>.tmp``) left in ``directory``."""
    return sorted(p.name for p in directory.rglob("*.tmp"))


def wait_for(condition: Callable[[], bool], patience: float = PATIENCE) -> bool:
    """Poll ``condition`` until it holds (True) or ``patience`` seconds passed (False)."""
    end = time.monotonic() + patience
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@contextmanager
def hv_emu_process(
    image: Path, *options: str, stdin: int | None = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """``hv-emu run IMAGE OPTIONS...`` with pipes for its standard output and error; killed if
    the test leaves the block while it still runs."""
    argv = [sys.executable, "-m", "hv_emu", "run", str(image), *options]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=PATIENCE)


def reader_program() -> bytes:
    """``READER`` as a static ELF executable."""
    return write_executable(assemble(READER, mode=64, address=code_address(64)), bits=64)


def write_reader(path: Path) -> Path:
    """``READER`` written to ``path``, for ``hv-emu run``."""
    path.write_bytes(reader_program())
    return path
