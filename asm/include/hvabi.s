# hvabi.s - hv-emu's hypercall ABI as assembler constants.
#
# The same numbers as hv_emu/hypercalls/abi.py; tests/guest_tool/test_programs.py checks that they
# agree, and docs/ABI.md describes them. Only .equ lines here: this file emits no bytes, so it can
# be included at the top of any program.
#
# The hypercall numbers and the I/O ports are not here. HC_GET_VMMCALL_NUMBER, HC_GET_STATUS,
# HC_UPDATE_SIGNATURES... are generated from the built-in table, hv_emu/hypercalls/builtin.py (a
# hypercall's number is its position in BUILTINS), as Linux generates unistd_64.h from
# syscall_64.tbl; DEBUGCON_PORT (the Bochs/QEMU debug console: bytes written there appear on
# hv-emu's standard output), NIC_PORT, ATA_PORT, ATA_CTRL_PORT and BM_PORT from hv_emu/layout.py,
# the one home of port numbers. guest_tool puts these .equ lines in front of every program it
# assembles (guest_tool.programs.generated_prelude), and so does hv_emu.testing's run_asm. Each
# is defined exactly once.
#
# The convention (BitVisor's vmmcall, extended):
#   VMCALL (0f 01 c1) traps to the hypervisor; on an AMD CPU (hv-emu run --cpu amd) VMMCALL
#   (0f 01 d9) does, and VMCALL raises #UD.
#   RAX = hypercall number; arguments in RBX, RCX, RDX, RSI, RDI (EAX, EBX, ... in 16/32-bit code).
#   The result comes back in RAX; every other register is preserved.
#   Addresses are guest linear addresses (real mode: segment * 16 + offset).
#   An unknown number leaves RAX = 0, so resolve names with get_vmmcall_number first.

# Return codes in RAX (hv_emu.hypercalls.abi.Rc).
.equ RC_OK, 0                   # done (also what an unknown hypercall leaves in RAX)
.equ RC_UNREADABLE, 1           # a guest address is not mapped or not in RAM; get_status:
                                # the buffer is too small or not writable (BitVisor's 1)
.equ RC_BAD_SIGNATURE, 2        # the detached signature does not verify
.equ RC_MALFORMED, 3            # the bundle's header or signature database does not parse
.equ RC_TOO_LARGE, 4            # RCX is above the hypervisor's cap; nothing was read
.equ RC_STALE_VERSION, 5        # not newer than the installed database, or too far ahead of it
.equ RC_UNTRUSTED_KEY, 6        # unknown key id, or the wrong algorithm for that key
.equ RC_EXPIRED, 7              # past its expiry time, or issued in the future
.equ RC_BUFFER_TOO_SMALL, 8     # retired (ABI version 1's get_status); returned by nothing
.equ RC_STORAGE_FAILED, 9       # update_signatures: verified, but could not be persisted

# Longest name get_vmmcall_number reads, including the NUL (hv_emu.hypercalls.abi.MAX_NAME).
.equ MAX_NAME, 256
