"""The CPUID leaves the hypervisor answers itself.

Models: how a VMM presents itself to a guest through CPUID: the "hypervisor present" bit (leaf 1,
ECX bit 31) and the hypervisor leaves from 0x40000000, whose EBX:ECX:EDX hold a 12-byte vendor
signature that guests use to find out which hypervisor they run on (as KVM's "KVMKVMKVM\\0\\0\\0");
and the CPU vendor string of leaf 0 (EBX, EDX, ECX: "GenuineIntel" or "AuthenticAMD", ``hv-emu
run --cpu``), which tells a guest whether its hypercall is VMCALL or VMMCALL.

Follows: Intel SDM vol. 2A, CPUID (leaf 1 ECX bit 31 is reserved for hypervisor use); the de-facto
hypervisor CPUID interface (leaf 0x40000000: EAX = highest hypervisor leaf, EBX/ECX/EDX =
signature) shared by KVM, Hyper-V, Xen and VMware. Every other leaf is the CPU model's own answer.

Leaves out: masking features the emulator cannot honour (Unicorn's Haswell model is passed through);
the rest of an AMD CPU's identity under ``--cpu amd`` (leaf 0x80000000's vendor string, AMD family
numbers, the SVM feature bit): only leaf 0 says AMD, the other leaves stay the Haswell's.

Guest controls: EAX (leaf) and ECX (sub-leaf); both are only table keys.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

Registers = tuple[int, int, int, int]
NativeCpuid = Callable[[int, int], Registers]

#: The 12-byte vendor signature of leaf 0x40000000, NUL-padded (EBX, ECX, EDX in that order).
HYPERVISOR_SIGNATURE = b"hv-emu\0\0\0\0\0\0"
HYPERVISOR_BASE_LEAF = 0x40000000
#: Leaf 0x40000001: EAX = version of the hypercall ABI in docs/ABI.md.
ABI_VERSION = 2
#: Leaf 1 ECX bit 31: "running under a hypervisor".
HYPERVISOR_PRESENT = 1 << 31
#: Leaf 0's 12-byte vendor string for each CPU vendor (``hv-emu run --cpu``), as the CPU returns
#: it in EBX, EDX, ECX (in that order, unlike the hypervisor signature).
CPU_VENDOR_IDS = {"intel": b"GenuineIntel", "amd": b"AuthenticAMD"}


def _signature_registers() -> tuple[int, int, int]:
    ebx, ecx, edx = struct.unpack("<III", HYPERVISOR_SIGNATURE)
    return ebx, ecx, edx


class CpuidTable:
    """Answers CPUID: the vendor string, the hypervisor leaves from this table, the rest from the
    CPU model."""

    def __init__(self, native: NativeCpuid, hypercall_slots: int, vendor: str = "intel") -> None:
        ebx, ecx, edx = _signature_registers()
        self._leaves: dict[int, Registers] = {
            HYPERVISOR_BASE_LEAF: (HYPERVISOR_BASE_LEAF + 1, ebx, ecx, edx),
            HYPERVISOR_BASE_LEAF + 1: (ABI_VERSION, hypercall_slots, 0, 0),
        }
        eax, ebx1, ecx1, edx1 = native(1, 0)
        self._leaves[1] = (eax, ebx1, ecx1 | HYPERVISOR_PRESENT, edx1)
        self._max_basic_leaf = native(0, 0)[0]
        self.set_vendor(vendor)

    def set_vendor(self, vendor: str) -> None:
        """Leaf 0 as a CPU of ``vendor`` ("intel" or "amd") answers it: the highest basic leaf
        (the CPU model's) and the vendor string in EBX, EDX, ECX."""
        ident = CPU_VENDOR_IDS.get(vendor)
        if ident is None:
            raise ValueError(f"unknown CPU vendor {vendor!r} (one of {', '.join(CPU_VENDOR_IDS)})")
        ebx, edx, ecx = struct.unpack("<III", ident)
        self._leaves[0] = (self._max_basic_leaf, ebx, ecx, edx)

    @property
    def features(self) -> Registers:
        """Leaf 1 as the guest sees it (what Linux passes as AT_HWCAP is its EDX)."""
        return self._leaves[1]

    def lookup(self, leaf: int, subleaf: int) -> Registers | None:
        """EAX..EDX for ``leaf``/``subleaf``, or ``None``: let the CPU model answer natively.

        Only the leaves this table overrides are computed here; every other leaf runs as the
        native instruction, so a guest walking all 2**64 leaf/sub-leaf pairs costs the host
        nothing (no per-pair cache, no scratch engine)."""
        known = self._leaves.get(leaf)
        if known is not None:
            return known
        if HYPERVISOR_BASE_LEAF <= leaf <= 0x4FFFFFFF:
            return (0, 0, 0, 0)  # hypervisor range beyond our highest leaf: all zero
        return None
