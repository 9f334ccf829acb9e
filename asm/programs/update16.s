# update16.s - the update guest, real mode: hand a signed signature update to the hypervisor.
# The same three steps as update64.s, as a boot-sector-style program.
#
# guest_tool.programs.build_update_program(mode=16) assembles it with asm/include/macros16.s in
# front and these .equ lines:
#   LOOKUP            1 = resolve "update_signatures" by name first, 0 = use HC_UPDATE_SIGNATURES
#   BUNDLE_LEN        length of the bundle in bytes
#   SIGNATURE_OFFSET  where the signature starts, counted from the label `blobs`
# and appends the bundle and the signature at `blobs`.
#
# Real mode and the ABI: the loader starts us at 0x7c00 with CS = DS = ES = SS = 0, so a label's
# value is its linear address (segment * 16 + offset with segment 0). The hypercall registers are
# still the 32-bit EAX, EBX, ECX, EDX: the bundle may end far above 64 KiB, and 32-bit registers
# work in real mode (keystone adds the 0x66 operand-size prefix, which is right for them).
# keystone's own 16-bit `call`/`ret` are wrong (4-byte stack slots), hence CALL16 (macros16.s).

#include "hvabi.s"

start:
    cld

.if LOOKUP
    # Step 1: get_vmmcall_number("update_signatures").
    #   EAX = HC_GET_VMMCALL_NUMBER (0), EBX = linear address of the name
    # -> EAX = its number, or 0 if the hypervisor does not know it.
    mov eax, HC_GET_VMMCALL_NUMBER
    mov ebx, name_update
    vmcall
    test eax, eax
    jz not_found
.else
    mov eax, HC_UPDATE_SIGNATURES
.endif

    # Step 2: update_signatures(bundle, length, signature).
    #   EAX = the number, EBX = linear address of the bundle, ECX = its length,
    #   EDX = linear address of the detached signature
    # -> EAX = RC_OK (0) or an RC_* code.
    mov ebx, bundle                 # 66 bb imm32: a full 32-bit linear address
    mov ecx, BUNDLE_LEN
    mov edx, signature
    vmcall

    # Step 3: report "hvupdate: rc=<n> (<NAME>)". EBX keeps the code across the calls.
    mov ebx, eax
    mov si, msg_rc
    CALL16 print_str
    mov eax, ebx
    CALL16 print_dec
    mov si, msg_open
    CALL16 print_str
    mov eax, ebx
    CALL16 print_rc_name
    mov si, msg_close
    CALL16 print_str
halt:
    hlt
    jmp halt

not_found:
    mov si, msg_not_found
    CALL16 print_str
    jmp halt

name_update:    .asciz "update_signatures"
msg_rc:         .asciz "hvupdate: rc="
msg_open:       .asciz " ("
msg_close:      .asciz ")\n"
msg_not_found:  .asciz "hvupdate: update_signatures not found\n"

#include "print16.s"

# The blobs go last (programs.py appends them); nothing may follow this label.
    .p2align 4
blobs:
.equ bundle, blobs
.equ signature, blobs + SIGNATURE_OFFSET
