# update32.s - the update guest, 32-bit protected mode: hand a signed signature update to the
# hypervisor. The same three steps as update64.s with the 32-bit registers.
#
# guest_tool.programs.build_update_program(mode=32) puts these .equ lines in front:
#   LOOKUP            1 = resolve "update_signatures" by name first, 0 = use HC_UPDATE_SIGNATURES
#   BUNDLE_LEN        length of the bundle in bytes
#   SIGNATURE_OFFSET  where the signature starts, counted from the label `blobs`
# and appends the bundle and the signature at `blobs`. The loader starts the guest with flat
# segments (base 0) and paging off, so a label's value (the image is assembled at its load
# address) is the linear address the hypervisor expects.

#include "hvabi.s"

start:
    cld

.if LOOKUP
    # Step 1: get_vmmcall_number("update_signatures").
    #   EAX = HC_GET_VMMCALL_NUMBER (0), EBX = linear address of the name
    # -> EAX = its number, or 0 if the hypervisor does not know it.
    mov eax, HC_GET_VMMCALL_NUMBER
    mov ebx, name_update            # a 32-bit absolute address
    vmcall
    test eax, eax
    jz not_found
.else
    mov eax, HC_UPDATE_SIGNATURES
.endif

    # Step 2: update_signatures(bundle, length, signature).
    #   EAX = the number, EBX = address of the bundle, ECX = its length,
    #   EDX = address of the detached signature
    # -> EAX = RC_OK (0) or an RC_* code.
    mov ebx, bundle
    mov ecx, BUNDLE_LEN
    mov edx, signature
    vmcall

    # Step 3: report "hvupdate: rc=<n> (<NAME>)". Keep the code in EBX: the print routines
    # clobber EAX, ECX, EDX, ESI and EDI but not EBX.
    mov ebx, eax
    mov esi, msg_rc
    call print_str
    mov eax, ebx
    call print_dec
    mov esi, msg_open
    call print_str
    mov eax, ebx
    call print_rc_name
    mov esi, msg_close
    call print_str
halt:
    hlt
    jmp halt

not_found:
    mov esi, msg_not_found
    call print_str
    jmp halt

name_update:    .asciz "update_signatures"
msg_rc:         .asciz "hvupdate: rc="
msg_open:       .asciz " ("
msg_close:      .asciz ")\n"
msg_not_found:  .asciz "hvupdate: update_signatures not found\n"

#include "print32.s"

# The blobs go last (programs.py appends them); nothing may follow this label.
    .p2align 4
blobs:
.equ bundle, blobs
.equ signature, blobs + SIGNATURE_OFFSET
