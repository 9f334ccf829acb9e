"""Long mode against QEMU: a boot sector that enters long mode itself (its own GDT, page tables,
EFER.LME), loads an IDT of 16-byte gates and takes a #DE and a #PF: vector, error code, CR2, the
pushed RSP and the handler's stack (aligned to 16 before the frame) print the same on both
machines."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from guest_tool.programs import macro_prelude
from hv_emu.exits import Halt
from tests.rigs.bootsector import ENTER32, LOAD, PM_ENTRY, STUB16, run_hv, run_on_qemu
from tests.rigs.qemu import EXIT_PORT, needs_qemu

LONG_ENTRY = LOAD + 0xE0

TO_LONG = ENTER32 + f"""
    mov edi, 0x1000
    xor eax, eax
    mov ecx, 0xc00
    rep stosd                           # PML4 0x1000, PDPT 0x2000, PD 0x3000
    mov dword ptr [0x1000], 0x2003
    mov dword ptr [0x2000], 0x3003
    mov dword ptr [0x3000], 0x83        # 0-2 MiB, one large page; nothing else mapped
    mov eax, 0x1000
    mov cr3, eax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax                        # PAE
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr                               # EFER.LME
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax                        # paging on: long mode
    LGDT32 gdtr64
    LJMP32 0x18, {LONG_ENTRY:#x}
gdt64:
    .long 0, 0
    .long 0x0000ffff, 0x00cf9a00
    .long 0x0000ffff, 0x00cf9200
    .long 0x0000ffff, 0x00af9a00        # 0x18: 64-bit code
gdtr64:
    .word 31
    .long gdt64
"""

LONG = f"""
    mov rsp, 0x7008                     # not 16-byte aligned: the CPU aligns it first
    mov edi, 0x4000
    xor eax, eax
    mov ecx, 0x400
    rep stosd
    lea rax, [rip + on_de]
    xor ebx, ebx
    call setgate
    lea rax, [rip + on_pf]
    mov ebx, 14
    call setgate
    lidt [rip + idtr]
    xor ecx, ecx
    div ecx                             # #DE
    mov eax, dword ptr [0x40000000]     # #PF: not present, a read (7 bytes)
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    hlt
setgate:
    shl ebx, 4
    mov [rbx + 0x4000], ax
    mov dword ptr [rbx + 0x4002], 0x8e000018
    shr rax, 16
    mov [rbx + 0x4006], ax
    ret
on_de:
    push 2                              # the length to skip, in the error code's slot
    push 0
    jmp common
on_pf:
    push 14
common:
    mov rax, rsp
    call hex2                           # RSP's low byte: the frame's alignment
    mov rax, [rsp]
    call hex2                           # vector
    mov rax, [rsp+8]
    call hex2                           # error code (#PF) or the skip (#DE)
    mov rax, [rsp+40]
    call hex2                           # the pushed RSP (0x7008, unaligned as it was)
    mov rax, cr2
    shr rax, 24
    call hex2                           # CR2's top byte: 0x40 for the #PF
    mov al, 0x20
    out 0xe9, al
    mov eax, 7
    cmp byte ptr [rsp], 14
    je skip
    mov eax, 2
skip:
    add [rsp+16], rax
    add rsp, 16
    iretq
hex2:
    push rax
    shr al, 4
    call digit
    pop rax
digit:
    and al, 0x0f
    add al, 0x30
    cmp al, 0x39
    jbe out1
    add al, 7
out1:
    out 0xe9, al
    ret
idtr:
    .word 15*16-1
    .quad 0x4000
"""


def boot_sector() -> bytes:
    stub = assemble(STUB16, mode=16, address=LOAD, prelude=macro_prelude(16))
    to_long = assemble(TO_LONG, mode=32, address=PM_ENTRY, prelude=macro_prelude(32))
    long = assemble(LONG, mode=64, address=LONG_ENTRY)
    assert PM_ENTRY + len(to_long) <= LONG_ENTRY, hex(PM_ENTRY + len(to_long))
    code = stub.ljust(PM_ENTRY - LOAD, b"\x90") + to_long
    code = code.ljust(LONG_ENTRY - LOAD, b"\x90") + long
    assert len(code) <= 510, len(code)
    return code.ljust(510, b"\0") + b"\x55\xaa"


EXPECTED = b"C800020800 C80E000840 \n"


def test_long_mode_handlers_see_the_frame_the_sdm_describes() -> None:
    machine, result = run_hv(boot_sector())
    assert isinstance(result.exit, Halt), result.exit
    assert bytes(machine.debugcon.captured) == EXPECTED


@needs_qemu
def test_long_mode_handlers_print_the_same_on_qemu(tmp_path: Path) -> None:
    qemu = run_on_qemu(tmp_path, boot_sector())
    assert qemu.exit_value == 1, qemu
    machine, _result = run_hv(boot_sector())
    assert bytes(machine.debugcon.captured) == qemu.console == EXPECTED
