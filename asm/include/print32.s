# print32.s - console output routines for 32-bit protected-mode guests (flat segments).
#
# The same routines as print64.s with 32-bit registers; labels are absolute addresses because the
# image is assembled at its load address and the segments are flat (base 0). Needs hvabi.s;
# brings rcnames.s along. Include it after the program's code: it emits bytes.

# print_str - write the NUL-terminated string at ESI.
#   in:  ESI = address of the string
#   out: ESI = address just past the NUL
#   clobbers: EAX, EDX
print_str:
    mov edx, DEBUGCON_PORT
print_str.next:
    lodsb                       # AL = [ESI], ESI += 1
    test al, al
    jz print_str.done
    out dx, al
    jmp print_str.next
print_str.done:
    ret

# print_dec - write EAX as an unsigned decimal number.
#   in:  EAX = value
#   clobbers: EAX, ECX, EDX, EDI
print_dec:
    mov ecx, 10
    xor edi, edi                # EDI = digits pushed so far
print_dec.divide:
    xor edx, edx                # DIV divides EDX:EAX
    div ecx                     # EAX = quotient, EDX = remainder (the lowest digit)
    add dl, '0'
    push edx
    inc edi
    test eax, eax
    jnz print_dec.divide
    mov edx, DEBUGCON_PORT
print_dec.emit:
    pop eax
    out dx, al
    dec edi
    jnz print_dec.emit
    ret

# print_rc_name - write the name of return code EAX.
#   in:  EAX = return code
#   clobbers: EAX, ECX, EDX, ESI
print_rc_name:
    mov esi, rc_unknown         # a 32-bit absolute address: the image is linked where it runs
    cmp eax, RC_NAME_COUNT
    jae print_str
    mov esi, rc_names
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
