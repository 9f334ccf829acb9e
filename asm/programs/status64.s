# status64.s - a 64-bit guest that asks the hypervisor for its status and prints it.
#
# Resolves "get_status" by name, calls it with a buffer, and copies the NUL-terminated text the
# hypervisor wrote there to the debug console. On failure it prints "hvstatus: rc=<n> (<NAME>)".
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
    # -> RAX = RC_OK and NUL-terminated text in the buffer, or RC_BUFFER_TOO_SMALL (RCX = size
    #    needed) or another RC_* code.
    lea rbx, [rip + status_buf]
    mov ecx, STATUS_BUF_SIZE
    vmcall
    test rax, rax
    jnz failed

    lea rsi, [rip + status_buf]
    call print_str                  # the status text, as the hypervisor wrote it
halt:
    hlt
    jmp halt

failed:
    mov rbx, rax                    # keep the code; print_str/print_dec clobber RAX
    lea rsi, [rip + msg_rc]
    call print_str
    mov rax, rbx
    call print_dec
    lea rsi, [rip + msg_open]
    call print_str
    mov rax, rbx
    call print_rc_name
    lea rsi, [rip + msg_close]
    call print_str
    jmp halt

not_found:
    lea rsi, [rip + msg_not_found]
    call print_str
    jmp halt

name_status:    .asciz "get_status"
msg_rc:         .asciz "hvstatus: rc="
msg_open:       .asciz " ("
msg_close:      .asciz ")\n"
msg_not_found:  .asciz "hvstatus: get_status not found\n"

#include "print64.s"

# The buffer the hypervisor writes into: part of the image, zero-filled.
    .p2align 4
status_buf:
    .space STATUS_BUF_SIZE
