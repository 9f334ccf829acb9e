"""The round trip of a ``get_vmmcall_number`` hypercall, against bare Unicorn's floor.

A guest calls ``get_vmmcall_number("update_signatures")`` N times in a loop; the same loop without
the VMCALL is subtracted, leaving the cost of one VMCALL exit, the name lookup through the guest's
page tables, and the return. The peer is the floor any Unicorn-based VMM pays: a bare engine whose
invalid-instruction hook only moves RIP past the VMCALL, running the same loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import unicorn
from unicorn import x86_const as X

from benchmarks.common import Row, median_of, seconds
from guest_tool.assemble import assemble
from hv_emu.machine import Machine, MachineConfig

N = 5000
LOOP = """
    mov r15d, {n}
again:
    xor eax, eax
    lea rbx, [rip + name]
    {call}
    dec r15d
    jnz again
    hlt
name: .asciz "update_signatures"
"""


def _hv_emu(call: str, mode_paging: tuple[int, str]) -> float:
    mode, paging = mode_paging
    src = LOOP.format(n=N, call=call)
    if mode != 64:
        src = src.replace("r15d", "edi").replace("lea rbx, [rip + name]", "mov ebx, name")
    image = assemble(src, mode=mode, address=0x100000)
    machine = Machine(MachineConfig(timeout=120))
    machine.load(image, mode=mode, paging=paging)
    return seconds(machine.run)


def _bare(call: str) -> float:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 4 << 20)
    image = assemble(LOOP.format(n=N, call=call), mode=64, address=0x100000)
    uc.mem_write(0x100000, image)

    def skip(engine: unicorn.Uc, _ud: object) -> bool:
        engine.reg_write(X.UC_X86_REG_RIP, engine.reg_read(X.UC_X86_REG_RIP) + 3)
        return True

    uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, skip)
    timer = threading.Timer(120, uc.emu_stop)
    timer.start()
    try:
        return seconds(lambda: uc.emu_start(0x100000, 2**64 - 1))
    finally:
        timer.cancel()


def per_call_us(run: Callable[[str], float]) -> float:
    """Microseconds per VMCALL: the loop with it, less the same loop with three NOPs instead."""

    def one() -> float:
        return (run("vmcall") - run("nop\n nop\n nop")) / N * 1e6

    return median_of(3, one)


CONFIGURATIONS = (("64-bit, paging", 64, "none"), ("32-bit, no paging", 32, "none"))


def run() -> list[Row]:
    bare = per_call_us(_bare)
    rows = []
    for label, mode, paging in CONFIGURATIONS:
        ours = per_call_us(lambda call, m=mode, p=paging: _hv_emu(call, (m, p)))  # type: ignore[misc]
        rows.append(Row(f"get_vmmcall_number round trip ({label})", ours, "µs",
                        "bare Unicorn #UD hook, RIP += 3", bare))
    return rows
