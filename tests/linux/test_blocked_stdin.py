"""A Linux program blocked reading standard input (a pipe nobody writes) is ended by the watchdog
and by a signal, Ctrl-C, SIGTERM or SIGHUP (``Vcpu.interrupt``), like any guest: nothing it wrote
before is lost, no read returns, and data that arrives is read as before (hv_emu/linux/streams.py,
vcpu/stopping.py)."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from hv_emu.events import EventLog
from hv_emu.exits import StopRequest, Timeout
from hv_emu.linux.files import FileTable
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.stopping import ENDINGS
from tests.rigs.processes import reader_program


@pytest.fixture
def stdin() -> Iterator[tuple[io.BufferedReader, int]]:
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as reader:
        yield reader, write_end
    os.close(write_end)


def _run(stdin: io.BufferedReader, timeout: float, interrupt_after: float | None = None,
         signum: int = signal.SIGINT) -> tuple[Machine, bytes]:  # fmt: skip
    out = io.BytesIO()
    files = FileTable(stdin=stdin, stdout=out, stderr=io.BytesIO())
    machine = Machine(MachineConfig(timeout=timeout), events=EventLog())
    machine.load_elf(reader_program(), argv=["reader"], files=files)
    timer = None
    if interrupt_after is not None:
        timer = threading.Timer(interrupt_after, machine.vcpu.interrupt, args=(signum,))
        timer.start()
    machine.run()
    if timer is not None:
        timer.join()
    machine.close()
    return machine, out.getvalue()


def test_the_watchdog_ends_a_blocked_read(stdin: tuple[io.BufferedReader, int]) -> None:
    machine, out = _run(stdin[0], timeout=0.3)
    assert out == b"r"
    assert [e["event"] for e in machine.events.records] == ["timeout"]
    assert machine.linux is not None and machine.linux.exit_status is None


@pytest.mark.parametrize("signum", sorted(ENDINGS))
def test_a_signal_ends_a_blocked_read(stdin: tuple[io.BufferedReader, int], signum: int) -> None:
    machine, out = _run(stdin[0], timeout=600, interrupt_after=0.3, signum=signum)
    assert out == b"r"
    (stop,) = machine.events.of("stop")
    assert stop["reason"] == ENDINGS[signum].reason
    assert machine.linux is not None and machine.linux.exit_status is None


def test_data_that_arrives_is_read(stdin: tuple[io.BufferedReader, int]) -> None:
    os.write(stdin[1], b"typed\n")
    machine, out = _run(stdin[0], timeout=600)
    assert out == b"r"
    assert machine.linux is not None and machine.linux.exit_status == 7
    assert isinstance(machine.events.of("stop")[0]["reason"], str)


def test_the_exits_are_the_usual_ones(stdin: tuple[io.BufferedReader, int]) -> None:
    machine = Machine(MachineConfig(timeout=0.3), events=EventLog())
    machine.load_elf(reader_program(), argv=["reader"],
                     files=FileTable(stdin=stdin[0], stdout=io.BytesIO()))  # fmt: skip
    assert isinstance(machine.run().exit, Timeout)
    machine.vcpu.interrupt()
    assert isinstance(machine.vcpu.run(600), StopRequest)
    machine.close()
