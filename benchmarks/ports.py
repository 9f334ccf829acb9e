"""What one port exit costs, against a bare Unicorn IN/OUT hook measured in the same run.

A 64-bit guest runs ``out 0x80, al`` (or ``in al, dx`` with DX = 0x80) N times in a loop; port 0x80
belongs to no device, so hv-emu answers it on the bus (all ones for the IN, the access counted).
Each figure is per unit = (T(N) - T(0)) / N, where T is the time of the whole run of the same
program with N and with 0 iterations, so machine start-up and the HLT exit cancel out. The peer is
a bare Unicorn engine whose IN hook returns 0xFF and whose OUT hook does nothing, running the very
same code: the floor any Unicorn-based VMM pays for a port exit handled in Python.
"""

from __future__ import annotations

import threading

import unicorn
from unicorn import x86_const as X

from benchmarks.common import Row, median_of, seconds
from guest_tool.assemble import assemble
from hv_emu.machine import Machine, MachineConfig

N = 100_000
LOOP = """
    mov r15d, {n}
    mov edx, 0x80
    test r15d, r15d
    jz done
again:
    {insn}
    dec r15d
    jnz again
done:
    hlt
"""
INSNS = (("out 0x80, al", "out 0x80, al"), ("in al, dx (unassigned port)", "in al, dx"))


def _image(insn: str, n: int) -> bytes:
    return assemble(LOOP.format(n=n, insn=insn), mode=64, address=0x100000)


def _hv_emu(insn: str, n: int) -> float:
    machine = Machine(MachineConfig(timeout=120))
    machine.load(_image(insn, n))
    return seconds(machine.run)


def _bare(insn: str, n: int) -> float:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 4 << 20)
    uc.mem_write(0x100000, _image(insn, n))

    def on_in(_uc: unicorn.Uc, _port: int, _size: int, _ud: object) -> int:
        return 0xFF

    def on_out(_uc: unicorn.Uc, _port: int, _size: int, _value: int, _ud: object) -> None:
        return None

    uc.hook_add(unicorn.UC_HOOK_INSN, on_in, None, 1, 0, X.UC_X86_INS_IN)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.reg_write(X.UC_X86_REG_RSP, 0x80000)
    timer = threading.Timer(120, uc.emu_stop)
    timer.start()
    try:
        return seconds(lambda: uc.emu_start(0x100000, 2**64 - 1))
    finally:
        timer.cancel()


def per_unit_ns(run: object, insn: str) -> float:
    """Nanoseconds per port exit: (T(N) - T(0)) / N, the median of five."""
    assert callable(run)
    return median_of(5, lambda: (run(insn, N) - run(insn, 0)) / N * 1e9)


def run() -> list[Row]:
    rows = []
    for label, insn in INSNS:
        bare = per_unit_ns(_bare, insn)
        ours = per_unit_ns(_hv_emu, insn)
        rows.append(Row(f"port exit, {label}", ours, "ns", "bare Unicorn IN/OUT hook", bare))
    return rows


if __name__ == "__main__":
    for row in run():
        print(row.markdown())
