# update64.s - the update guest, 64-bit: hand a signed signature update to the hypervisor.
#
# What it does:
#   1. (if LOOKUP) asks get_vmmcall_number which number "update_signatures" has;
#   2. calls update_signatures with the bundle and its detached signature;
#   3. prints "hvupdate: rc=<n> (<NAME>)" on the debug console and halts.
#
# guest_tool.programs.build_update_program() assembles it and puts these .equ lines in front:
#   LOOKUP            1 = resolve the name first (portable), 0 = use HC_UPDATE_SIGNATURES directly
#   BUNDLE_LEN        length of the bundle in bytes
#   SIGNATURE_OFFSET  where the signature starts, counted from the label `blobs`
# and appends the bundle and the signature after the code, at `blobs` (keystone's .incbin is
# unusable). The loader starts the guest in long mode with flat identity-mapped memory, so
# RIP-relative addresses are the linear addresses the hypervisor expects.

#include "hvabi.s"

start:
    cld                             # lodsb in print_str walks upwards

.if LOOKUP
    # Step 1: get_vmmcall_number("update_signatures").
    #   RAX = HC_GET_VMMCALL_NUMBER (0)
    #   RBX = linear address of the NUL-terminated name
    # -> RAX = the number the hypervisor registered the service under, or 0 if it has none.
    mov eax, HC_GET_VMMCALL_NUMBER  # writing EAX clears the top half of RAX too
    lea rbx, [rip + name_update]
    vmcall
    test rax, rax
    jz not_found                    # 0: this hypervisor has no update service
.else
    mov eax, HC_UPDATE_SIGNATURES   # trust the fixed number (hv-emu's registration order)
.endif

    # Step 2: update_signatures(bundle, length, signature).
    #   RAX = the number from step 1
    #   RBX = linear address of the bundle
    #   RCX = its length in bytes
    #   RDX = linear address of the detached signature
    # -> RAX = RC_OK (0) if the update was verified and installed, else an RC_* code.
    # `lea reg, [rip + label]` gives the full 64-bit address wherever the image is loaded;
    # `mov rbx, label` would be a sign-extended 32-bit immediate (wrong above 2 GiB) and an
    # absolute address would need `movabs`.
    lea rbx, [rip + bundle]
    mov ecx, BUNDLE_LEN             # zero-extended into RCX
    lea rdx, [rip + signature]
    vmcall

    # Step 3: report. The hypervisor preserved every register but RAX; our print routines
    # clobber RAX, RCX, RDX, RSI and R8 but never RBX, so the code waits in RBX.
    mov rbx, rax
    lea rsi, [rip + msg_rc]
    call print_str                  # "hvupdate: rc="
    mov rax, rbx
    call print_dec                  # "2"
    lea rsi, [rip + msg_open]
    call print_str                  # " ("
    mov rax, rbx
    call print_rc_name              # "BAD_SIGNATURE"
    lea rsi, [rip + msg_close]
    call print_str                  # ")\n"
halt:
    hlt                             # the end: hv-emu stops here
    jmp halt

not_found:
    lea rsi, [rip + msg_not_found]
    call print_str
    jmp halt

name_update:    .asciz "update_signatures"
msg_rc:         .asciz "hvupdate: rc="
msg_open:       .asciz " ("
msg_close:      .asciz ")\n"
msg_not_found:  .asciz "hvupdate: update_signatures not found\n"

#include "print64.s"

# The blobs go last: programs.py appends the bundle here, then the signature SIGNATURE_OFFSET
# bytes further on. Nothing may follow this label.
    .p2align 4
blobs:
.equ bundle, blobs
.equ signature, blobs + SIGNATURE_OFFSET
