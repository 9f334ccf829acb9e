"""Ending a run from outside (hv_emu/vcpu/stopping.py): host waits cut short by the watchdog or
Ctrl-C, the watchdog's cut forgotten by the next run, Ctrl-C's kept; and a spinning guest that
``Vcpu.interrupt`` stops from another thread, whose later runs end at once too."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from hv_emu.errors import RunEnding
from hv_emu.exits import StopRequest, Timeout
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.stopping import INTERRUPTED, RunStop
from tests.conftest import boot_asm


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def test_a_wait_returns_when_there_is_something_to_read(pipe: tuple[int, int]) -> None:
    stop = RunStop()
    os.write(pipe[1], b"x")
    stop.wait_readable(pipe[0])
    assert os.read(pipe[0], 1) == b"x"


def test_a_cut_ends_a_wait_under_way_and_every_wait_until_rearmed(pipe: tuple[int, int]) -> None:
    stop = RunStop()
    ended: list[BaseException] = []

    def waiter() -> None:
        try:
            stop.wait_readable(pipe[0])
        except RunEnding as err:
            ended.append(err)

    thread = threading.Thread(target=waiter)
    thread.start()
    stop.cut()  # before or during the wait: either way it ends
    thread.join(timeout=120)
    assert not thread.is_alive() and len(ended) == 1
    with pytest.raises(RunEnding):
        stop.wait_readable(pipe[0])
    assert stop.rearm() is False  # a new run: the watchdog's cut is forgotten
    os.write(pipe[1], b"y")
    stop.wait_readable(pipe[0])  # waits again, and returns on data


def test_ctrl_c_is_sticky(pipe: tuple[int, int]) -> None:
    stop = RunStop()
    stop.interrupted.set()
    stop.cut()
    assert stop.rearm() is True
    os.write(pipe[1], b"z")
    with pytest.raises(RunEnding):
        stop.wait_readable(pipe[0])  # data or not, the machine's runs are over


def test_interrupt_stops_a_spinning_guest_and_every_later_run() -> None:
    machine = Machine(MachineConfig(timeout=600))
    timer = threading.Timer(0.2, machine.vcpu.interrupt)
    timer.start()
    _, result = boot_asm("again: jmp again", machine=machine)
    timer.join()
    assert isinstance(result.exit, StopRequest) and result.exit.reason == INTERRUPTED
    again = machine.vcpu.run(600)
    assert isinstance(again, StopRequest) and again.reason == INTERRUPTED


def test_a_watchdog_timeout_is_still_a_timeout() -> None:
    machine = Machine(MachineConfig(timeout=0.2))
    _, result = boot_asm("again: jmp again", machine=machine)
    assert isinstance(result.exit, Timeout)
