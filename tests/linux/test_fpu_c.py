"""The x87 and SSE state a Linux program starts with (docs/ELF.md, docs/UNICORN.md U63), compared
with the same C program run natively: the control words as ``fnstcw``/``fnstsw``/``stmxcsr``
read them, a division by zero (masked: inf, no #MF), and long-double arithmetic whose precision
the x87 control word sets, once loaded with ``fldcw`` (libm does: with FCW = 0, 968 of 999
``sqrt`` results of an i386 program differed from native); x86-64 and i386 (gcc -m32)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.cli.main import main
from tests.rigs.linux import C_ABIS, build_c, run_native

FPU = r"""
#include <math.h>
#include <stdio.h>
int main(void) {
  unsigned short cw, sw;
  unsigned int mx;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  __asm__ volatile("fnstsw %0" : "=m"(sw));
  __asm__ volatile("stmxcsr %0" : "=m"(mx));
  printf("fcw=%#x fsw=%#x mxcsr=%#x\n", cw, sw, mx);
  volatile double z = 0;
  volatile long double one = 1.0L;
  printf("%g %g\n", 1.0 / z, -1.0 / z);
  printf("%.21Lg\n", one / 3);
  /* Load the control word the program started with, as libm's routines do around their work:
     its precision control now applies to every x87 operation. */
  __asm__ volatile("fldcw %0" : : "m"(cw));
  printf("%.21Lg\n", one / 3);
  for (int i = 1; i < 1000; i += 7) {
    volatile double x = i;
    volatile long double y = i;
    printf("%.17g %.21Lg\n", sqrt(x), sqrtl(y));
  }
  return 0;
}
"""


@pytest.mark.parametrize("flags", C_ABIS)
def test_fpu_start_state_and_arithmetic_match_native(tmp_path: Path, flags: tuple[str, ...],
                                                     capfdbinary: pytest.CaptureFixture[bytes],
                                                     ) -> None:  # fmt: skip
    program = build_c(tmp_path, "fpu", FPU, *flags, "-fno-math-errno")  # sqrt: fsqrt, sqrtsd
    status, native = run_native(program)
    assert status == 0 and native.startswith(b"fcw=0x37f fsw=0 mxcsr=0x1f80\ninf -inf\n")
    capfdbinary.readouterr()
    assert main(["run", str(program), "-q"]) == status
    assert capfdbinary.readouterr().out == native
