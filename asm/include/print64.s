# print64.s - console output routines for 64-bit guests (plain call/ret on the stack at RSP).
#
# Every byte is written with OUT to the debug console (port DEBUGCON_PORT, 0xe9), which hv-emu
# copies to its standard output. DEBUGCON_PORT is generated in front of every program
# (guest_tool.programs.generated_prelude); brings rcnames.s along.
# Include it after the program's code: it emits bytes.

# print_str - write the NUL-terminated string at RSI.
#   in:  RSI = address of the string
#   out: RSI = address just past the NUL
#   clobbers: RAX, RDX
print_str:
    mov edx, DEBUGCON_PORT      # DX = the port (OUT dx, al works for any port number)
print_str.next:
    lodsb                       # AL = [RSI], RSI += 1 (the direction flag is clear)
    test al, al
    jz print_str.done           # the NUL ends the string and is not printed
    out dx, al
    jmp print_str.next
print_str.done:
    ret

# print_dec - write RAX as an unsigned decimal number.
#   in:  RAX = value
#   clobbers: RAX, RCX, RDX, R8
print_dec:
    mov ecx, 10                 # the divisor
    xor r8d, r8d                # R8 = digits pushed so far
print_dec.divide:
    xor edx, edx                # DIV divides RDX:RAX, so clear the high half
    div rcx                     # RAX = quotient, RDX = remainder (the lowest digit)
    add dl, '0'
    push rdx                    # digits come out lowest first: stack them, pop them in order
    inc r8
    test rax, rax
    jnz print_dec.divide
    mov edx, DEBUGCON_PORT
print_dec.emit:
    pop rax
    out dx, al
    dec r8
    jnz print_dec.emit
    ret

# print_rc_name - write the name of return code RAX ("OK", "BAD_SIGNATURE", ...).
#   in:  RAX = return code
#   clobbers: RAX, RCX, RDX, RSI
print_rc_name:
    lea rsi, [rip + rc_unknown] # RIP-relative: right wherever the image is loaded
    cmp rax, RC_NAME_COUNT
    jae print_str               # not in the table: print UNKNOWN (tail call, print_str returns)
    lea rsi, [rip + rc_names]
    mov rcx, rax                # RCX = strings still to skip
print_rc_name.skip:
    test rcx, rcx
    jz print_str                # RSI is at the name: print it
print_rc_name.scan:
    lodsb                       # walk to the byte after the next NUL
    test al, al
    jnz print_rc_name.scan
    dec rcx
    jmp print_rc_name.skip

#include "rcnames.s"
