"""What watching costs: a run under ``--trace`` against the same run untraced.

A guest makes N VMCALLs (``get_vmmcall_number``) and N port writes to the debug console in a
loop. The peer is the same machine without an exit observer; the row is the cost per exit with the
tracer formatting a line for every exit (written to an in-memory sink, so the terminal's speed is
not measured) and counting it for the summary.
"""

from __future__ import annotations

import io

from benchmarks.common import Row, median_of, seconds
from guest_tool.assemble import assemble
from hv_emu.debug.trace import ExitTracer
from hv_emu.machine import Machine, MachineConfig

N = 2000
LOOP = """
    mov r15d, {n}
    mov edx, 0xe9
again:
    xor eax, eax
    lea rbx, [rip + name]
    vmcall
    out dx, al
    dec r15d
    jnz again
    hlt
name: .asciz "update_signatures"
"""
EXITS = 2 * N + 1  # N VMCALLs, N OUTs, one HLT


def _run(traced: bool) -> float:
    machine = Machine(MachineConfig(timeout=120), console=io.BytesIO())
    if traced:
        sink = io.StringIO()
        machine.exit_observers.append(
            ExitTracer(machine.vcpu, machine.bus, machine.hypercalls, lines=sink))
    machine.load(assemble(LOOP.format(n=N), mode=64, address=0x100000))
    return seconds(machine.run)


def run() -> list[Row]:
    untraced = median_of(3, lambda: _run(False)) / EXITS * 1e6
    traced = median_of(3, lambda: _run(True)) / EXITS * 1e6
    return [Row("exit under --trace (VMCALL + OUT mix)", traced, "us/exit",
                "same exits untraced", untraced)]
