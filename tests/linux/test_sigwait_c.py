"""Waiting for signals in real C programs, compared with the same programs run natively (docs/ELF.md
"Signals"): sigsuspend runs the handler of a blocked, raised signal and returns -1/EINTR with the
mask from before it back; sigtimedwait takes a pending signal (its number, its siginfo) without
running the handler, and with a zero timeout and nothing pending is EAGAIN; sigqueue to itself
carries its value; x86-64 and i386 (gcc -m32)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.cli.main import main
from tests.rigs.linux import C_ABIS, build_c, gcc_can, run_native

SIGWAIT = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int handled, handled_code, blocked_in_handler;

static void on_usr(int sig, siginfo_t *info, void *uc) {
  sigset_t now;
  handled = sig;
  handled_code = info->si_code;
  sigprocmask(SIG_BLOCK, 0, &now);
  blocked_in_handler = sigismember(&now, SIGUSR1) * 10 + sigismember(&now, SIGUSR2);
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_usr;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGUSR1, &sa, 0);
  sigaction(SIGUSR2, &sa, 0);
  sigset_t usr1, empty, only2, now;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigemptyset(&empty);
  sigemptyset(&only2);
  sigaddset(&only2, SIGUSR2);
  sigprocmask(SIG_BLOCK, &usr1, 0);
  raise(SIGUSR1);
  printf("before: handled %d\n", handled);
  int r = sigsuspend(&only2);
  int e = errno;
  sigprocmask(SIG_BLOCK, 0, &now);
  printf("sigsuspend %d %s handled %d code %d in-handler usr1/usr2 %02d after usr1 %d\n", r,
         strerror(e), handled, handled_code, blocked_in_handler, sigismember(&now, SIGUSR1));

  handled = 0;
  raise(SIGUSR1);
  struct timespec zero = {0, 0};
  siginfo_t info;
  memset(&info, 0, sizeof info);
  r = sigtimedwait(&usr1, &info, &zero);
  printf("sigtimedwait %d signo %d code %d pid %d handled %d\n", r, info.si_signo, info.si_code,
         info.si_pid == getpid(), handled);
  r = sigtimedwait(&usr1, &info, &zero);
  e = errno;
  printf("again %d %s\n", r, strerror(e));
  struct timespec bad = {0, 1000000000};
  r = sigtimedwait(&usr1, &info, &bad);
  e = errno;
  printf("bad timeout %d %s\n", r, strerror(e));

  union sigval value = {.sival_int = 42};
  r = sigqueue(getpid(), SIGUSR1, value);
  memset(&info, 0, sizeof info);
  int got = sigwaitinfo(&usr1, &info);
  printf("sigqueue %d got %d code %d value %d\n", r, got, info.si_code, info.si_value.sival_int);
  return 0;
}
"""


@pytest.mark.parametrize("flags", C_ABIS)
def test_sigsuspend_sigtimedwait_and_sigqueue_match_native(
        tmp_path: Path, flags: tuple[str, ...], capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    program = build_c(tmp_path, "sigwait", SIGWAIT, *flags)
    status, native = run_native(program)
    assert status == 0
    assert b"sigsuspend -1 Interrupted system call handled 10" in native
    assert b"sigtimedwait 10 signo 10" in native and b"again -1 Resource temporarily" in native
    capfdbinary.readouterr()
    assert main(["run", str(program), "-q"]) == status
    assert capfdbinary.readouterr().out == native


WAIT_FOREVER = r"""
#include <signal.h>
#include <stdio.h>
int main(void) {
  sigset_t empty;
  sigemptyset(&empty);
  puts("waiting");
  fflush(stdout);
  return sigsuspend(&empty);
}
"""


@pytest.mark.skipif(not gcc_can(), reason="needs gcc and static glibc (Debian: gcc, libc6-dev)")
def test_a_wait_no_signal_can_end_stops_the_run(tmp_path: Path,
                                                capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    program = build_c(tmp_path, "forever", WAIT_FOREVER)
    capfdbinary.readouterr()
    status = main(["run", str(program)])
    out, err = capfdbinary.readouterr()
    assert out == b"waiting\n" and status == 4  # stopped, as `hv-emu run` says
    assert b"rt_sigsuspend: the program waits for a signal nothing will send" in err
