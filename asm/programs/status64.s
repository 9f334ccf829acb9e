# status64.s - a 64-bit guest that asks the hypervisor for its status and prints it.
#
# Resolves "get_status" by name and calls it as BitVisor's vmmstatus does: with its buffer's size
# minus one, since get_status writes the text without a NUL and returns its length in RCX; the
# program stores the NUL there itself and copies the text to the debug console. On failure it
# prints "hvstatus: rc=<n> (<NAME>): the text is <RCX> bytes, the buffer <size - 1>".
# STATUS_BUF_SIZE (default 1024) may be set by guest_tool.programs.build_program(equates=...).

#include "hvabi.s"

.ifndef STATUS_BUF_SIZE
.equ STATUS_BUF_SIZE, 1024
.endif

start:
    cld

    # get_vmmcall_number("get_status"): RAX = 0, RBX = address of the name -> RAX = number or 0.
    mov eax, HC_GET_VMMCALL_NUMBER
    lea rbx, [rip + name_status]
    vmcall
    test rax, rax
    jz not_found

    # get_status(buffer, size): RAX = number, RBX = buffer, RCX = its size in bytes
    # -> RCX = the text's length (no NUL counted), always; RAX = RC_OK and the text in the buffer
    #    (no NUL written), or 1 (RC_UNREADABLE: BitVisor's one failure value) if the text does
    #    not fit or the buffer cannot be written. One byte is kept back for the NUL.
    lea rbx, [rip + status_buf]
    mov ecx, STATUS_BUF_SIZE - 1
    vmcall
    test rax, rax
    jnz failed

    lea rsi, [rip + status_buf]
    mov byte ptr [rsi + rcx], 0     # terminate the text: get_status wrote none
    call print_str                  # the status text, as the hypervisor wrote it
halt:
    hlt
    jmp halt

failed:
    mov rbx, rax                    # keep the code and the length: the print_* routines
    mov r9, rcx                     # clobber RAX, RCX, RDX, RSI and R8
    lea rsi, [rip + msg_rc]
    call print_str
    mov rax, rbx
    call print_dec
    lea rsi, [rip + msg_open]
    call print_str
    mov rax, rbx
    call print_rc_name
    lea rsi, [rip + msg_text]
    call print_str
    mov rax, r9
    call print_dec                  # the text's length, from RCX
    lea rsi, [rip + msg_buffer]
    call print_str
    mov eax, STATUS_BUF_SIZE - 1
    call print_dec                  # the size the program offered
    lea rsi, [rip + msg_newline]
    call print_str
    jmp halt

not_found:
    lea rsi, [rip + msg_not_found]
    call print_str
    jmp halt

name_status:    .asciz "get_status"
msg_rc:         .asciz "hvstatus: rc="
msg_open:       .asciz " ("
msg_text:       .asciz "): the text is "
msg_buffer:     .asciz " bytes, the buffer "
msg_newline:    .asciz "\n"
msg_not_found:  .asciz "hvstatus: get_status not found\n"

#include "print64.s"

# The buffer the hypervisor writes into: part of the image, zero-filled.
    .p2align 4
status_buf:
    .space STATUS_BUF_SIZE
