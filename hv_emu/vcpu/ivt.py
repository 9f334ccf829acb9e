"""Real-mode delivery: an interrupt or exception through the interrupt vector table.

Models: what an 8086-compatible CPU does with an interrupt in real mode: read the vector's
4-byte entry (offset word, then segment word) at IDTR.base + 4n, push FLAGS, CS and IP on the
stack (SS:SP, wrapping at 64 KiB), clear IF, TF, AC and RF, and continue at the entry's
segment:offset. IRET (run natively by Unicorn, docs/UNICORN.md U43) pops them back.

Follows: Intel SDM vol. 3A 20.1.4 ("Interrupt and Exception Handling" in real-address mode) and
QEMU's ``do_interrupt_real`` (the limit check 4n+3 <= IDTR.limit, else #GP). docs/UNICORN.md
U18 (the CPU gives us the vector only), U39 (CS is loaded through the hidden state; a fresh
engine's IDTR limit of 0 stands for the reset value 0xFFFF).

Leaves out: the A20 gate (addresses wrap at 1 MiB only through SP's 64 KiB wrap), virtual-8086
mode, big real mode's 32-bit ESP (only SP is used, as in QEMU).

Guest controls: the IVT, SS:SP and FLAGS. An entry of 0000:0000 is "no handler" (``usable``):
today's one-line report rather than a jump to address 0. A stack outside RAM is a refusal.
"""

from __future__ import annotations

from hv_emu.vcpu.engine import Engine
from hv_emu.vcpu.hidden import CS, IDT, SS, HiddenState
from hv_emu.vcpu.injection import (
    AC,
    GENERAL_PROTECTION,
    IF,
    RF,
    TF,
    Attempt,
    Delivered,
    Event,
    Refused,
    hardware_exception,
    selector_error,
)

#: The IDTR limit a real CPU resets to; Unicorn's fresh engine holds 0 (docs/UNICORN.md U39).
RESET_LIMIT = 0xFFFF


def _table(hidden: HiddenState) -> tuple[int, int]:
    _sel, base, limit, _flags = hidden.segment(IDT)
    return base, limit or RESET_LIMIT


def entry(cpu: Engine, hidden: HiddenState, vector: int) -> int | None:
    """The IVT entry of ``vector`` as segment << 16 | offset, or ``None`` beyond the limit or
    outside RAM."""
    base, limit = _table(hidden)
    at = base + 4 * vector
    if 4 * vector + 3 > limit or not cpu.mem.contains(at, 4):
        return None
    return cpu.mem.read_u32(at)


def usable(cpu: Engine, hidden: HiddenState, vector: int) -> bool:
    """Whether the CPU would do something with ``vector``: an entry that is not 0000:0000, or
    one beyond the IDTR limit (a #GP)."""
    _base, limit = _table(hidden)
    return 4 * vector + 3 > limit or bool(entry(cpu, hidden, vector))


def deliver(cpu: Engine, hidden: HiddenState, event: Event) -> Attempt:
    """Deliver ``event`` through the IVT; the hidden state has been loaded (``load``) and is
    stored by the caller."""
    vector = event.vector
    found = entry(cpu, hidden, vector)
    if found is None:
        base, limit = _table(hidden)
        if 4 * vector + 3 > limit:
            error = selector_error(vector, idt=True, external=event.external)
            return hardware_exception(GENERAL_PROTECTION, error)
        return Refused(f"IVT entry {vector:#x} at {base + 4 * vector:#x} is outside RAM")
    ss_base = hidden.segment(SS)[1]
    sp = cpu.reg("rsp")
    flags = cpu.reg("rflags")
    cs = hidden.segment(CS)[0]
    ip = cpu.reg("rip") & 0xFFFF
    frame = []
    for value in (flags, cs, ip):
        sp = (sp - 2) & 0xFFFF
        frame.append((ss_base + sp, value & 0xFFFF))
    for at, _value in frame:
        if not cpu.mem.contains(at, 2):
            return Refused(f"real-mode stack at {at:#x} is outside RAM")
    for at, value in frame:
        cpu.uc.mem_write(at, value.to_bytes(2, "little"))
    new_cs, new_ip = found >> 16, found & 0xFFFF
    cpu.set_reg("rsp", (cpu.reg("rsp") & ~0xFFFF) | sp)
    cpu.set_reg("rflags", flags & ~(IF | TF | AC | RF))
    cpu.set_reg("rip", new_ip)
    hidden.load()
    _sel, _base, limit, cs_flags = hidden.segment(CS)
    hidden.load_segment(CS, new_cs, new_cs << 4, limit, cs_flags, cpu.reg("cr0"),
                        flags & ~(IF | TF | AC | RF))  # fmt: skip
    return Delivered(new_cs, new_ip)
