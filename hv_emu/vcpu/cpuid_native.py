"""What Unicorn's own CPU answers to CPUID, asked once per leaf in a scratch engine.

Models: the host CPU's CPUID as a hypervisor sees it before filtering: KVM's
``KVM_GET_SUPPORTED_CPUID``, here the leaves of Unicorn's CPU model (a Haswell). ``cpuid.py``
builds the guest's table from these answers and overrides the leaves the hypervisor owns.

Follows: Intel SDM vol. 2A, CPUID (EAX selects the leaf, ECX the subleaf; the answer is in
EAX..EDX). docs/UNICORN.md U20: the model's native answers, asked once per leaf; its hypervisor
leaves are zeros, so ``cpuid.py`` answers those itself.

Leaves out: leaves that depend on the calling logical processor (APIC IDs are those of Unicorn's
single CPU).

Guest controls: the leaf and subleaf, for the leaves ``cpuid.py`` does not answer itself; they
are only register values in a scratch engine that never sees guest memory. Each distinct pair is
asked once and remembered.
"""

from __future__ import annotations

from functools import cache

import unicorn
from unicorn import x86_const as X


@cache
def native_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """EAX..EDX of Unicorn's own CPU model (a Haswell) for a leaf, run once in a scratch engine."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")  # cpuid
    uc.reg_write(X.UC_X86_REG_RAX, leaf)
    uc.reg_write(X.UC_X86_REG_RCX, subleaf)
    uc.emu_start(0, 2)
    eax, ebx, ecx, edx = (
        uc.reg_read(r) & 0xFFFFFFFF
        for r in (X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX)
    )
    return eax, ebx, ecx, edx
