"""The vCPU's fast register paths (raw C reads, batched reads, raw writes) against Unicorn's own
Python API, in every mode: what an exit reads must be what the CPU holds."""

from __future__ import annotations

import pytest
from unicorn import x86_const as X

from hv_emu.exits import Halt
from hv_emu.memory.walk import MSR_EFER
from hv_emu.vcpu import mode_of
from hv_emu.vcpu.engine import GENERAL, RegisterBatch
from tests.conftest import Boot

GUEST = {
    64: "mov rax, 0x1122334455667788\n mov rsi, -2\n mov r9, 0x99\n mov r15, 0xF15\n hlt",
    32: "mov eax, 0x11223344\n mov esi, 0xFFFFFFFE\n mov edi, 7\n hlt",
    16: "mov ax, 0x1122\n mov si, 0xFFFE\n mov di, 7\n hlt",
}
_IDS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in (*GENERAL, "cs", "rip")}


@pytest.mark.parametrize(("mode", "paging"), [(64, "none"), (32, "none"), (32, "pae"),
                                              (16, "none")])  # fmt: skip
def test_batched_and_single_reads_agree_with_unicorn(boot: Boot, mode: int, paging: str) -> None:
    machine, result = boot(GUEST[mode], mode=mode, paging=paging)
    assert isinstance(result.exit, Halt)
    vcpu, uc = machine.vcpu, machine.vcpu.uc
    state = vcpu.paging_state()
    assert (state.cr0, state.cr3, state.cr4, state.efer) == (
        uc.reg_read(X.UC_X86_REG_CR0), uc.reg_read(X.UC_X86_REG_CR3),
        uc.reg_read(X.UC_X86_REG_CR4), uc.msr_read(MSR_EFER),
    )  # fmt: skip
    assert mode_of(state) == mode and vcpu.efer() == state.efer
    mask = 2**64 - 1 if mode == 64 else 2**32 - 1
    assert vcpu.general_registers(mode) == {n: uc.reg_read(_IDS[n]) & mask for n in GENERAL}
    assert vcpu.general_registers(mode)["rsi"] == (mask if mode != 16 else 0xFFFF) - 1
    # A segment register among 64-bit ones, and EFER, in one batch; twice, so a slot reused
    # for a second read must still hold only the register's own bytes.
    batch = RegisterBatch(uc, ("rsi", "cs", "efer", "rip"))
    expected = [uc.reg_read(_IDS["rsi"]), uc.reg_read(_IDS["cs"]), uc.msr_read(MSR_EFER),
                uc.reg_read(_IDS["rip"])]  # fmt: skip
    assert batch.read() == expected and batch.read() == expected
    assert [vcpu.reg(n) for n in ("rsi", "cs", "rip")] == [expected[0], expected[1], expected[3]]


def test_raw_writes_land_as_unicorn_reads_them(boot: Boot) -> None:
    machine, _ = boot(GUEST[64])
    vcpu, uc = machine.vcpu, machine.vcpu.uc
    vcpu.set_reg("rbx", -1)  # masked to 64 bits, as the CPU holds it
    vcpu.set_reg("r12", 0x1234_5678_9ABC_DEF0)
    vcpu.set_reg("ds", 0x10)
    assert uc.reg_read(X.UC_X86_REG_RBX) == 2**64 - 1 and vcpu.reg("rbx") == 2**64 - 1
    assert uc.reg_read(X.UC_X86_REG_R12) == 0x1234_5678_9ABC_DEF0
    assert uc.reg_read(X.UC_X86_REG_DS) == 0x10 and vcpu.reg("ds") == 0x10
