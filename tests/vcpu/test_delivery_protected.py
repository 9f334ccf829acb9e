"""Protected-mode delivery through the IDT, on hv-emu and against QEMU: handlers for #DE, #UD,
#GP and #PF print the vector, the error code and CR2, identically on both machines."""

from __future__ import annotations

from pathlib import Path

from hv_emu.exits import Halt
from tests.rigs.bootsector import ENTER32, HEX8, pm_boot_sector, run_hv, run_on_qemu
from tests.rigs.qemu import EXIT_PORT, needs_qemu

IDT = 0x1000
PAGE_DIRECTORY = 0x2000

#: Each fault, then a handler that prints "V=vv E=eeeeeeee C=cccccccc" and skips the faulting
#: instruction (2 bytes, or 5 for the #PF moves); an INT 0x30 beyond the IDT limit is a #GP with
#: error code 0x30*8+2 pointing at the INT itself.
EXCEPTIONS = ENTER32 + f"""
    mov edi, {IDT:#x}
    xor eax, eax
    mov ecx, 64
    rep stosd                   # 32 empty gates
    mov edi, {PAGE_DIRECTORY:#x}
    mov ecx, 1024
    rep stosd                   # an empty page directory
    mov dword ptr [{PAGE_DIRECTORY:#x}], 0x83     # 0-4 MiB: one 4 MiB page, the rest absent
    mov ebx, 0
    mov eax, on_de
    call setgate
    mov ebx, 6
    mov eax, on_ud
    call setgate
    mov ebx, 13
    mov eax, on_gp
    call setgate
    mov ebx, 14
    mov eax, on_pf
    call setgate
    LIDT32 idtr
    xor ecx, ecx
    div ecx                     # #DE
    ud2                         # #UD
    mov ax, 0x1234
    .byte 0x8e, 0xd8            # mov ds, ax: #GP(0x1234), beyond the GDT
    int 0x30                    # #GP(0x182): beyond the IDT
    mov eax, cr4
    or al, 0x10
    mov cr4, eax                # PSE
    mov eax, {PAGE_DIRECTORY:#x}
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax                # paging on
    mov eax, [0x400000]         # #PF read, not present: 0
    mov [0x500004], eax         # #PF write, not present: 2
    mov al, 0x2e
    out 0xe9, al
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    hlt
setgate:
    lea edi, [{IDT:#x} + ebx*8]
    mov [edi], ax
    mov word ptr [edi+2], 0x08
    mov word ptr [edi+4], 0x8e00
    shr eax, 16
    mov [edi+6], ax
    ret
on_de:
    push 0
    push 0
    jmp common
on_ud:
    push 0
    push 6
    jmp common
on_gp:
    push 13
    jmp common
on_pf:
    push 14
common:
    pushad
    mov al, 0x56
    out 0xe9, al
    mov eax, [esp+32]
    call hex8
    mov al, 0x20
    out 0xe9, al
    mov eax, [esp+36]
    call hex8
    mov al, 0x20
    out 0xe9, al
    mov eax, cr2
    call hex8
    mov al, 0x0a
    out 0xe9, al
    mov ecx, 2
    cmp byte ptr [esp+32], 14
    jne skip
    mov cl, 5
skip:
    add [esp+40], ecx
    popad
    add esp, 8
    iretd
{HEX8}
idtr:
    .word 32*8-1
    .long {IDT:#x}
"""

EXPECTED = (
    b"V00000000 00000000 00000000\n"
    b"V00000006 00000000 00000000\n"
    b"V0000000D 00001234 00000000\n"
    b"V0000000D 00000182 00000000\n"
    b"V0000000E 00000000 00400000\n"
    b"V0000000E 00000002 00500004\n"
    b".\n"
)


def test_exception_handlers_see_vector_error_code_and_cr2() -> None:
    machine, result = run_hv(pm_boot_sector(EXCEPTIONS))
    assert isinstance(result.exit, Halt), result.exit
    assert bytes(machine.debugcon.captured) == EXPECTED


@needs_qemu
def test_exception_handlers_print_the_same_on_qemu(tmp_path: Path) -> None:
    sector = pm_boot_sector(EXCEPTIONS)
    qemu = run_on_qemu(tmp_path, sector)
    assert qemu.exit_value == 1, qemu
    machine, _result = run_hv(sector)
    assert bytes(machine.debugcon.captured) == qemu.console == EXPECTED


#: Ring 3 code calls INT 0x40 through a DPL-3 gate: the handler runs on SS0:ESP0 from the TSS
#: and finds the user's SS:ESP, EFLAGS, CS:EIP on it; INT 0x41 through a DPL-0 gate is a #GP
#: with error code 0x41*8+2, taken on the same ring-0 stack.
RINGS = ENTER32 + f"""
    LGDT32 gdtr2
    mov dword ptr [0x3004], 0x6000          # TSS.ESP0
    mov dword ptr [0x3008], 0x10            # TSS.SS0
    mov ax, 0x28
    ltr ax
    mov edi, {IDT:#x}
    xor eax, eax
    mov ecx, 0x84
    rep stosd
    mov eax, on_gp
    mov ebx, 13
    mov edx, 0x8e00
    call setgate
    mov eax, on_40
    mov ebx, 0x40
    mov edx, 0xee00
    call setgate
    mov eax, on_gp
    mov ebx, 0x41
    mov edx, 0x8e00
    call setgate
    LIDT32 idtr2
    push 0x23
    push 0x5800
    pushfd
    push 0x1b
    mov eax, user
    push eax
    iretd
user:
    int 0x41
    int 0x40
spin:
    jmp spin
on_gp:
    mov al, 0x47
    out 0xe9, al
    mov eax, [esp]
    call hex8
    add dword ptr [esp+4], 2
    add esp, 4
    iretd
on_40:
    mov al, 0x49
    out 0xe9, al
    mov eax, esp
    call hex8
    mov eax, [esp+4]
    call hex8
    mov eax, [esp+12]
    call hex8
    mov eax, [esp+16]
    call hex8
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    hlt
setgate:
    lea edi, [{IDT:#x} + ebx*8]
    mov [edi], ax
    mov word ptr [edi+2], 0x08
    mov [edi+4], dx
    shr eax, 16
    mov [edi+6], ax
    ret
{HEX8}
gdt2:
    .long 0, 0
    .long 0x0000ffff, 0x00cf9a00
    .long 0x0000ffff, 0x00cf9200
    .long 0x0000ffff, 0x00cffa00
    .long 0x0000ffff, 0x00cff200
    .long 0x30000067, 0x00008900
gdtr2:
    .word 47
    .long gdt2
idtr2:
    .word 0x42*8-1
    .long {IDT:#x}
"""

RINGS_EXPECTED = b"G0000020AI00005FEC0000001B0000580000000023\n"


def test_a_ring_3_interrupt_switches_to_the_tss_stack() -> None:
    machine, result = run_hv(pm_boot_sector(RINGS))
    assert isinstance(result.exit, Halt), result.exit
    assert bytes(machine.debugcon.captured) == RINGS_EXPECTED


@needs_qemu
def test_a_ring_3_interrupt_switches_stacks_as_on_qemu(tmp_path: Path) -> None:
    sector = pm_boot_sector(RINGS)
    qemu = run_on_qemu(tmp_path, sector)
    assert qemu.exit_value == 1, qemu
    machine, _result = run_hv(sector)
    assert bytes(machine.debugcon.captured) == qemu.console == RINGS_EXPECTED
