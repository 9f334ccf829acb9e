# hvabi.s - hv-emu's hypercall ABI as assembler constants.
#
# The same numbers as hv_emu/hypercalls/abi.py and hv_emu/layout.py; tests/guest_tool/test_programs.py checks that they
# agree, and docs/ABI.md describes them. Only .equ lines here: this file emits no bytes, so it can
# be included at the top of any program.
#
# The convention (BitVisor's vmmcall, extended):
#   VMCALL (0f 01 c1) traps to the hypervisor.
#   RAX = hypercall number; arguments in RBX, RCX, RDX, RSI, RDI (EAX, EBX, ... in 16/32-bit code).
#   The result comes back in RAX; every other register is preserved.
#   Addresses are guest linear addresses (real mode: segment * 16 + offset).
#   An unknown number leaves RAX = 0, so resolve names with get_vmmcall_number first.

# Hypercall numbers (hv_emu.hypercalls.abi.Nr), in the hypervisor's registration order.
.equ HC_GET_VMMCALL_NUMBER, 0   # RBX = address of a NUL-terminated name -> RAX = number or 0
.equ HC_GET_STATUS, 1           # RBX = buffer, RCX = its size -> RAX = RC_*, text in the buffer
.equ HC_UPDATE_SIGNATURES, 2    # RBX = bundle, RCX = its length, RDX = signature -> RAX = RC_*

# Return codes in RAX (hv_emu.hypercalls.abi.Rc).
.equ RC_OK, 0                   # done (also what an unknown hypercall leaves in RAX)
.equ RC_UNREADABLE, 1           # a guest address is not mapped or not in RAM
.equ RC_BAD_SIGNATURE, 2        # the detached signature does not verify
.equ RC_MALFORMED, 3            # the bundle's header or signature database does not parse
.equ RC_TOO_LARGE, 4            # RCX is above the hypervisor's cap; nothing was read
.equ RC_STALE_VERSION, 5        # not newer than the installed database (rollback or replay)
.equ RC_UNTRUSTED_KEY, 6        # unknown key id, or the wrong algorithm for that key
.equ RC_EXPIRED, 7              # past its expiry time, or issued in the future
.equ RC_BUFFER_TOO_SMALL, 8     # get_status: RCX returns the size needed
.equ RC_STORAGE_FAILED, 9       # update_signatures: verified, but could not be persisted

# Longest name get_vmmcall_number reads, including the NUL (hv_emu.hypercalls.abi.MAX_NAME).
.equ MAX_NAME, 256

# The Bochs/QEMU debug console: bytes written here appear on hv-emu's standard output
# (hv_emu.layout.PORT_DEBUGCON).
.equ DEBUGCON_PORT, 0xe9
