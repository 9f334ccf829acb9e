"""The hypercall ABI as plain data: the instruction, registers, limits and return codes.

Models: the guest-visible contract of hv-emu's VMCALL interface, shared by the hypervisor (one
module per built-in hypercall, listed in ``builtin.py``), the guest tool (``guest_tool``) and the
assembly in ``asm/``.

Follows: BitVisor's ``vmmcall`` convention (core/vmmcall.c; VMCALL on Intel, VMMCALL on AMD, the
host vendor's only): a 128-slot table filled in registration
order, slot 0 ``get_vmmcall_number`` resolving a name to a number, the function number in RAX and
arguments in RBX, RCX, then RDX/RSI/RDI; return value in RAX; an unknown number leaves RAX = 0.
``docs/ABI.md`` is the source of truth; ``tests/docs/test_abi_doc.py`` keeps this file, the built-in
modules (``builtin.BUILTINS``), the live table, the doc and ``asm/`` in agreement. The functions'
numbers are not here: a built-in's number is its position in ``builtin.BUILTINS``
(``builtin.NUMBERS`` maps names to them). This file cannot derive them, because ``updates/``
imports it and the handlers that ``BUILTINS`` lists import ``updates/``.

Leaves out: BitVisor's other services (``dbgsh``, ``log_set_buf``, ``loadcfg``...).

Guest controls: every register value at the VMCALL; nothing in this table.
"""

from __future__ import annotations

from enum import IntEnum

#: The VMCALL instruction (Intel SDM vol. 3C, 25.1.3 / 31.3: ``0F 01 C1``).
VMCALL_BYTES = b"\x0f\x01\xc1"
#: The VMMCALL instruction (AMD APM vol. 3, "VMMCALL": ``0F 01 D9``), AMD's hypercall.
VMMCALL_BYTES = b"\x0f\x01\xd9"
#: The hypercall instruction of each CPU vendor hv-emu can present (``hv-emu run --cpu``), as
#: BitVisor intercepts VMCALL under VT-x and VMMCALL under SVM; the other vendor's raises #UD.
#: Both are three bytes long.
HYPERCALL_INSTRUCTIONS = {"intel": VMCALL_BYTES, "amd": VMMCALL_BYTES}
#: The vendors, the default first (``MachineConfig.cpu``).
CPU_VENDORS = tuple(HYPERCALL_INSTRUCTIONS)
#: Slots in the hypercall table (BitVisor's ``NFUNCS``).
SLOTS = 128
#: Longest name ``get_vmmcall_number`` reads, including the terminating NUL (BitVisor: 256).
MAX_NAME = 256
#: Largest update ``update_signatures`` accepts by default (``hv-emu run --max-update`` changes it).
DEFAULT_MAX_UPDATE = 16 * 1024 * 1024


class Rc(IntEnum):
    """Return codes in RAX. 0 is success (and also what an unknown hypercall leaves in RAX)."""

    OK = 0
    #: A guest address (data, signature, name or buffer) is not mapped or not in RAM (BitVisor's 1).
    #: From ``get_status`` it is BitVisor's one failure value: the buffer is too small (RCX returns
    #: the text's length) or cannot be written.
    UNREADABLE = 1
    #: The detached signature does not verify.
    BAD_SIGNATURE = 2
    #: The update's header or its signature database does not parse.
    MALFORMED = 3
    #: The length in RCX is larger than the configured cap; nothing was read.
    TOO_LARGE = 4
    #: The update's version is not one accepted next: not greater than the installed one (rollback
    #: or replay), or beyond the version window (a jump, a reserved version: docs/UPDATE-FORMAT.md).
    STALE_VERSION = 5
    #: The key id is not trusted, or the algorithm is not the one that key is bound to.
    UNTRUSTED_KEY = 6
    #: The update's expiry time has passed (freeze attack), or it was issued in the future.
    EXPIRED = 7
    #: Retired: ABI version 1's ``get_status`` answered a short buffer with it. No function returns
    #: it since version 2 (``get_status`` gives BitVisor's 1); the value is kept, never reused.
    BUFFER_TOO_SMALL = 8
    #: The hypervisor could not persist the update (its state directory: a full disk, a refused
    #: entry); nothing was installed, the database in force stays. Not the guest's fault.
    STORAGE_FAILED = 9


#: Registers, in order, that carry the number and the arguments (64-bit names; 16- and 32-bit
#: guests use the low 32 bits: EAX, EBX, ECX, EDX, ESI, EDI).
ARG_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")

