"""``--trace`` names injected events in VT-x terms beside the exits: vector, interruption type,
error code, the interruption-information field, and what became of the event."""

from __future__ import annotations

import io
import json

from guest_tool.assemble import assemble
from hv_emu.debug.trace import INJECT, ExitTracer
from hv_emu.machine import Machine, MachineConfig

#: Real mode: INT 0x21 through the IVT, then a #DE, then a #GP from an INT beyond the IVT limit
#: whose entry 13 is empty: the #GP is refused (no handler) and the run ends.
GUEST = """
    xor ax, ax
    mov ds, ax
    mov word ptr [0x21*4], handler
    mov word ptr [0x21*4+2], 0
    mov word ptr [0], handler_de
    mov word ptr [2], 0
    int 0x21
    xor cx, cx
    div cl
    lidt [idtr]
    int 0x30
handler:
    iret
handler_de:
    mov bp, sp
    add word ptr [bp], 2
    iret
idtr:
    .word 0x3f
    .long 0
"""


def test_injected_events_are_lines_and_records_in_vt_x_terms() -> None:
    machine = Machine(MachineConfig(timeout=10), console=io.BytesIO())
    lines, records = io.StringIO(), io.StringIO()
    tracer = ExitTracer(machine.vcpu, machine.bus, machine.hypercalls, lines=lines,
                        records=records)  # fmt: skip
    machine.exit_observers.append(tracer)
    machine.load(assemble(GUEST, mode=16, address=0x7C00), mode=16)
    machine.run()
    injected = [json.loads(r) for r in records.getvalue().splitlines()
                if json.loads(r)["reason"] == INJECT]  # fmt: skip
    assert [(r["registers"]["vector"], r["registers"]["type"]) for r in injected] == [
        (0x21, 4), (0x00, 3), (0x30, 4), (0x0D, 3)]
    int21, de, int30, gp = injected
    assert int21["registers"]["info"] == 0x80000421
    assert int21["action"].startswith("software interrupt delivered -> 0000:7c")
    assert "error_code" not in int21["registers"] and "error_code" not in de["registers"]
    assert de["instruction"].startswith("div cl")
    assert int30["action"] == "software interrupt: faulted"
    assert gp["registers"]["error_code"] == 0x30 * 8 + 2
    assert gp["registers"]["info"] == 0x80000B0D  # valid, error code valid, type 3, vector 13
    assert gp["action"].startswith("refused: #GP while delivering vector 0x30")
    text = [line for line in lines.getvalue().splitlines() if f" {INJECT} " in line]
    assert len(text) == 4 and "vector=0xd type=0x3 info=0x80000b0d error_code=0x182" in text[3]
    assert INJECT not in tracer.summary()
