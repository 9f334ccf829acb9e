"""Single-stepping after a signal handler set EFLAGS.TF in its frame (docs/ELF.md "Signals",
docs/UNICORN.md U64), compared with the same C program run natively: a SIGILL handler skips the
ud2 and sets TF; the SIGTRAP that follows comes after exactly one instruction, with si_code
TRAP_TRACE, and a handler that keeps TF set steps one instruction per trap; x86-64 and i386."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.cli.main import main
from tests.rigs.linux import C_ABIS, build_c, run_native

STEP = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
extern char after_ud2[], next_insn[], steps_end[];
#ifdef __x86_64__
#define PC REG_RIP
#else
#define PC REG_EIP
#endif
static volatile int code = -1, traps, first_at_next, addr_is_pc;
static volatile long first_pc, last_pc;
static void on_ill(int sig, siginfo_t *si, void *ucv) {
  ucontext_t *uc = ucv;
  uc->uc_mcontext.gregs[PC] += 2;
  uc->uc_mcontext.gregs[REG_EFL] |= 0x100;
}
static void on_trap(int sig, siginfo_t *si, void *ucv) {
  ucontext_t *uc = ucv;
  long pc = uc->uc_mcontext.gregs[PC];
  if (traps++ == 0) {
    code = si->si_code;
    first_pc = pc;
    addr_is_pc = (long)si->si_addr == pc;
  }
  last_pc = pc;
  if (pc == (long)steps_end || traps > 50) uc->uc_mcontext.gregs[REG_EFL] &= ~0x100;
}
int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_flags = SA_SIGINFO;
  sa.sa_sigaction = on_ill;
  sigaction(SIGILL, &sa, 0);
  sa.sa_sigaction = on_trap;
  sigaction(SIGTRAP, &sa, 0);
  __asm__ volatile("ud2\n.globl after_ud2\nafter_ud2: nop\n.globl next_insn\nnext_insn: nop\n"
                   "nop\n xchg %%eax, %%eax\n lea 0(%%esi), %%esi\n nop\n"
                   ".globl steps_end\nsteps_end: nop\n" ::: "memory");
  printf("trap code=%d at %s, si_addr is the pc %d, %d traps to %s\n", code,
         first_pc == (long)next_insn ? "next_insn" :
         first_pc == (long)after_ud2 ? "after_ud2" : "elsewhere",
         addr_is_pc, traps, last_pc == (long)steps_end ? "steps_end" : "elsewhere");
  return 0;
}
"""


@pytest.mark.parametrize("flags", C_ABIS)
def test_tf_set_by_sigreturn_traps_after_each_instruction_as_native(
        tmp_path: Path, flags: tuple[str, ...], capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    program = build_c(tmp_path, "step", STEP, *flags)
    status, native = run_native(program)
    assert (status, native) == (0, b"trap code=2 at next_insn, si_addr is the pc 1, 6 traps to "
                                   b"steps_end\n")  # fmt: skip
    capfdbinary.readouterr()
    assert main(["run", str(program), "-q"]) == status
    assert capfdbinary.readouterr().out == native
