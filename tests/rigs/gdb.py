"""Shared pieces of the gdb stub's tests: a stub over a fresh machine, a register read through
the protocol, and the mark for tests that need a real gdb."""

from __future__ import annotations

import shutil

import pytest

from hv_emu.debug.gdbstub import REGISTERS, GdbStub
from hv_emu.machine import Machine, MachineConfig

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
