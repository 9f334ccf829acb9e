"""EFLAGS.TF written by a hook (docs/UNICORN.md U64), raw Unicorn: from the SYSCALL hook the
single-step #DB comes at once, before the instruction at the resumed RIP runs; from the
interrupt hook (``int 0x80``) it comes after one instruction, as after IRET on a real CPU."""

from __future__ import annotations

import unicorn
from unicorn import x86_const as X

from guest_tool.assemble import assemble

BASE = 0x1000
TF = 0x100


def _run(first: str, on_first: str) -> list[tuple[int, int]]:
    """Run ``first; nop; nop; nop; hlt``; the hook of ``first`` sets TF; return each interrupt's
    (vector, RIP); the #DB hook clears TF and stops."""
    code = assemble(f"{first}\n nop\n nop\n nop\n hlt", mode=64, address=BASE)
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(BASE, 0x1000)
    uc.mem_write(BASE, code)
    seen: list[tuple[int, int]] = []

    def set_tf(engine: unicorn.Uc, *_: object) -> None:
        engine.reg_write(X.UC_X86_REG_EFLAGS, engine.reg_read(X.UC_X86_REG_EFLAGS) | TF)

    def on_interrupt(engine: unicorn.Uc, vector: int, _: object) -> None:
        seen.append((vector, engine.reg_read(X.UC_X86_REG_RIP)))
        if vector == 1:
            assert engine.reg_read(X.UC_X86_REG_EFLAGS) & TF  # the #DB leaves TF set
            engine.reg_write(X.UC_X86_REG_EFLAGS, engine.reg_read(X.UC_X86_REG_EFLAGS) & ~TF)
            engine.emu_stop()
        elif on_first == "interrupt":
            set_tf(engine)

    uc.hook_add(unicorn.UC_HOOK_INTR, on_interrupt)
    if on_first == "syscall":
        uc.hook_add(unicorn.UC_HOOK_INSN, set_tf, None, 1, 0, X.UC_X86_INS_SYSCALL)
    uc.emu_start(BASE, BASE + len(code))
    return seen


def test_tf_from_the_syscall_hook_traps_before_the_next_instruction() -> None:
    assert _run("syscall", "syscall") == [(1, BASE + 2)]  # RIP: right after syscall, no nop run


def test_tf_from_the_interrupt_hook_traps_after_one_instruction() -> None:
    assert _run("int 0x80", "interrupt") == [(0x80, BASE + 2), (1, BASE + 3)]  # after one nop
