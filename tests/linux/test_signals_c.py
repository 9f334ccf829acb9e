"""Signals in real C programs (gcc -static, x86-64 and i386 where gcc -m32 works), compared with
the same programs run natively on this machine: handlers that siglongjmp out of SIGSEGV, SIGILL
and SIGFPE, sigaltstack, int3, raise and kill to itself, SA_RESETHAND, default actions and their
exit statuses; and a guest tool that finds hypervisor functions as BitVisor's
tools/common/call_vmm.c does (VMCALL, and VMMCALL when VMCALL raises SIGILL) under --cpu intel
and --cpu amd."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.cli.main import main
from tests.rigs.linux import C_ABIS, build_c, run_native

#: Faults caught and left with siglongjmp, three rounds; siginfo and ucontext checked against the
#: faulting instruction; the alternate stack; int3 handlers that return; raise() while blocked,
#: then unblocked; kill(getpid()); a handler raising its own signal with and without
#: SA_NODEFER; SA_RESETHAND, so the second SIGUSR2 kills (status 140).
SIGNALS = r"""
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile int got_sig, got_code, on_alt, traps, usr1;
static volatile uintptr_t got_addr, got_pc;
static char altstack[65536];

static void handler(int sig, siginfo_t *info, void *ucv) {
  ucontext_t *uc = ucv;
  char here;
  got_sig = info->si_signo;
  got_code = info->si_code;
  got_addr = (uintptr_t)info->si_addr;
#ifdef __x86_64__
  got_pc = uc->uc_mcontext.gregs[REG_RIP];
#else
  got_pc = uc->uc_mcontext.gregs[REG_EIP];
#endif
  on_alt = &here >= altstack && &here < altstack + sizeof altstack;
  siglongjmp(env, sig);
}

static void on_trap(int sig) { traps += sig == SIGTRAP; }
static volatile int trap_code = -1;
static void on_trap_info(int sig, siginfo_t *info, void *uc) {
  (void)uc;
  traps += sig;
  trap_code = info->si_code;
}
static void on_usr1(int sig) { usr1 += sig == SIGUSR1 || sig == SIGUSR2; }
static volatile int calls, depth, deepest;
static void nested(int sig) {
  depth++;
  deepest = depth > deepest ? depth : deepest;
  if (++calls < 2) raise(sig);  /* at once with SA_NODEFER, after the return without */
  depth--;
}
static int divide(volatile int a, volatile int b) { return a / b; }
extern char ud2_at[];

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = handler;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGILL, &sa, NULL);
  sigaction(SIGFPE, &sa, NULL);
  for (int round = 0; round < 3; round++) {
    if (sigsetjmp(env, 1) == 0) { volatile int *p = (int *)8; (void)*p; }
    printf("segv: sig=%d code=%d addr=%#lx\n", got_sig, got_code, (unsigned long)got_addr);
    if (sigsetjmp(env, 1) == 0) { asm volatile("ud2_at: ud2"); }
    printf("ill: sig=%d code=%d addr=%d pc=%d\n", got_sig, got_code,
           got_addr == (uintptr_t)ud2_at, got_pc == (uintptr_t)ud2_at);
    if (sigsetjmp(env, 1) == 0) { printf("%d\n", divide(7, 0)); }
    printf("fpe: sig=%d code=%d\n", got_sig, got_code);
  }
  static const char ro[] = "constant";
  if (sigsetjmp(env, 1) == 0) { *(volatile char *)ro = 'x'; }
  printf("read-only: sig=%d code=%d addr=%d\n", got_sig, got_code, got_addr == (uintptr_t)ro);
  sigset_t now;
  sigprocmask(SIG_BLOCK, NULL, &now);
  printf("mask restored by siglongjmp: %d\n", sigismember(&now, SIGSEGV));

  stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
  printf("sigaltstack=%d\n", sigaltstack(&ss, NULL));
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, NULL);
  if (sigsetjmp(env, 1) == 0) { volatile int *p = (int *)16; (void)*p; }
  printf("on the alternate stack: sig=%d on_alt=%d\n", got_sig, on_alt);
  stack_t cur;
  sigaltstack(NULL, &cur);
  printf("altstack flags=%d size=%d\n", cur.ss_flags, cur.ss_size == sizeof altstack);

  signal(SIGTRAP, on_trap);
  asm volatile("int3");
  asm volatile("int3");
  printf("traps=%d\n", traps);
  sa.sa_sigaction = on_trap_info;  /* an rt frame, returned from with rt_sigreturn */
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGTRAP, &sa, NULL);
  asm volatile("int3");
  printf("traps=%d code=%#x\n", traps, trap_code);

  signal(SIGUSR1, on_usr1);
  sigset_t set, old, pending;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, &old);
  raise(SIGUSR1);
  sigpending(&pending);
  printf("blocked: usr1=%d pending=%d\n", usr1, sigismember(&pending, SIGUSR1));
  sigprocmask(SIG_SETMASK, &old, NULL);
  printf("unblocked: usr1=%d\n", usr1);
  kill(getpid(), SIGUSR1);
  printf("kill: usr1=%d\n", usr1);
  signal(SIGCHLD, SIG_DFL);
  raise(SIGCHLD);
  printf("SIGCHLD ignored by default\n");

  sa.sa_handler = nested;
  for (int flags = 0; flags <= 1; flags++) {
    sa.sa_flags = flags ? SA_NODEFER : 0;
    sigaction(SIGHUP, &sa, NULL);
    calls = depth = deepest = 0;
    raise(SIGHUP);
    printf("nodefer=%d: calls=%d deepest=%d\n", flags, calls, deepest);
  }

  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESETHAND;
  sigaction(SIGUSR2, &sa, NULL);
  raise(SIGUSR2);
  printf("resethand: usr1=%d\n", usr1);
  fflush(stdout);
  raise(SIGUSR2);
  printf("not reached\n");
  return 0;
}
"""

#: Default actions: a fault with no handler, abort(), a signal sent to itself.
DEFAULTS = {
    "segv": 'int main(void) { puts("before"); fflush(stdout); return *(volatile int *)0; }',
    "abort": 'int main(void) { puts("aborting"); fflush(stdout); abort(); }',
    "term": 'int main(void) { puts("bye"); fflush(stdout); kill(getpid(), SIGTERM); return 3; }',
    "ignored": 'int main(void) { signal(SIGTERM, SIG_IGN); raise(SIGTERM); puts("alive"); }',
}
_HEADERS = "#include <signal.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n"

#: A guest tool written after BitVisor's tools/common/call_vmm.c: every hypercall attempt runs
#: with SIGILL and SIGSEGV caught (signal(), sigsetjmp/siglongjmp); VMCALL is tried first and, if
#: the CPU refuses it, VMMCALL; the instruction that worked is used for the function itself.
CALL_VMM = r"""
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

struct regs { long a, b, c, d, si, di; };
static sigjmp_buf recover;
static void refused(int sig) { (void)sig; siglongjmp(recover, 1); }

static void by_vmcall(struct regs *r) {
  asm volatile("vmcall" : "+a"(r->a), "+b"(r->b), "+c"(r->c), "+d"(r->d), "+S"(r->si),
               "+D"(r->di) : : "memory");
}
static void by_vmmcall(struct regs *r) {
  asm volatile("vmmcall" : "+a"(r->a), "+b"(r->b), "+c"(r->c), "+d"(r->d), "+S"(r->si),
               "+D"(r->di) : : "memory");
}

/* 0 if the instruction ran, 1 if the CPU refused it (SIGILL or SIGSEGV). */
static int attempt(void (*call)(struct regs *), struct regs *r) {
  void (*old_ill)(int) = signal(SIGILL, refused);
  void (*old_segv)(int) = signal(SIGSEGV, refused);
  volatile int failed = 0;
  if (sigsetjmp(recover, 1) == 0)
    call(r);
  else
    failed = 1;
  signal(SIGILL, old_ill);
  signal(SIGSEGV, old_segv);
  return failed;
}

int main(int argc, char **argv) {
  const char *name = argc > 1 ? argv[1] : "get_status";
  void (*how)(struct regs *) = by_vmcall;
  struct regs r = {0, (long)name};  /* get_vmmcall_number: RAX = 0, RBX = the name */
  if (attempt(by_vmcall, &r)) {
    how = by_vmmcall;
    r = (struct regs){0, (long)name};
    if (attempt(by_vmmcall, &r)) {
      puts("no hypervisor answers VMCALL or VMMCALL");
      return 2;
    }
  }
  printf("%s: %s is %ld\n", how == by_vmcall ? "vmcall" : "vmmcall", name, r.a);
  if (r.a == 0)
    return 1;
  static char text[1024];
  struct regs s = {r.a, (long)text, sizeof text - 1};
  if (attempt(how, &s))
    return 3;
  text[s.a == 0 ? s.c : 0] = 0;
  printf("rax=%ld, first line: %.*s\n", s.a, (int)strcspn(text, "\n"), text);
  return 0;
}
"""


def _hv_emu(capfd: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capfd.readouterr()
    status = main(["run", *map(str, argv)])
    out, err = capfd.readouterr()
    return status, out, err


@pytest.mark.parametrize("flags", C_ABIS)
def test_handlers_masks_and_the_alternate_stack_behave_as_natively(
    tmp_path: Path, flags: tuple[str, ...], capfd: pytest.CaptureFixture[str]
) -> None:
    program = build_c(tmp_path, "signals", SIGNALS, *flags)
    native_status, native_out = run_native(program)
    status, out, err = _hv_emu(capfd, program)
    assert native_status == 140  # killed by the second SIGUSR2
    assert (status, out) == (native_status, native_out.decode()), err
    assert "segv: sig=11 code=1 addr=0x8" in out and "traps=2" in out
    assert "nodefer=0: calls=2 deepest=1" in out and "nodefer=1: calls=2 deepest=2" in out
    assert "killed by SIGUSR2, exited with status 140" in err


@pytest.mark.parametrize("flags", C_ABIS)
@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_actions_end_with_the_status_a_shell_shows(
    tmp_path: Path, flags: tuple[str, ...], name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    program = build_c(tmp_path, name, _HEADERS + DEFAULTS[name] + "\n", *flags)
    native_status, native_out = run_native(program)
    status, out, err = _hv_emu(capfd, program)
    assert (status, out) == (native_status, native_out.decode()), err
    assert native_status == {"segv": 139, "abort": 134, "term": 143, "ignored": 0}[name]
    if name == "segv":  # a fault with no handler keeps its one-line report
        assert "hv-emu: guest fault: #PF at 0x0" in err


@pytest.mark.parametrize("flags", C_ABIS)
@pytest.mark.parametrize("cpu", ["intel", "amd"])
def test_bitvisor_call_vmm_falls_back_to_vmmcall_and_reaches_get_status(
    tmp_path: Path, flags: tuple[str, ...], cpu: str, capfd: pytest.CaptureFixture[str]
) -> None:
    program = build_c(tmp_path, "call_vmm", CALL_VMM, *flags)
    status, out, err = _hv_emu(capfd, program, "--cpu", cpu, "--events", tmp_path / "ev.jsonl")
    found = "vmcall" if cpu == "intel" else "vmmcall"
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0] == f"{found}: get_status is 1"
    assert lines[1].startswith("rax=0, first line: hv-emu ")
    status, out, err = _hv_emu(capfd, program, "--cpu", cpu, "--", "no_such_function")
    assert (status, out) == (1, f"{found}: no_such_function is 0\n"), err
