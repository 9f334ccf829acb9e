"""Ending a run from outside (hv_emu/vcpu/stopping.py): host waits cut short by the watchdog or
a signal, the watchdog's cut forgotten by the next run, a signal's kept; a spinning guest that
``Vcpu.interrupt`` stops from another thread, whose later runs end at once too, naming the first
signal; and a stop that lands just before ``emu_start`` (lost by Unicorn, docs/UNICORN.md U74)
made again until the run ends."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest
import unicorn
from unicorn import x86_const

from guest_tool.assemble import assemble
from hv_emu.errors import RunEnding
from hv_emu.exits import StopRequest, Timeout
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.stopping import ENDINGS, INTERRUPTED, RunStop, ending_of
from tests.conftest import boot_asm
from tests.rigs.processes import PATIENCE


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


def test_the_first_signal_names_the_ending_and_each_has_its_status() -> None:
    machine = Machine(MachineConfig(timeout=600))
    timer = threading.Timer(0.2, machine.vcpu.interrupt, args=(signal.SIGTERM,))
    timer.start()
    _, result = boot_asm("again: jmp again", machine=machine)
    timer.join()
    machine.vcpu.interrupt(signal.SIGHUP)  # a later signal does not rename the ending
    again = machine.vcpu.run(600)
    for exit_ in (result.exit, again):
        assert isinstance(exit_, StopRequest) and exit_.reason == "terminated (SIGTERM)"
    assert {n: (e.reason, e.status) for n, e in ENDINGS.items()} == {
        signal.SIGINT: ("interrupted (Ctrl-C)", 130),
        signal.SIGTERM: ("terminated (SIGTERM)", 143),
        signal.SIGHUP: ("hung up (SIGHUP)", 129),
    }
    assert all(ending_of(e.reason) is e for e in ENDINGS.values())
    assert ending_of("breakpoint") is None


def test_a_stop_before_emu_start_is_lost() -> None:
    """U74: Unicorn forgets an emu_stop made before emu_start; only the budget ends this entry."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, assemble("again: inc rax\n jmp again", mode=64, address=0x1000))
    uc.emu_stop()
    uc.emu_start(0x1000, 2**64 - 1, count=1000)
    assert uc.reg_read(x86_const.UC_X86_REG_RAX) == 500  # every instruction of the budget ran


def test_a_watchdog_firing_just_before_the_entry_still_ends_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watchdog fires after the run loop looked at its flag and before ``emu_start``: its
    first ``emu_stop`` is lost (U74), the repeated one ends the tight loop, as a Timeout. A net
    stops the guest after ``PATIENCE`` seconds should the repeat be missing, and says so."""
    machine = Machine(MachineConfig(timeout=600))
    vcpu = machine.vcpu
    fired: list[bool] = []
    sync = vcpu.sync_platform

    def sync_then_fire() -> None:
        sync()
        if not fired:
            fired.append(vcpu._emulating)  # the window: not yet emulating
            vcpu._watchdog_fire()  # the Timer's own call, at the worst moment

    monkeypatch.setattr(vcpu, "sync_platform", sync_then_fire)
    done, net_used = threading.Event(), threading.Event()

    def net() -> None:
        if not done.wait(PATIENCE):
            net_used.set()
            while not done.wait(0.1):
                vcpu.uc.emu_stop()

    guard = threading.Thread(target=net, daemon=True)
    guard.start()
    try:
        _, result = boot_asm("again: jmp again", machine=machine)
    finally:
        done.set()
        guard.join()
    assert fired == [False]
    assert not net_used.is_set(), "only the safety net ended the run: the stop was lost"
    assert isinstance(result.exit, Timeout)
