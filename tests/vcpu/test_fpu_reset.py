"""The x87 and SSE control state a guest starts with (docs/UNICORN.md U63): what Unicorn's fresh
engine leaves (FCW = 0, MXCSR = 0) and what hv-emu's reset gives every flat guest instead, the
power-up values (FCW 0040H, MXCSR 1F80H, status 0, every tag empty)."""

from __future__ import annotations

import pytest
import unicorn
from unicorn import x86_const as X

from hv_emu.exits import Halt
from hv_emu.memory.boot import FCW_INIT
from hv_emu.vcpu.engine import FPTAG_EMPTY, MXCSR_RESET
from tests.conftest import Boot


@pytest.mark.parametrize("mode", [unicorn.UC_MODE_16, unicorn.UC_MODE_32, unicorn.UC_MODE_64])
def test_a_fresh_engine_starts_with_fcw_and_mxcsr_zero(mode: int) -> None:
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, mode)
    assert uc.reg_read(X.UC_X86_REG_FPCW) == 0  # every x87 exception unmasked, single precision
    assert uc.reg_read(X.UC_X86_REG_MXCSR) == 0  # every SIMD exception unmasked
    # The tag word is computed from the registers, none marked empty: 01b (zero) each.
    assert uc.reg_read(X.UC_X86_REG_FPTAG) == 0x5555
    uc.reg_write(X.UC_X86_REG_FPCW, 0x37F)
    uc.reg_write(X.UC_X86_REG_MXCSR, 0x1F80)
    uc.reg_write(X.UC_X86_REG_FPTAG, 0xFFFF)
    assert [uc.reg_read(r) for r in (X.UC_X86_REG_FPCW, X.UC_X86_REG_MXCSR,
                                     X.UC_X86_REG_FPTAG)] == [0x37F, 0x1F80, 0xFFFF]  # fmt: skip


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_every_flat_guest_starts_with_the_power_up_fpu_state(boot: Boot, mode: int) -> None:
    # The guest dirties the state first in the 64-bit run; the next reset must clean it again.
    machine, result = boot("fld1\n fld1\n hlt", mode=mode)
    assert isinstance(result.exit, Halt)
    uc = machine.vcpu.uc
    assert uc.reg_read(X.UC_X86_REG_FPTAG) != FPTAG_EMPTY  # two registers in use
    assert machine.boot is not None
    machine.vcpu.reset(machine.boot)
    assert uc.reg_read(X.UC_X86_REG_FPCW) == FCW_INIT == 0x40
    assert uc.reg_read(X.UC_X86_REG_MXCSR) == MXCSR_RESET == 0x1F80
    assert uc.reg_read(X.UC_X86_REG_FPSW) == 0
    assert uc.reg_read(X.UC_X86_REG_FPTAG) == FPTAG_EMPTY


def test_a_flat_guest_reads_the_power_up_control_word(boot: Boot) -> None:
    # (stmxcsr is #UD for a flat guest: its CR4.OSFXSR is clear.)
    machine, result = boot("sub rsp, 16\n fnstcw [rsp]\n movzx eax, word ptr [rsp]\n hlt")
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("rax") == 0x40
