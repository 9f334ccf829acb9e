# print16.s - console output routines for real-mode (16-bit) guests.
#
# The loader starts real-mode guests with CS = DS = ES = SS = 0, so a label's value is both its
# offset and its linear address; strings must lie in the first 64 KiB (SI is 16 bits).
# keystone encodes 16-bit `call` and `ret` with a 0x66 prefix (4-byte stack slots), so these
# routines are entered with CALL16 and leave with RET16 (asm/include/macros16.s, which must be the
# prelude).
# Needs hvabi.s; brings rcnames.s along. Include it after the program's code: it emits bytes.

# print_str - write the NUL-terminated string at DS:SI.
#   in:  SI = offset of the string (DS = 0)
#   out: SI = offset just past the NUL
#   clobbers: AX, DX
print_str:
    mov dx, DEBUGCON_PORT
print_str.next:
    lodsb                       # AL = DS:[SI], SI += 1
    test al, al
    jz print_str.done
    out dx, al
    jmp print_str.next
print_str.done:
    RET16                       # C3: pops the 2-byte return address CALL16 pushed

# print_dec - write EAX as an unsigned decimal number (32-bit arithmetic works in real mode:
# keystone adds the operand-size prefix to `div ecx` and friends, which is what we want here).
#   in:  EAX = value
#   clobbers: EAX, ECX, EDX, DI
print_dec:
    mov ecx, 10
    xor di, di                  # DI = digits pushed so far
print_dec.divide:
    xor edx, edx                # DIV divides EDX:EAX
    div ecx                     # EAX = quotient, EDX = remainder
    add dl, '0'
    push dx                     # a 2-byte push (no prefix)
    inc di
    test eax, eax
    jnz print_dec.divide
    mov dx, DEBUGCON_PORT
print_dec.emit:
    pop ax
    out dx, al
    dec di
    jnz print_dec.emit
    RET16

# print_rc_name - write the name of return code EAX.
#   in:  EAX = return code
#   clobbers: EAX, ECX, DX, SI
print_rc_name:
    mov si, rc_unknown
    cmp eax, RC_NAME_COUNT
    jae print_str               # a jump, not a call: print_str's RET16 returns to our caller
    mov si, rc_names
    mov ecx, eax                # ECX = strings still to skip
print_rc_name.skip:
    test ecx, ecx
    jz print_str
print_rc_name.scan:
    lodsb
    test al, al
    jnz print_rc_name.scan
    dec ecx
    jmp print_rc_name.skip

#include "rcnames.s"
