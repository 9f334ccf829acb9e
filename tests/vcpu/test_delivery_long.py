"""Long-mode delivery: 16-byte gates, the frame always holding SS:RSP, the stack aligned to 16
first, an IST stack from the 64-bit TSS, IRETQ back (run natively)."""

from __future__ import annotations

from hv_emu.exits import Halt, TripleFault
from tests.conftest import Boot

IDT = 0x3000
TSS = 0x4000

GUEST = f"""
    mov rdi, {IDT:#x}
    xor eax, eax
    mov ecx, 0x1000
    rep stosb
    lea rax, [rip + on_ud]
    mov ebx, 6
    xor edx, edx
    call setgate
    lea rax, [rip + on_40]
    mov ebx, 0x40
    mov edx, 1                      # IST1
    call setgate
    mov qword ptr [{TSS} + 0x24], 0x70000      # TSS.IST1
    # A 64-bit TSS descriptor (16 bytes) at GDT entry 4 (0x20), then the GDTR grown to it.
    mov rdi, 0x820
    mov dword ptr [rdi], 0x40000067
    mov dword ptr [rdi+4], 0x00008900
    mov qword ptr [rdi+8], 0
    lgdt [rip + gdtr]
    mov ax, 0x20
    ltr ax
    lidt [rip + idtr]
    mov rsp, 0x9eff8                # not 16-byte aligned
    ud2
    int 0x40
    mov al, 0x0a
    out 0xe9, al
    hlt
setgate:
    lea rdi, [{IDT} + rbx*8]
    lea rdi, [rdi + rbx*8]
    mov [rdi], ax
    mov word ptr [rdi+2], 0x18
    mov word ptr [rdi+4], 0x8e00
    mov [rdi+4], dl
    shr rax, 16
    mov [rdi+6], ax
    shr rax, 16
    mov [rdi+8], eax
    ret
on_ud:
    mov rax, rsp
    call hex4                        # 0x9eff0 - 40 = ...efc8
    mov rax, [rsp+24]
    call hex4                        # the pushed RSP: eff8
    add qword ptr [rsp], 2
    iretq
on_40:
    mov rax, rsp
    call hex4                        # IST1 0x70000 - 40 = ffd8
    mov rax, [rsp+32]
    call hex4                        # the pushed SS: 0x10
    iretq
hex4:
    mov ecx, 4
    rol ax, 4
hex4_next:
    push rax
    and al, 0x0f
    add al, 0x30
    cmp al, 0x39
    jbe hex4_digit
    add al, 7
hex4_digit:
    out 0xe9, al
    pop rax
    rol ax, 4
    loop hex4_next
    ret
gdtr:
    .word 0x2f
    .quad 0x800
idtr:
    .word 0x41*16-1
    .quad {IDT}
"""


def test_long_mode_gates_align_the_stack_push_ss_rsp_and_use_the_ist(boot: Boot) -> None:
    machine, result = boot(GUEST, mode=64)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.debugcon.text() == "EFC8EFF8FFD80010\n"


def test_a_fault_with_no_usable_gate_in_long_mode_is_a_triple_fault(boot: Boot) -> None:
    """An IDT whose gates are all empty: #UD -> #GP (gate not present... type 0) -> #DF -> the
    #DF gate is empty too -> triple fault, reported as such."""
    machine, result = boot(f"""
        mov rdi, {IDT:#x}
        xor eax, eax
        mov ecx, 0x1000
        rep stosb
        lidt [rip + idtr]
        ud2
    idtr:
        .word 0xfff
        .quad {IDT}
    """, mode=64)
    assert isinstance(result.exit, TripleFault)
    assert result.exit.describe().startswith("guest fault: triple fault (#UD -> #GP -> #DF")
    assert machine.events.of("fault")[0]["kind"].startswith("triple fault")
