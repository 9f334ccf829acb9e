"""Shared pieces of the gdb stub's tests: a stub over a fresh machine, a register read through
the protocol, ``serve_gdb`` on a thread with a client connected, and the mark for tests that
need a real gdb."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
from collections.abc import Iterator

import pytest

from hv_emu.debug.gdbstub import REGISTERS, GdbStub, serve_gdb
from hv_emu.machine import Machine, MachineConfig, RunResult
from tests.rigs.processes import PATIENCE

LOAD = 0x100000  # where a flat test image is loaded and starts
NEEDS_GDB = pytest.mark.skipif(shutil.which("gdb") is None,
                               reason="gdb is not installed (apt-get install gdb)")


def stub_for(image: bytes, config: MachineConfig | None = None) -> GdbStub:
    """A gdb stub over a machine that has loaded ``image`` (a 10 s watchdog by default)."""
    machine = Machine(config or MachineConfig(timeout=10))
    machine.load(image)
    return GdbStub(machine)


def reg(stub: GdbStub, name: str) -> int:
    """Register ``name`` as gdb reads it (``p`` with its number in gdb's amd64 order)."""
    number = next(i for i, (n, _size, _r) in enumerate(REGISTERS) if n == name)
    return int.from_bytes(bytes.fromhex(stub.handle(b"p%x" % number).decode()), "little")


@contextlib.contextmanager
def served(image: bytes, timeout: float = 60,
           ) -> Iterator[tuple[socket.socket, list[RunResult], Machine]]:
    """``serve_gdb`` on a thread over a machine running ``image``, a client connected to it, the
    list the run's result lands in once the session is over, and the machine."""
    machine = Machine(MachineConfig(timeout=timeout))
    machine.load(image)
    ports: list[int] = []
    ready = threading.Event()
    result: list[RunResult] = []

    def announce(port: int) -> None:
        ports.append(port)
        ready.set()

    server = threading.Thread(target=lambda: result.append(serve_gdb(machine, 0,
                                                                     announce=announce)))
    server.start()
    assert ready.wait(PATIENCE)
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=PATIENCE) as conn:
        yield conn, result, machine
    server.join(PATIENCE)
    assert not server.is_alive()
