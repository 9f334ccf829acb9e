"""Signal frames: what Linux pushes on a program's stack to run a signal handler, and what
``rt_sigreturn``/``sigreturn`` read back.

Models: ``arch/x86/kernel/signal.c`` (``__setup_rt_frame``, ``__setup_frame``,
``restore_sigcontext``) for the three frames a static x86 program meets: the x86-64 rt frame, the
i386 rt frame (handlers installed with ``SA_SIGINFO``) and the i386 legacy frame (without it,
returned from with ``sigreturn``). Each holds a ``siginfo`` (signal, code, address or sender), a
``ucontext`` whose ``uc_mcontext`` is the interrupted registers in Linux's ``struct sigcontext``
order (so ``ucontext_t.uc_mcontext.gregs[REG_RIP]`` is the faulting RIP), the alternate-stack
settings, the signal mask to restore, and the return address the handler's ``ret`` pops (the
``sa_restorer``). docs/ELF.md "Signals" gives the offsets.

Follows: ``arch/x86/include/asm/sigframe.h`` and ``uapi/asm/sigcontext.h``, ``ucontext.h``,
``siginfo.h`` (union at 16 on x86-64, 12 on i386); frame placement from ``get_sigframe`` (the
128-byte red zone on x86-64, 16-byte alignment so that the handler starts as after a ``call``);
the restore keeps only the ``FIX_EFLAGS`` bits of the saved flags. Offsets measured against Linux
6.x with a ``SA_SIGINFO`` handler (uc - rsp = 8, info - uc = 304 on x86-64; info - esp = 16,
uc - esp = 144 on i386).

Leaves out: the FPU/SSE state: ``fpstate`` is NULL (``sigcontext.h``: "zero when no FPU
context") and ``UC_FP_XSTATE`` is clear, because the vCPU exit carries the general registers
only; a handler shares the interrupted code's x87/SSE registers. Segment registers are saved but
not restored (a static program never changes them in a handler; reloading GS would re-read the
GDT, docs/UNICORN.md U38).

Guest controls: every register value saved, and every byte ``sigreturn`` reads back (any 64-bit
value is accepted for a general register, as Linux does; flags are masked).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

#: ``ucontext.uc_flags`` without an FPU frame: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS.
UC_FLAGS_64 = 0x6
#: The flags a ``sigreturn`` takes from the frame (``FIX_EFLAGS``: AC OF DF TF SF ZF AF PF CF RF).
FIX_EFLAGS = 0x40000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x10000
#: Flags cleared for the handler: TF, DF, RF (``signal_setup_done``/``setup_rt_frame``).
HANDLER_CLEARS = 0x100 | 0x400 | 0x10000
#: Bit 1 of EFLAGS is always set; IF is on in user mode.
EFLAGS_DEFAULT = 0x202

#: ``struct sigcontext`` (x86-64) general registers, in order from ``uc_mcontext`` + 0.
GREGS_64 = ("r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rdi", "rsi", "rbp", "rbx",
            "rdx", "rax", "rcx", "rsp", "rip", "rflags")  # fmt: skip
#: ``struct sigcontext_32`` registers after gs, fs, es, ds (each 32 bits).
GREGS_32 = ("rdi", "rsi", "rbp", "rsp", "rbx", "rdx", "rcx", "rax")

SIGINFO_SIZE = 128
# x86-64 rt frame: pretcode, ucontext (uc_flags, uc_link, uc_stack[24], mcontext[256],
# uc_sigmask[8]), siginfo.
UC_64 = 8
MCONTEXT_64 = UC_64 + 40
SIGMASK_64 = UC_64 + 296
INFO_64 = UC_64 + 304
FRAME_64 = INFO_64 + SIGINFO_SIZE
# i386 rt frame: pretcode, sig, &info, &uc, siginfo, ucontext (uc_flags, uc_link, uc_stack[12],
# mcontext[88], uc_sigmask[8]), retcode[8].
INFO_32 = 16
UC_32 = INFO_32 + SIGINFO_SIZE
MCONTEXT_32 = UC_32 + 20
SIGMASK_32 = MCONTEXT_32 + 88
RETCODE_32 = SIGMASK_32 + 8
FRAME_32 = RETCODE_32 + 8
# i386 legacy frame: pretcode, sig, sigcontext[88], struct _fpstate_32 (624, unused),
# extramask[1], retcode[8].
SC_LEGACY = 8
EXTRAMASK_LEGACY = SC_LEGACY + 88 + 624
RETCODE_LEGACY = EXTRAMASK_LEGACY + 4
FRAME_LEGACY = RETCODE_LEGACY + 8
#: The i386 frames' retcode: ``movl $173, %eax; int $0x80`` and ``popl %eax; movl $119, %eax;
#: int $0x80``; used as the return address when a handler has no ``SA_RESTORER`` (no vDSO here).
RT_RETCODE = bytes.fromhex("b8ad000000cd8000")
LEGACY_RETCODE = bytes.fromhex("58b877000000cd80")


@dataclass(frozen=True)
class Interrupted:
    """The state a handler interrupts: registers (rax..r15, rip, rflags, selectors), and the
    exception's trap number, error code and CR2 (0 for a signal sent by ``kill``)."""

    registers: Mapping[str, int]
    trapno: int = 0
    err: int = 0
    cr2: int = 0

    def reg(self, name: str) -> int:
        return self.registers.get(name, EFLAGS_DEFAULT if name == "rflags" else 0)


@dataclass(frozen=True)
class AltStack:
    """``stack_t``: the alternate signal stack (``sigaltstack``)."""

    sp: int
    flags: int
    size: int

    def pack(self, bits: int) -> bytes:
        if bits == 64:
            return struct.pack("<QiiQ", self.sp, _s32(self.flags), 0, self.size)
        return struct.pack("<IiI", self.sp & 0xFFFFFFFF, _s32(self.flags), self.size & 0xFFFFFFFF)

    @classmethod
    def unpack(cls, raw: bytes, bits: int) -> AltStack:
        if bits == 64:
            sp, flags, _pad, size = struct.unpack("<QiiQ", raw[:24])
        else:
            sp, flags, size = struct.unpack("<IiI", raw[:12])
        return cls(sp, flags & 0xFFFFFFFF, size)


def stack_t_size(bits: int) -> int:
    return 24 if bits == 64 else 12


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def siginfo(bits: int, signo: int, code: int, *, addr: int | None = None, pid: int = 0,
            uid: int = 0) -> bytes:  # fmt: skip
    """A 128-byte ``siginfo_t``: si_signo, si_errno, si_code, then the union (at 16 on x86-64,
    12 on i386): ``si_addr`` for a fault, ``si_pid``/``si_uid`` for a sent signal."""
    head = struct.pack("<iii", signo, 0, code)
    union = 16 if bits == 64 else 12
    fault = addr is not None
    body = (addr or 0).to_bytes(bits // 8, "little") if fault else struct.pack("<iI", pid, uid)
    raw = head.ljust(union, b"\0") + body
    return raw.ljust(SIGINFO_SIZE, b"\0")


def frame_address(sp: int, size: int, bits: int) -> int:
    """Where a frame of ``size`` bytes goes below ``sp`` (already past the red zone and on the
    chosen stack): 16-byte aligned minus one word, as a ``call`` leaves the stack; the address
    wraps as the CPU's would."""
    if bits == 64:
        return (((sp - size) & ~0xF) - 8) & (2**64 - 1)
    return ((((sp - size) + 4) & ~0xF) - 4) & 0xFFFFFFFF


@dataclass(frozen=True)
class Frame:
    """A frame ready to be written at ``address`` and the registers that enter the handler."""

    address: int
    data: bytes
    entry: dict[str, int]


def _gregs_64(ctx: Interrupted, mask: int) -> bytes:
    regs = struct.pack("<18Q", *(ctx.reg(name) & (2**64 - 1) for name in GREGS_64))
    segs = struct.pack("<HHHH", ctx.reg("cs"), ctx.reg("gs"), ctx.reg("fs"), ctx.reg("ss"))
    tail = struct.pack("<QQQQQ", ctx.err, ctx.trapno, mask & 0xFFFFFFFF, ctx.cr2, 0)  # fpstate 0
    return (regs + segs + tail).ljust(256, b"\0")


def _sigcontext_32(ctx: Interrupted, mask: int) -> bytes:
    m = 0xFFFFFFFF
    head = struct.pack("<4I", *(ctx.reg(s) & 0xFFFF for s in ("gs", "fs", "es", "ds")))
    regs = struct.pack("<8I", *(ctx.reg(name) & m for name in GREGS_32))
    tail = struct.pack("<9I", ctx.trapno & m, ctx.err & m, ctx.reg("rip") & m,
                       ctx.reg("cs") & 0xFFFF, ctx.reg("rflags") & m, ctx.reg("rsp") & m,
                       ctx.reg("ss") & 0xFFFF, 0, mask & m)  # fmt: skip
    return head + regs + tail + struct.pack("<I", ctx.cr2 & m)


def build_frame(bits: int, *, sp: int, signo: int, info: bytes, ctx: Interrupted, mask: int,
                stack: AltStack, handler: int, restorer: int | None,
                rt: bool) -> Frame:  # fmt: skip
    """The frame for handler ``handler`` of ``signo`` below ``sp``: ``mask`` is the blocked set
    to restore; ``restorer`` the ``SA_RESTORER`` address (``None``: the frame's own retcode,
    i386 only); ``rt`` picks the rt frame (always on x86-64; ``SA_SIGINFO`` on i386)."""
    flags = (ctx.reg("rflags") & ~HANDLER_CLEARS) | 0x2
    if bits == 64:
        at = frame_address(sp, FRAME_64, 64)
        uc = struct.pack("<QQ", UC_FLAGS_64, 0) + stack.pack(64) + _gregs_64(ctx, mask)
        pretcode = (restorer or 0) & (2**64 - 1)
        data = struct.pack("<Q", pretcode) + uc + struct.pack("<Q", mask) + info
        entry = {"rdi": signo, "rsi": at + INFO_64, "rdx": at + UC_64, "rax": 0, "rsp": at,
                 "rip": handler, "rflags": flags}  # fmt: skip
        return Frame(at, data, entry)
    if rt:
        at = frame_address(sp, FRAME_32, 32)
        pretcode = restorer if restorer is not None else at + RETCODE_32
        head = struct.pack("<IiII", pretcode & 0xFFFFFFFF, signo, (at + INFO_32) & 0xFFFFFFFF,
                           (at + UC_32) & 0xFFFFFFFF)  # fmt: skip
        uc = struct.pack("<II", 0, 0) + stack.pack(32) + _sigcontext_32(ctx, mask)
        data = head + info + uc + struct.pack("<Q", mask) + RT_RETCODE
        entry = {"rax": signo, "rdx": at + INFO_32, "rcx": at + UC_32}
    else:
        at = frame_address(sp, FRAME_LEGACY, 32)
        pretcode = restorer if restorer is not None else at + RETCODE_LEGACY
        head = struct.pack("<Ii", pretcode & 0xFFFFFFFF, signo) + _sigcontext_32(ctx, mask)
        data = (head + bytes(624) + struct.pack("<I", (mask >> 32) & 0xFFFFFFFF)
                + LEGACY_RETCODE)  # fmt: skip
        entry = {"rax": signo, "rdx": 0, "rcx": 0}
    entry.update(rsp=at, rip=handler, rflags=flags)
    return Frame(at, data, entry)


@dataclass(frozen=True)
class Restored:
    """What a ``sigreturn`` reads back: the registers to resume with, the blocked mask, and the
    alternate-stack settings saved in the frame (``None`` in the legacy frame)."""

    registers: dict[str, int]
    mask: int
    stack: AltStack | None


def _flags(saved: int, current: int) -> int:
    return (current & ~FIX_EFLAGS) | (saved & FIX_EFLAGS) | 0x2


def frame_size(bits: int, rt: bool) -> int:
    """Bytes a ``sigreturn`` reads at the frame (from the pretcode slot)."""
    if bits == 64:
        return FRAME_64
    return FRAME_32 if rt else FRAME_LEGACY


def restore_frame(bits: int, raw: bytes, *, rt: bool, current_flags: int) -> Restored:
    """Parse a frame read back at its start address (``frame_size`` bytes)."""
    if bits == 64:
        values = struct.unpack_from("<18Q", raw, MCONTEXT_64)
        regs = dict(zip(GREGS_64, values, strict=True))
        regs["rflags"] = _flags(regs["rflags"], current_flags)
        mask = struct.unpack_from("<Q", raw, SIGMASK_64)[0]
        return Restored(regs, mask, AltStack.unpack(raw[UC_64 + 16 : UC_64 + 40], 64))
    base = MCONTEXT_32 if rt else SC_LEGACY
    values = struct.unpack_from("<8I", raw, base + 16)
    regs = dict(zip(GREGS_32, values, strict=True))
    eip, _cs, eflags = struct.unpack_from("<III", raw, base + 56)
    regs.update(rip=eip, rflags=_flags(eflags, current_flags))
    if rt:
        mask = struct.unpack_from("<Q", raw, SIGMASK_32)[0]
        return Restored(regs, mask, AltStack.unpack(raw[UC_32 + 8 : UC_32 + 20], 32))
    low = struct.unpack_from("<I", raw, base + 80)[0]
    high = struct.unpack_from("<I", raw, EXTRAMASK_LEGACY)[0]
    return Restored(regs, low | high << 32, None)
