"""The event a trap raised, and the error code Unicorn does not give.

Models: what the CPU knows when it raises an event and Unicorn's interrupt hook does not say:
its type in VT-x's terms (the bytes before RIP tell a software ``INT n``, ``INT3``, ``INTO`` or
``INT1`` from a CPU exception of the same vector: INT 0x10 is also #MF's vector 16), and the error
code the CPU computes when it raises #PF, #GP, #NP, #SS or #TS. Unicorn keeps
it in ``env->error_code`` and does not expose it (docs/UNICORN.md U18), so the hypervisor works
it out again from what it can see. A #PF's code comes from the guest's page walk of CR2: P
(0 = the page is not present, 1 = a protection violation), W/R (the access was a write), U/S
(the access came from CPL 3), RSVD (a reserved bit was set) and I/D (an instruction fetch, only
reported with PAE + EFER.NXE, as the SDM says). A selector fault's code is the selector of a
``mov Sreg, r16`` or ``pop Sreg`` that loaded it, low two bits cleared.

Follows: Intel SDM vol. 3A 4.7 (page-fault error code), 6.13 (error codes) and 6.15 (interrupt
14: CR2); Linux ``arch/x86/include/asm/trap_pf.h`` (bit names); QEMU's ``helper_load_seg``
(``selector & 0xfffc``). docs/UNICORN.md U40 (the approximations below).

Leaves out, as approximations (docs/UNICORN.md U40): the W/R bit of a fault on a page that is
not present is read from the instruction (capstone's operand access, and push/call/stos/movs/
enter as stack or string writes), so an instruction that both reads and writes memory is taken
as a write; every other #GP (privileged instructions, limits, non-canonical addresses...)
pushes 0, which is what the CPU pushes for most of them; protection keys, SGX and shadow
stacks are not modelled.

Guest controls: CR2, the page tables and the faulting bytes; the walk is bounded and any
decoding failure gives the conservative code (0, or a read).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import cache

import capstone
from capstone import x86_const as C

from hv_emu.errors import GuestFault, PageFault
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import NOT_PRESENT, RESERVED_BIT, PagingState, translate
from hv_emu.vcpu.disasm import MAX_INSN
from hv_emu.vcpu.injection import ERROR_CODE_VECTORS, Event, EventType, hardware_exception

PF_PRESENT = 1
PF_WRITE = 2
PF_USER = 4
PF_RSVD = 8
PF_FETCH = 16
_EFER_NXE = 1 << 11
_CR4_PAE = 1 << 5
_CS_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
_LOCK = threading.Lock()  # capstone handles are not thread-safe (docs/UNICORN.md U33)
_SEGMENT_REGS = {C.X86_REG_DS, C.X86_REG_ES, C.X86_REG_SS, C.X86_REG_FS, C.X86_REG_GS}
_WRITES_MEMORY = ("push", "call", "enter", "stos", "movs", "pushf", "pusha")


@cache
def _engine(mode: int) -> capstone.Cs:
    engine = capstone.Cs(capstone.CS_ARCH_X86, _CS_MODES[mode])
    engine.detail = True
    return engine


def _decode(code: bytes, mode: int) -> capstone.CsInsn | None:
    with _LOCK:
        for insn in _engine(mode).disasm(code[:MAX_INSN], 0, 1):
            return insn
    return None


def writes_memory(code: bytes, mode: int) -> bool:
    """Whether the instruction in ``code`` writes memory (explicitly or through the stack)."""
    insn = _decode(code, mode)
    if insn is None:
        return False
    if insn.mnemonic.startswith(_WRITES_MEMORY):
        return True
    return any(op.type == C.X86_OP_MEM and op.access & capstone.CS_AC_WRITE
               for op in insn.operands)  # fmt: skip


def page_fault_code(mem: GuestMemory, paging: PagingState, cr2: int, *, cpl: int, pc: int,
                    code: bytes, mode: int) -> int:  # fmt: skip
    """The #PF error code for a fault at linear ``cr2`` by the instruction ``code`` at ``pc``."""
    user = PF_USER if cpl == 3 else 0
    fetch = pc <= cr2 < pc + max(len(code), 1) or not code
    if fetch:
        nx = paging.efer & _EFER_NXE and paging.cr4 & _CR4_PAE
        try:
            translate(mem, paging, cr2)
            present = PF_PRESENT
        except PageFault as err:
            present = 0 if err.reason == NOT_PRESENT else PF_PRESENT
        except GuestFault:
            present = 0
        return present | user | (PF_FETCH if nx else 0)
    write = PF_WRITE if writes_memory(code, mode) else 0
    try:
        translate(mem, paging, cr2)
    except PageFault as err:
        if err.reason == RESERVED_BIT:
            return PF_PRESENT | PF_RSVD | write | user
        return (0 if err.reason == NOT_PRESENT else PF_PRESENT) | write | user
    except GuestFault:
        return write | user
    # Readable: a write to a read-only page, or a user access to a supervisor page.
    try:
        translate(mem, paging, cr2, write=True)
    except PageFault:
        return PF_PRESENT | PF_WRITE | user
    except GuestFault:
        pass
    return PF_PRESENT | write | user


def selector_fault_code(code: bytes, mode: int, registers: Mapping[str, int]) -> int:
    """The error code of a #GP/#NP/#SS/#TS raised by ``mov Sreg, r16`` or ``pop Sreg``: the
    selector with its RPL cleared, as QEMU pushes it (``selector & 0xfffc``); else 0."""
    insn = _decode(code, mode)
    if insn is None or insn.mnemonic != "mov" or len(insn.operands) != 2:
        return 0
    dest, src = insn.operands
    if dest.type != C.X86_OP_REG or dest.reg not in _SEGMENT_REGS or src.type != C.X86_OP_REG:
        return 0
    name = insn.reg_name(src.reg)
    full = {"ax": "rax", "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi",
            "bp": "rbp", "sp": "rsp"}.get(name[-2:], "")  # fmt: skip
    return registers.get(full, 0) & 0xFFFC


_INT_IMM8 = 0xCD
PAGE_FAULT = 14


def raised_event(
    intno: int, before: bytes, *, mem: GuestMemory, paging: PagingState, mode: int, pc: int,
    code: Callable[[], bytes], cr2: Callable[[], int], cpl: Callable[[], int],
    registers: Callable[[], Mapping[str, int]],
) -> Event:
    """The event Unicorn reported as vector ``intno``, with ``before`` the two bytes before RIP
    and, read only when needed, the faulting instruction's bytes, CR2, the CPL and the general
    registers."""
    if before == bytes((_INT_IMM8, intno)):
        return Event(intno, EventType.SOFTWARE_INTERRUPT, instruction_length=2)
    last = before[-1:]
    if (intno, last) in ((3, b"\xcc"), (4, b"\xce")):
        return Event(intno, EventType.SOFTWARE_EXCEPTION, instruction_length=1)
    if (intno, last) == (1, b"\xf1"):
        return Event(intno, EventType.PRIVILEGED_SOFTWARE_EXCEPTION, instruction_length=1)
    if intno not in ERROR_CODE_VECTORS:
        return hardware_exception(intno)
    if intno == PAGE_FAULT:
        address = cr2()
        error = page_fault_code(mem, paging, address, cpl=cpl(), pc=pc, code=code(), mode=mode)
        return hardware_exception(intno, error, cr2=address)
    if intno in (10, 11, 12, 13):
        return hardware_exception(intno, selector_fault_code(code(), mode, registers()))
    return hardware_exception(intno, 0)
