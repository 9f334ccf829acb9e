"""Protected- and long-mode delivery: an interrupt or exception through the guest's IDT.

Models: what the CPU does with an event outside real mode. Protected mode: the 8-byte gate at
IDTR.base + 8n (32-bit or 16-bit interrupt or trap gate; a task gate is refused with a report),
its code segment from the GDT or LDT, a switch to the inner stack SS0:ESP0 (or SS1/SS2) of the
32-bit TSS when the handler is more privileged, then EFLAGS, CS, EIP (and the old SS:ESP before
them on a stack switch) and the error code pushed. Long mode: the 16-byte gate at IDTR.base + 16n,
RSP0..2 or an IST slot of the 64-bit TSS, the stack aligned down to 16 and SS:RSP always pushed,
a NULL SS on a privilege change. Interrupt gates clear IF; both clear TF, NT, RF and VM. Every
check that fails is the fault the SDM names (#GP, #NP, #SS, #TS with a selector error code, #PF
with CR2 when a table or the stack is not mapped), returned for ``deliver.py`` to merge.

Follows: Intel SDM vol. 3A 6.10-6.14 (IDT, gates, stack switch, 64-bit frame, IST), 7.2.1
(TSS), 6.13 (error codes) and QEMU's ``do_interrupt_protected`` / ``do_interrupt64``
(the order of the checks). docs/UNICORN.md U39, U40, U43: CS and SS go through the hidden
state, the error codes delivery raises are exact (with the EXT bit), IRET runs natively.

Leaves out: task switches through a task gate (refused), virtual-8086 mode, compatibility-mode
code (a long-mode guest is 64-bit, docs/UNICORN.md U5), the accessed bit of descriptors,
segment-limit checks on the new stack (pushes are checked by the page walk only), SMAP; the
frame's bytes do not mark translated code stale (``Vcpu._pushing_frame``: a guest executing
code from its own interrupt stack would run the old bytes).

Guest controls: the IDT, GDT, LDT and TSS contents and limits, every register pushed. All table
reads are bounded by their limits and go through the guest's page tables (``read_virt``); a
read outside RAM is a refusal, never a Python exception.
"""

from __future__ import annotations

import struct

from hv_emu.errors import GuestFault, GuestMemoryError, PageFault
from hv_emu.memory.walk import NON_CANONICAL, PagingState, read_virt, write_virt
from hv_emu.memory.walk import NOT_PRESENT as WALK_NOT_PRESENT
from hv_emu.vcpu.engine import Engine, mode_of
from hv_emu.vcpu.hidden import CS, GDT, IDT, LDT, SS, TR, HiddenState
from hv_emu.vcpu.injection import (
    GENERAL_PROTECTION,
    IF,
    INVALID_TSS,
    NOT_PRESENT,
    NT,
    PAGE_FAULT,
    RF,
    STACK_FAULT,
    TF,
    VM,
    Attempt,
    Delivered,
    Event,
    Refused,
    hardware_exception,
    selector_error,
)

_P = 1 << 15
_S = 1 << 12
_CODE = 1 << 11
_CONFORMING = 1 << 10
_WRITABLE = 1 << 9
_L = 1 << 21
_B = 1 << 22
_G = 1 << 23
_TASK_GATE = 0x5


class _Fault(GuestFault):
    """A check failed: the event to raise instead (internal to this module)."""

    def __init__(self, event: Event | Refused) -> None:
        super().__init__(repr(event))
        self.event = event


def usable(hidden: HiddenState) -> bool:
    """Whether the guest has loaded an IDT at all (a limit of 0 is none: today's report)."""
    return hidden.segment(IDT)[2] != 0


def _page_fault(err: PageFault, cpl: int, write: bool) -> _Fault:
    present = 0 if err.reason == WALK_NOT_PRESENT else 1
    code = present | (2 if write else 0) | (4 if cpl == 3 else 0)
    return _Fault(hardware_exception(PAGE_FAULT, code, cr2=err.va))


def _read(cpu: Engine, paging: PagingState, va: int, n: int) -> bytes:
    """``n`` bytes of a system table at linear ``va`` (supervisor access)."""
    try:
        return read_virt(cpu.mem, paging, va, n)
    except PageFault as err:
        raise _page_fault(err, 0, False) from None
    except GuestMemoryError:
        raise _Fault(Refused(f"a system table at {va:#x} lies outside RAM")) from None


def _descriptor(cpu: Engine, hidden: HiddenState, paging: PagingState,
                selector: int) -> tuple[int, int] | None:  # fmt: skip
    """The two dwords of ``selector``'s descriptor in the GDT or LDT, or ``None`` when the
    selector is beyond the table's limit."""
    table = LDT if selector & 4 else GDT
    _sel, base, limit, _flags = hidden.segment(table)
    index = selector & ~7
    if index + 7 > limit:
        return None
    e1, e2 = struct.unpack("<II", _read(cpu, paging, base + index, 8))
    return e1, e2


def _base(e1: int, e2: int) -> int:
    return (e1 >> 16) | ((e2 & 0xFF) << 16) | (e2 & 0xFF000000)


def _limit(e1: int, e2: int) -> int:
    limit = (e1 & 0xFFFF) | (e2 & 0x000F0000)
    return (limit << 12) | 0xFFF if e2 & _G else limit


def _gp(code: int) -> _Fault:
    return _Fault(hardware_exception(GENERAL_PROTECTION, code))


def _fault(vector: int, code: int) -> _Fault:
    return _Fault(hardware_exception(vector, code))


def deliver(cpu: Engine, hidden: HiddenState, event: Event) -> Attempt:
    """Deliver ``event`` through the IDT (the hidden state loaded by the caller, who stores
    it)."""
    try:
        return _deliver(cpu, hidden, event)
    except _Fault as fault:
        return fault.event


def _deliver(cpu: Engine, hidden: HiddenState, event: Event) -> Attempt:
    paging = cpu.paging_state()
    long_mode = mode_of(paging) == 64
    vector, ext = event.vector, event.external
    size = 16 if long_mode else 8
    idt_error = selector_error(vector, idt=True, external=ext)
    _sel, idt_base, idt_limit, _flags = hidden.segment(IDT)
    if vector * size + size - 1 > idt_limit:
        raise _gp(idt_error)
    gate = _read(cpu, paging, idt_base + vector * size, size)
    e1, e2 = struct.unpack_from("<II", gate)
    kind = (e2 >> 8) & 0x1F
    if kind == _TASK_GATE and not long_mode:
        return Refused(f"vector {vector:#x}: task gates (hardware task switches) are not modelled")
    if kind not in ((0xE, 0xF) if long_mode else (0x6, 0x7, 0xE, 0xF)):
        raise _gp(idt_error)
    cpl = hidden.cpl
    if event.checks_gate_dpl and (e2 >> 13) & 3 < cpl:
        raise _gp(idt_error)
    if not e2 & _P:
        raise _fault(NOT_PRESENT, idt_error)
    selector = e1 >> 16
    offset = (e2 & 0xFFFF0000) | (e1 & 0xFFFF)
    ist = e2 & 7 if long_mode else 0
    if long_mode:
        offset |= struct.unpack_from("<I", gate, 8)[0] << 32
    elif not kind & 8:
        offset &= 0xFFFF  # a 16-bit gate
    sel_error = (selector & 0xFFFC) | (1 if ext else 0)
    if not selector & 0xFFFC:
        raise _gp(1 if ext else 0)
    found = _descriptor(cpu, hidden, paging, selector)
    if found is None:
        raise _gp(sel_error)
    c1, c2 = found
    if not c2 & _S or not c2 & _CODE:
        raise _gp(sel_error)
    dpl = (c2 >> 13) & 3
    if dpl > cpl:
        raise _gp(sel_error)
    if not c2 & _P:
        raise _fault(NOT_PRESENT, sel_error)
    if long_mode and (not c2 & _L or c2 & _B):
        raise _gp(sel_error)
    if c2 & _CONFORMING:
        dpl = cpl
    rflags = cpu.reg("rflags")
    if dpl > cpl or (dpl == cpl and rflags & VM):
        raise _gp(sel_error)
    old_ss = hidden.segment(SS)
    old_rsp = cpu.reg("rsp")
    new_ss: tuple[int, int, int, int] | None = None
    if long_mode:
        if dpl < cpl or ist:
            rsp = _tss_rsp(cpu, hidden, paging, ist + 3 if ist else dpl, ext)
            if dpl < cpl:
                new_ss = (dpl, 0, 0, dpl << 13)
        else:
            rsp = old_rsp
        rsp &= ~0xF
        stack_base, sp_mask = 0, (1 << 64) - 1
        width = 8
        frame = [old_ss[0], old_rsp, rflags, hidden.segment(CS)[0], cpu.reg("rip")]
    else:
        width = 4 if kind & 8 else 2
        if dpl < cpl:
            new_ss, rsp = _tss_stack(cpu, hidden, paging, dpl, ext)
            stack_base = new_ss[1]
            sp_mask = 0xFFFFFFFF if new_ss[3] & _B else 0xFFFF
            frame = [old_ss[0], old_rsp]
        else:
            stack_base, rsp = old_ss[1], old_rsp
            sp_mask = 0xFFFFFFFF if old_ss[3] & _B else 0xFFFF
            frame = []
        frame += [rflags, hidden.segment(CS)[0], cpu.reg("rip")]
    if event.error_code is not None:
        frame.append(event.error_code)
    new_rsp = (rsp - width * len(frame)) & sp_mask
    data = b"".join((v & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
                    for v in reversed(frame))  # fmt: skip
    at = stack_base + new_rsp if long_mode else (stack_base + new_rsp) & 0xFFFFFFFF
    try:
        write_virt(cpu.mem, paging, at, data)
    except PageFault as err:
        if err.reason == NON_CANONICAL:
            raise _fault(STACK_FAULT, 0) from None
        raise _page_fault(err, dpl, True) from None
    except GuestMemoryError:
        return Refused(f"the interrupt stack at {at:#x} lies outside RAM")
    # The new state: registers first, then the hidden segment caches (one context edit).
    cpu.set_reg("rsp", (rsp & ~sp_mask) | new_rsp if not long_mode else new_rsp)
    cleared = TF | NT | RF | VM | (0 if kind & 1 else IF)
    cpu.set_reg("rflags", rflags & ~cleared)
    cpu.set_reg("rip", offset)
    cr0 = paging.cr0
    hidden.load()
    if new_ss is not None:
        ss_sel, ss_base, ss_limit, ss_flags = new_ss
        hidden.load_segment(SS, (ss_sel & ~3) | dpl, ss_base, ss_limit, ss_flags, cr0,
                            rflags & ~cleared)  # fmt: skip
    cs = (selector & ~3) | dpl
    hidden.load_segment(CS, cs, _base(c1, c2), _limit(c1, c2), c2, cr0, rflags & ~cleared)
    return Delivered(cs, offset)


def _tss_stack(cpu: Engine, hidden: HiddenState, paging: PagingState, dpl: int,
               ext: bool) -> tuple[tuple[int, int, int, int], int]:  # fmt: skip
    """SS and ESP for privilege level ``dpl`` from the 32-bit TSS, checked as the SDM says:
    (selector, base, limit, flags) of the new SS and the new ESP."""
    tr_sel, tr_base, tr_limit, tr_flags = hidden.segment(TR)
    tss_error = (tr_sel & 0xFFFC) | (1 if ext else 0)
    wide = bool((tr_flags >> 8) & 8)  # a 32-bit TSS (type 9/11) or a 16-bit one
    index = (dpl * 4 + 2) << (1 if wide else 0)
    if index + (4 << (1 if wide else 0)) - 1 > tr_limit:
        raise _fault(INVALID_TSS, tss_error)
    raw = _read(cpu, paging, tr_base + index, 8 if wide else 4)
    if wide:
        esp, ss = struct.unpack("<IH", raw[:6])
    else:
        esp, ss = struct.unpack("<HH", raw)
    ss_error = (ss & 0xFFFC) | (1 if ext else 0)
    if not ss & 0xFFFC or ss & 3 != dpl:
        raise _fault(INVALID_TSS, ss_error)
    found = _descriptor(cpu, hidden, paging, ss)
    if found is None:
        raise _fault(INVALID_TSS, ss_error)
    s1, s2 = found
    if (s2 >> 13) & 3 != dpl or not s2 & _S or s2 & _CODE or not s2 & _WRITABLE:
        raise _fault(INVALID_TSS, ss_error)
    if not s2 & _P:
        raise _fault(STACK_FAULT, ss_error)
    return (ss, _base(s1, s2), _limit(s1, s2), s2), esp


def _tss_rsp(cpu: Engine, hidden: HiddenState, paging: PagingState, level: int,
             ext: bool) -> int:  # fmt: skip
    """RSP0..2 (``level`` 0-2) or IST1..7 (``level`` 4-10) from the 64-bit TSS."""
    tr_sel, tr_base, tr_limit, _flags = hidden.segment(TR)
    index = 8 * level + 4
    if index + 7 > tr_limit:
        raise _fault(INVALID_TSS, (tr_sel & 0xFFFC) | (1 if ext else 0))
    return int(struct.unpack("<Q", _read(cpu, paging, tr_base + index, 8))[0])
