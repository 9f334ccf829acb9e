"""A guest that programs the PIC and the PIT itself and counts IRQ0 ticks, waiting with HLT or
spinning: on hv-emu's virtual time, and against QEMU (the same debug-console output)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.programs import macro_prelude
from hv_emu import layout
from hv_emu.exits import Halt
from hv_emu.loaders.flat import default_load
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.platform import NS_PER_INSTRUCTION
from tests.rigs.bootsector import run_on_qemu
from tests.rigs.pic_guest import MASTER_BASE, remap_pics
from tests.rigs.qemu import EXIT_PORT, needs_qemu

TICK_VECTOR = MASTER_BASE  # IRQ0

#: Remap the PIC (vectors 0x20-0x2F, IRQ0 only unmasked), PIT counter 0 in mode 2 at 1 kHz,
#: IRQ0's IVT entry to ``tick``; then ``{wait}`` until ten ticks have been counted, printing a
#: digit per tick from the main loop.
TICKS = f"""
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000
    mov word ptr [{TICK_VECTOR}*4], tick
    mov word ptr [{TICK_VECTOR}*4+2], 0
{remap_pics(master_mask=0xFE, slave_mask=0xFF)}    mov al, 0x34
    out 0x43, al                # counter 0, LSB then MSB, mode 2
    mov al, 0xa9
    out 0x40, al
    mov al, 0x04
    out 0x40, al                # 0x04a9 = 1193: 1 kHz
    mov word ptr [count], 0
    mov bx, 0
    sti
wait:
    {{wait}}
    cmp [count], bx
    je wait
    mov bx, [count]
    mov al, bl
    add al, 0x30
    out 0xe9, al
    cmp bx, 9
    jb wait
    cli
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    hlt
tick:
    push ax
    inc word ptr [count]
    mov al, 0x20
    out 0x20, al                # EOI
    pop ax
    iret
count:
    .word 0
"""


def sector(wait: str) -> bytes:
    code = assemble(TICKS.replace("{wait}", wait), mode=16, address=layout.DEFAULT_LOAD_REAL,
                    prelude=macro_prelude(16))  # fmt: skip
    return code.ljust(510, b"\0") + b"\x55\xaa"


def run_hv(image: bytes) -> tuple[Machine, Halt]:
    machine = Machine(MachineConfig(timeout=20.0))
    machine.load(image, mode=16)
    result = machine.run()
    assert isinstance(result.exit, Halt), result.exit
    return machine, result.exit


def test_ticks_counted_with_hlt_skip_virtual_time_to_each_deadline() -> None:
    machine, _ = run_hv(sector("hlt"))
    assert machine.debugcon.text() == "123456789\n"
    assert machine.pit.edges >= 9
    # Nine periods of 1193 ticks at 1.193182 MHz: 9 ms of guest time, whatever the host did.
    assert 9_000_000 <= machine.clock.now() <= 9_100_000


def test_ticks_counted_while_spinning_come_from_the_instruction_budget() -> None:
    machine, _ = run_hv(sector("nop"))
    assert machine.debugcon.text() == "123456789\n"
    assert 9_000_000 <= machine.clock.now() <= 9_200_000


def test_the_same_guest_sees_the_same_time_in_every_run() -> None:
    first, _ = run_hv(sector("nop"))
    second, _ = run_hv(sector("nop"))
    assert first.clock.now() == second.clock.now()


@needs_qemu
def test_a_pit_tick_handler_counts_the_same_on_qemu(tmp_path: Path) -> None:
    image = sector("hlt")
    qemu = run_on_qemu(tmp_path, image)
    assert qemu.exit_value == 1, qemu
    machine, _ = run_hv(image)
    assert bytes(machine.debugcon.captured) == qemu.console == b"123456789\n"


def test_realtime_paces_the_ticks_by_the_host_clock() -> None:
    machine = Machine(MachineConfig(timeout=20.0, realtime=True))
    machine.load(sector("hlt"), mode=16)
    started = time.monotonic()
    result = machine.run()
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "123456789\n"
    assert time.monotonic() - started >= 0.009  # nine 1 ms periods of the host's clock


def test_hv_emu_run_realtime_from_the_command_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from hv_emu.cli.main import main

    image = tmp_path / "ticks.img"
    image.write_bytes(sector("hlt"))
    assert main(["run", "--mode", "16", "--realtime", "-q", str(image)]) == 0
    assert capsys.readouterr().out == "123456789\n"


def test_hlt_ends_the_run_when_nothing_can_wake_the_vcpu() -> None:
    """IF = 0, or IF = 1 with no timer armed and nothing pending: the run ends at the HLT.
    (A 16-bit run has the firmware, which arms the PIT as a PC BIOS does: the case with no timer
    armed is a 32-bit guest's.)"""
    for mode, source, charged in ((16, "cli\n hlt", 2), (32, "sti\n hlt", 0)):
        machine = Machine(MachineConfig(timeout=5.0))
        machine.load(assemble(source, mode=mode, address=default_load(mode)), mode=mode)
        start = machine.clock.now()  # the firmware's port writes at boot take guest time too
        assert isinstance(machine.run().exit, Halt)
        # The 16-bit run's PIT is armed: its two instructions are charged (docs/UNICORN.md U65);
        # with no timer armed (the 32-bit run) guest time stands still.
        assert machine.clock.now() == start + charged * NS_PER_INSTRUCTION


def test_a_masked_timer_does_not_keep_a_halted_guest_waiting() -> None:
    """The PIT armed but IRQ0 masked at the PIC: the HLT skips a bounded number of deadlines,
    then ends the run."""
    machine = Machine(MachineConfig(timeout=5.0))
    machine.load(assemble("""
        mov al, 0xff
        out 0x21, al
        mov al, 0x34
        out 0x43, al
        mov al, 0x10
        out 0x40, al
        out 0x40, al
        sti
        hlt
    """, mode=16, address=layout.DEFAULT_LOAD_REAL), mode=16)
    assert isinstance(machine.run().exit, Halt)
    assert machine.pit.edges >= 1


def test_an_interrupt_held_off_by_cli_arrives_after_sti_hlt_not_between_them() -> None:
    """IRQ0 becomes pending while IF = 0; ``sti; hlt`` must not lose the wake-up: the handler
    runs once the HLT is reached and IRET returns past it (the shadow itself: test_platform.py)."""
    machine = Machine(MachineConfig(timeout=10.0))
    machine.load(assemble("""
        cli
        xor ax, ax
        mov ds, ax
        mov word ptr [0x08*4], tick
        mov word ptr [0x08*4+2], 0
        mov al, 0x11
        out 0x20, al
        mov al, 0x08
        out 0x21, al
        mov al, 4
        out 0x21, al
        mov al, 1
        out 0x21, al
        mov al, 0xfe
        out 0x21, al
        mov al, 0x30
        out 0x43, al            # counter 0, mode 0
        mov al, 2
        out 0x40, al
        xor al, al
        out 0x40, al            # two input clocks: pending almost at once
        mov cx, 2000
    spin:
        loop spin               # IF = 0 all along: IRQ0 waits
        sti
        hlt
        mov al, 0x41
        out 0xe9, al
        cli
        hlt
    tick:
        mov al, 0x49
        out 0xe9, al
        mov al, 0x20
        out 0x20, al
        iret
    """, mode=16, address=layout.DEFAULT_LOAD_REAL), mode=16)
    assert isinstance(machine.run().exit, Halt)
    assert machine.debugcon.text() == "IA"
