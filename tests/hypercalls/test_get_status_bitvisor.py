"""``get_status`` behaves exactly as BitVisor's ``core/vmmcall_status.c`` (issue 13, item 6).

BitVisor's handler sets RCX to the text's length (``strlen``, no NUL) before anything else,
copies the text byte by byte, without a NUL, only when that length is at most the size in RCX,
and answers RAX = 0 after a whole copy, 1 otherwise (too small: nothing written; a byte it cannot
write: the copy stops there). hv-emu's RAX 1 is ``Rc.UNREADABLE``; ``Rc.BUFFER_TOO_SMALL`` is
never returned. Each case runs the real handler in the real table on a flat 32-bit context, and
once through a 64-bit guest with paging.
"""

from __future__ import annotations

import pytest

from hv_emu.events import EventLog
from hv_emu.exits import Hypercall
from hv_emu.hypercalls import get_status
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.builtin import NUMBERS
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.layout import PAGE_SIZE
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState
from hv_emu.testing import Hypervisor

FLAT32 = PagingState(cr0=0x11, cr3=0, cr4=0, efer=0)
RAM = 1 << 20
BUF = 0x20000
FILL = 0xAA  # what the buffer holds before the call: any byte written shows
TEXT = "hv-emu 0.1.0\nkey: value\n"


def call(rbx: int, rcx: int, text: str = TEXT) -> tuple[int, int, GuestMemory]:
    """get_status(RBX, RCX) on a fresh table whose status text is ``text``: (RAX, RCX, memory)."""
    mem = GuestMemory(RAM)
    mem.write(BUF - PAGE_SIZE, bytes([FILL]) * (3 * PAGE_SIZE))
    table = HypercallTable(mem, EventLog())
    nr = table.register("get_status", get_status.get_status(lambda: text))
    out = table.handle(Hypercall(nr, (rbx, rcx, 0, 0, 0), 32, 0, FLAT32))
    return out.registers["rax"], out.registers["rcx"], mem


def test_a_large_buffer_gets_the_text_without_a_nul_and_rcx_its_length() -> None:
    rax, rcx, mem = call(BUF, 4096)
    assert (rax, rcx) == (Rc.OK, len(TEXT))
    assert mem.read(BUF, len(TEXT) + 1) == TEXT.encode() + bytes([FILL])  # no NUL after it


def test_a_buffer_of_exactly_the_texts_length_is_enough() -> None:
    rax, rcx, mem = call(BUF, len(TEXT))
    assert (rax, rcx) == (Rc.OK, len(TEXT))
    assert mem.read(BUF, len(TEXT) + 1) == TEXT.encode() + bytes([FILL])


@pytest.mark.parametrize("size", [0, 1, len(TEXT) - 1])
def test_a_shorter_buffer_gets_1_and_the_length_and_nothing_written(size: int) -> None:
    rax, rcx, mem = call(BUF, size)
    assert (rax, rcx) == (1, len(TEXT))
    assert rax == Rc.UNREADABLE and rax != Rc.BUFFER_TOO_SMALL
    assert mem.read(BUF, len(TEXT) + 1) == bytes([FILL]) * (len(TEXT) + 1)


def test_the_length_counts_utf8_bytes() -> None:
    text = "hv-emu\nnetwork: café\n"
    rax, rcx, mem = call(BUF, 4096, text)
    assert (rax, rcx) == (Rc.OK, len(text.encode()))
    assert mem.read(BUF, rcx) == text.encode()


def test_an_unwritable_buffer_gets_1_and_the_length() -> None:
    assert call(RAM + 0x1000, 4096)[:2] == (1, len(TEXT))


def test_a_copy_that_runs_out_of_ram_keeps_what_came_before() -> None:
    # BitVisor writes byte by byte and stops at the first byte it cannot write; RAM ends on a
    # page boundary, so what fits before it is written and RAX = 1 all the same.
    mem_end = RAM - 10
    rax, rcx, mem = call(mem_end, 4096)
    assert (rax, rcx) == (1, len(TEXT))
    assert mem.read(mem_end, 10) == TEXT.encode()[:10]


def test_a_copy_across_pages_is_whole(hv: Hypervisor) -> None:
    """A 64-bit guest with paging, its buffer across a page boundary, BitVisor's calling pattern:
    RCX = 0 for the length, then exactly that length."""
    status = hv.machine.status_text().encode()
    buf = 0x301000 - 7
    hv.machine.mem.write(buf, bytes([FILL]) * (len(status) + 8))
    run = hv.run_asm(f"""
        mov eax, HC_GET_STATUS
        mov ebx, {buf:#x}
        xor ecx, ecx
        vmcall
        mov r12, rax
        mov r13, rcx
        mov eax, HC_GET_STATUS
        mov ebx, {buf:#x}
        vmcall              # RCX is still the length
        hlt
    """)
    assert run.halted, run.exit
    regs = run.registers
    assert (regs["r12"], regs["r13"]) == (1, len(status))
    assert (regs["rax"], regs["rcx"]) == (Rc.OK, len(status))
    assert run.read(buf, len(status) + 1) == status + bytes([FILL])
    assert [(h.name, h.rax, h.registers["rcx"]) for h in run.hypercalls] == [
        ("get_status", 1, len(status)), ("get_status", Rc.OK, len(status))]
    assert NUMBERS["get_status"] == 1
