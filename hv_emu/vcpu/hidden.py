"""The hidden CPU state Unicorn's register API does not reach: segment caches, CPL, the shadow.

Models: the part of the VMCS guest-state area a VMM writes when it injects an event and the CPU
would load a new CS (and SS) from a gate: the hidden base, limit and access rights of a segment
register, the current privilege level, the interrupt shadow of STI / MOV SS (VT-x's
"interruptibility state") and the CPU's memory of the exception it is delivering. On a 64-bit
Unicorn engine a host write of CS or SS changes only the visible selector (docs/UNICORN.md U2),
so delivery edits the CPU state as a whole: ``context_save`` into one buffer, the fields changed
at their offsets in QEMU's ``CPUX86State``, ``context_restore`` (docs/UNICORN.md U39).

Follows: QEMU 5.0's ``CPUX86State`` layout as Unicorn 2.1.4 builds it (``regs``, ``eip``,
``eflags``, ``cc_*``, ``hflags``, ``segs[6]`` of ``{selector, base, limit, flags}``,
``old_exception``) and ``cpu_x86_load_seg_cache`` (how loading CS and SS updates ``hflags``:
CS32, SS32, CS64, CPL, ADDSEG). The offsets are checked once per process against a scratch
engine (a marker in RIP, a selector in CS, an IDTR base); ``old_exception`` is found and cleared
by ``exception_state.py``, the one place that knows it (docs/UNICORN.md U61). If any check fails,
or that field is unknown, ``HiddenState.usable`` is False and nothing is delivered.

Leaves out: the LDT, FS/GS caches (delivery never loads them), the descriptor-cache fields of
TR and GDTR (read through the register API), MPX's BNDCS (``cpu_sync_bndcs_hflags``).

Guest controls: every value written here comes from the guest's own IVT/IDT/GDT/TSS, already
checked by the delivery code (``ivt.py``, ``idt.py``); this module only stores it.
"""

from __future__ import annotations

import ctypes
import functools
import struct

import unicorn
from unicorn import x86_const as X

from hv_emu.vcpu.exception_state import forget_in_context, in_flight_offset

# QEMU 5.0 CPUX86State offsets (x86-64 build): regs[16] then eip, eflags, cc_dst, cc_src,
# cc_src2, cc_op, df, hflags, hflags2, segs[6] (24 bytes each: u32 selector, pad, u64 base,
# u32 limit, u32 flags), ldt, tr, gdt, idt; old_exception far below (exception_state.py).
_EIP = 128
_HFLAGS = 176
_SEGS = 184
_SEG_SIZE = 24
_U32 = struct.Struct("<I")
_SEGMENT = struct.Struct("<I4xQII")  # SegmentCache: selector, (padding), base, limit, flags
#: Segment register numbers as QEMU orders them, then the system tables that share the layout.
ES, CS, SS, DS, FS, GS, LDT, TR, GDT, IDT = range(10)

HF_CPL_MASK = 3
HF_INHIBIT_IRQ = 1 << 3
_HF_CS32 = 1 << 4
_HF_SS32 = 1 << 5
_HF_ADDSEG = 1 << 6
_HF_LMA = 1 << 14
_HF_CS64 = 1 << 15
DESC_B = 1 << 22
DESC_L = 1 << 21
CR0_PE = 1


def _env_offset(ctx: unicorn.UcContext) -> int:
    """Where ``CPUX86State`` starts inside a saved context: after the ``uc_context`` header,
    whose first field is the size of the CPU state that follows it."""
    address = ctx.context.value
    size = ctypes.c_size_t.from_address(address).value
    return int(ctx.size - size)


@functools.cache
def _layout_holds() -> bool:
    """Whether this Unicorn build keeps the fields where this module writes them."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    try:
        uc.mem_map(0, 0x10000)
        uc.reg_write(X.UC_X86_REG_RIP, 0x1122334455667788)
        uc.reg_write(X.UC_X86_REG_CS, 0x1234)
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0x8765_4321, 0x3FF, 0))
        ctx = uc.context_save()
        raw, env = bytes(ctx), _env_offset(ctx)
        if struct.unpack_from("<Q", raw, env + _EIP)[0] != 0x1122334455667788:
            return False
        if struct.unpack_from("<I", raw, env + _SEGS + CS * _SEG_SIZE)[0] != 0x1234:
            return False
        idtr = env + _SEGS + IDT * _SEG_SIZE + 8
        if struct.unpack_from("<QI", raw, idtr) != (0x8765_4321, 0x3FF):
            return False
        # Delivery must forget the exception it delivered (U61): no field, no delivery.
        return in_flight_offset() is not None
    except unicorn.UcError:
        return False


class HiddenState:
    """Read and edit one engine's hidden CPU state between two ``emu_start`` calls."""

    def __init__(self, uc: unicorn.Uc) -> None:
        self.uc = uc
        self.usable = _layout_holds()
        self._ctx = uc.context_save()
        self._env = _env_offset(self._ctx) if self.usable else 0
        address = int(self._ctx.context.value)
        self._address = address
        # One writable view of the saved state: fields are read and written with struct.
        self._view = memoryview((ctypes.c_char * self._ctx.size).from_address(address)).cast("B")

    # ------------------------------------------------------------------ a whole edit
    def load(self) -> None:
        """Take a fresh copy of the CPU state (after which the getters and setters act on it)."""
        self.uc.context_update(self._ctx)

    def store(self) -> None:
        """Give the edited copy back to the CPU."""
        self.uc.context_restore(self._ctx)

    # ------------------------------------------------------------------ fields
    @property
    def hflags(self) -> int:
        return int(_U32.unpack_from(self._view, self._env + _HFLAGS)[0])

    def set_hflags(self, value: int) -> None:
        _U32.pack_into(self._view, self._env + _HFLAGS, value & 0xFFFFFFFF)

    @property
    def cpl(self) -> int:
        return self.hflags & HF_CPL_MASK

    @property
    def interrupt_shadow(self) -> bool:
        """STI or MOV SS / POP SS was the last instruction: external interrupts wait one more."""
        return bool(self.hflags & HF_INHIBIT_IRQ)

    def clear_shadow(self) -> None:
        self.set_hflags(self.hflags & ~HF_INHIBIT_IRQ)

    def segment(self, seg: int) -> tuple[int, int, int, int]:
        """(selector, base, limit, flags) of segment register ``seg`` (ES, CS, SS...), or of
        the LDTR, TR, GDTR or IDTR."""
        selector, base, limit, flags = _SEGMENT.unpack_from(
            self._view, self._env + _SEGS + seg * _SEG_SIZE)
        return int(selector), int(base), int(limit), int(flags)

    def forget_exception(self) -> None:
        """The exception in progress has been delivered: the next one is not a double fault
        (QEMU resets ``old_exception`` in ``do_interrupt_all``, which Unicorn never runs): cleared
        in the copy being edited, by ``exception_state.py`` (docs/UNICORN.md U61)."""
        forget_in_context(self._address, self._ctx.size)

    def load_segment(self, seg: int, selector: int, base: int, limit: int, flags: int,
                     cr0: int, eflags: int) -> None:  # fmt: skip
        """Load segment register ``seg`` as ``cpu_x86_load_seg_cache`` does, hflags included."""
        _SEGMENT.pack_into(self._view, self._env + _SEGS + seg * _SEG_SIZE, selector & 0xFFFF,
                           base & 0xFFFFFFFFFFFFFFFF, limit & 0xFFFFFFFF, flags & 0xFFFFFFFF)
        hflags = self.hflags
        if seg == CS:
            if hflags & _HF_LMA and flags & DESC_L:
                hflags |= _HF_CS32 | _HF_SS32 | _HF_CS64
            else:
                hflags = (hflags & ~(_HF_CS32 | _HF_CS64)) | (_HF_CS32 if flags & DESC_B else 0)
        if seg == SS:
            hflags = (hflags & ~HF_CPL_MASK) | ((flags >> 13) & 3)
        ss_flags = self.segment(SS)[3]
        new = _HF_SS32 if ss_flags & DESC_B else 0
        # ADDSEG: segment bases must be added (none in 64-bit code, where they are taken as 0).
        flat = all(self.segment(seg)[1] == 0 for seg in (DS, ES, SS))
        legacy = not cr0 & CR0_PE or eflags & (1 << 17) or not hflags & _HF_CS32
        if not hflags & _HF_CS64 and (legacy or not flat):
            new |= _HF_ADDSEG
        self.set_hflags((hflags & ~(_HF_SS32 | _HF_ADDSEG)) | new)
