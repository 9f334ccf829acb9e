"""What event injection and an armed timer cost, against the exits and the runs they replace.

Rows, each per unit = (T(N) - T(0)) / N over whole runs of the same program (start-up and the HLT
cancel out), the median of five:

- a real-mode ``int 0x21`` delivered through the guest's IVT and returned from by its ``iret``
  (the interrupt hook, an ``emu_start`` boundary, the frame and CS written through the saved
  context), against the same ``int 0x21`` taken by a handler of the hypervisor's own (the exit
  every INT n was before, answered inside the hook);
- a 64-bit compute loop while the PIT's counter 0 is armed (each ``emu_start`` on an instruction
  budget up to the next deadline, docs/UNICORN.md U41), against the same loop with no timer;
- a 16-bit loop run with IF = 0 under hv-emu's BIOS, whose POST arms the PIT: once IRQ0 waits,
  the run loop looks at IF again after each window budget (docs/UNICORN.md U47), against the
  same loop with IF = 1 (IRQ0 taken by the BIOS's handler 18.2 times a guest second).
"""

from __future__ import annotations

from benchmarks.common import Row, median_of, seconds
from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import RESUME
from hv_emu.machine import Machine, MachineConfig

N = 20_000
INT_LOOP = """
    xor ax, ax
    mov ds, ax
    mov word ptr [0x21*4], handler
    mov word ptr [0x21*4+2], 0
    mov cx, {n}
    test cx, cx
    jz done
again:
    int 0x21
    loop again
done:
    hlt
handler:
    iret
"""
SPIN = N * 50
COMPUTE_LOOP = """
    mov al, 0xff
    out 0x21, al                # IRQ0 masked: the timer only sets the budget
    mov al, 0x34
    out 0x43, al
    xor al, al
    out 0x40, al
    out 0x40, al                # counter 0, mode 2, 65536: 18.2 Hz
    mov ecx, {n}
    test ecx, ecx
    jz done
again:
    add eax, ecx
    dec ecx
    jnz again
done:
    hlt
"""

#: Iterations of the 16-bit loop: 40M instructions, IRQ0 pending after the first 5.5M.
WINDOW_SPIN = 20_000_000
WINDOW_LOOP = """
    {flag}
    mov ecx, {n}
    test ecx, ecx
    jz done
again:
    dec ecx
    jnz again
done:
    cli
    hlt
"""


def _int_run(n: int, owned: bool) -> float:
    machine = Machine(MachineConfig(timeout=300))
    if owned:
        machine.interrupts[0x21] = lambda _exit: RESUME
    machine.load(assemble(INT_LOOP.format(n=n), mode=16, address=layout.DEFAULT_LOAD_REAL),
                 mode=16)  # fmt: skip
    return seconds(machine.run)


def _compute_run(n: int, timer: bool) -> float:
    source = COMPUTE_LOOP.format(n=n)
    if not timer:
        source = source.replace("out 0x40, al", "nop")
    machine = Machine(MachineConfig(timeout=300))
    machine.load(assemble(source, mode=64, address=layout.DEFAULT_LOAD))
    return seconds(machine.run)


def _window_run(n: int, flag: str) -> float:
    machine = Machine(MachineConfig(timeout=300))
    machine.load(assemble(WINDOW_LOOP.format(n=n, flag=flag), mode=16,
                          address=layout.DEFAULT_LOAD_REAL), mode=16)  # fmt: skip
    return seconds(machine.run)


def run() -> list[Row]:
    delivered = median_of(5, lambda: (_int_run(N, False) - _int_run(0, False)) / N * 1e6)
    owned = median_of(5, lambda: (_int_run(N, True) - _int_run(0, True)) / N * 1e6)
    armed = median_of(5, lambda: (_compute_run(SPIN, True) - _compute_run(0, True)) / SPIN * 1e9)
    idle = median_of(5, lambda: (_compute_run(SPIN, False) - _compute_run(0, False)) / SPIN * 1e9)
    def per_iteration(flag: str) -> float:
        return (_window_run(WINDOW_SPIN, flag) - _window_run(0, flag)) / WINDOW_SPIN * 1e9

    held = median_of(5, lambda: per_iteration("cli"))
    taken = median_of(5, lambda: per_iteration("sti"))
    return [
        Row("real-mode INT n delivered through the IVT, iret back", delivered, "µs",
            "INT n taken by a hypervisor handler (an exit)", owned),
        Row("loop iteration while the PIT is armed (instruction budget)", armed, "ns",
            "the same loop, no timer", idle),
        Row("16-bit loop iteration, IF = 0 while IRQ0 waits (interrupt window)", held, "ns",
            "the same loop, IF = 1 (IRQ0 taken)", taken),
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run():
        print(row.markdown())
