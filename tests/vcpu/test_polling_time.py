"""Guest time while a guest polls: through BIOS calls (int 1Ah, each call an exit that ends
``emu_start`` early) and by reading the BIOS's tick word with no exit at all. Both reach the
timer's deadlines on hv-emu's virtual time, count the same ticks as on QEMU under SeaBIOS, and
see the same time in every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.devices.clock import GuestClock
from hv_emu.exits import Halt
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.platform import EXIT_INSTRUCTIONS, NS_PER_INSTRUCTION, Platform
from tests.rigs.bootsector import run_on_qemu
from tests.rigs.qemu import EXIT_PORT, needs_qemu

TICKS = 3
#: The end of both guests: AX (the ticks seen) as a digit and a newline, QEMU's exit, HLT.
REPORT = f"""
    add al, 0x30
    out 0xe9, al
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    cli
    hlt
"""
#: int 1Ah AH=00h (CX:DX = ticks since midnight) in a loop until DX moved by TICKS.
INT_1A = f"""
    sti
    mov ah, 0
    int 0x1a
    mov bx, dx
poll:
    mov ah, 0
    int 0x1a
    mov ax, dx
    sub ax, bx
    cmp ax, {TICKS}
    jb poll
{REPORT}"""
#: The BIOS data area's tick word (0040:006C) read in a busy loop: no exit, no HLT.
BDA = f"""
    sti
    xor ax, ax
    mov ds, ax
    mov bx, word ptr [0x46c]
poll:
    mov ax, word ptr [0x46c]
    sub ax, bx
    cmp ax, {TICKS}
    jb poll
{REPORT}"""


def sector(source: str) -> bytes:
    code = assemble(source, mode=16, address=layout.DEFAULT_LOAD_REAL)
    return code.ljust(510, b"\0") + b"\x55\xaa"


def run_hv(image: bytes) -> Machine:
    machine = Machine(MachineConfig(timeout=60.0))
    machine.load(image, mode=16)
    assert isinstance(machine.run().exit, Halt)
    return machine


@pytest.mark.parametrize("source", [INT_1A, BDA], ids=["int1a", "bda"])
def test_a_polling_guest_sees_its_ticks(source: str) -> None:
    machine = run_hv(sector(source))
    assert machine.debugcon.text() == f"{TICKS}\n"
    # The BIOS's count of IRQ0 ticks moved by at least TICKS (one may come at boot's end).
    assert machine.pit.edges >= TICKS
    period_ns = 65536 * 1_000_000_000 // 1_193_182
    assert machine.clock.now() >= TICKS * period_ns


def traced(image: bytes) -> list[str]:
    """The run's trace in guest terms: every exit and every injected event, each with the guest
    time it came at (host times left out: they differ from run to run)."""
    machine = Machine(MachineConfig(timeout=60.0))
    trace: list[str] = []
    machine.exit_observers.append(
        lambda exit_, outcome, _s: trace.append(f"{machine.clock.now()} {exit_!r} {outcome!r}"))
    machine.vcpu.injection_watchers.append(
        lambda inj, cs, rip: trace.append(f"{machine.clock.now()} {inj.events!r} {cs:#x}:{rip:#x}"))
    machine.load(image, mode=16)
    assert isinstance(machine.run().exit, Halt)
    return trace


def test_polling_through_bios_calls_gives_the_same_trace_in_every_run() -> None:
    first, second = traced(sector(INT_1A)), traced(sector(INT_1A))
    assert len(first) > 1000  # thousands of int 1Ah calls, each an injection and an exit
    assert first == second


@needs_qemu
@pytest.mark.parametrize("source", [INT_1A, BDA], ids=["int1a", "bda"])
def test_a_polling_guest_counts_the_same_on_qemu(tmp_path: Path, source: str) -> None:
    image = sector(source)
    qemu = run_on_qemu(tmp_path, image)
    assert qemu.exit_value == 1, qemu
    assert bytes(run_hv(image).debugcon.captured) == qemu.console == f"{TICKS}\n".encode()


def test_an_entry_charges_what_it_ran_and_an_early_exit_a_quantum_more() -> None:
    platform = Platform()
    platform.clock = clock = GuestClock()
    platform.charge_entry(None, early=True)  # no budget: no timer, time stands still
    assert clock.now() == 0
    platform.charge_entry(7, early=False)
    assert clock.now() == 7 * NS_PER_INSTRUCTION
    platform.charge_entry(7, early=True)
    assert clock.now() == (7 + 7 + EXIT_INSTRUCTIONS) * NS_PER_INSTRUCTION
