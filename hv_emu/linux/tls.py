"""i386 thread-local storage: ``struct user_desc`` and the three TLS slots of the GDT.

Models: what ``set_thread_area``/``get_thread_area`` do in an i386 kernel. A 32-bit C library
describes a data segment (base = its thread control block) in a 16-byte ``struct user_desc``; the
kernel checks it, turns it into an 8-byte segment descriptor with DPL 3 and the accessed bit set,
and keeps it in one of three per-thread slots that it copies into GDT entries 6-8
(``GDT_ENTRY_TLS_MIN``); ``entry_number = -1`` asks for the first empty slot and gets its number
written back. The library then loads ``%gs`` with ``(entry << 3) | 3`` itself, and the CPU reads
the descriptor from the GDT. ``TlsSlots`` keeps the slots (the kernel's ``thread.tls_array``: the
copy the personality trusts, never read back from guest memory) and writes each change into the
guest's GDT.

Follows: Linux ``arch/x86/kernel/tls.c`` (``get_free_idx``, ``tls_desc_okay``, ``set_tls_desc``,
``do_set_thread_area``, ``do_get_thread_area``), ``arch/x86/include/asm/desc.h`` (``fill_ldt``,
``LDT_empty``, ``LDT_zero``), ``arch/x86/include/uapi/asm/ldt.h`` (``struct user_desc``) and
Intel SDM vol. 3A 3.4.5 (segment descriptor format). docs/ELF.md "i386 thread-local storage".

Leaves out: ``modify_ldt`` and the LDT, the ``lm`` bit (an i386 kernel has none: it is ignored
and reads back 0), more than one thread.

Guest controls: all 16 bytes of a ``user_desc`` (``UserDesc.from_bytes`` accepts any 16 bytes and
raises only ``GuestFault`` on a wrong length), and the slot number; a refusal is an errno. The
guest can also rewrite its GDT directly (it runs at CPL 0); the slots here do not depend on that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hv_emu.errors import GuestFault
from hv_emu.linux.files import SyscallError
from hv_emu.linux.numbers import (
    GDT_ENTRY_TLS_ENTRIES,
    GDT_ENTRY_TLS_MAX,
    GDT_ENTRY_TLS_MIN,
    Errno,
)
from hv_emu.memory.guest import GuestMemory

#: ``struct user_desc``: entry_number, base_addr, limit (u32 each), then a u32 of bit fields.
USER_DESC = struct.Struct("<IIII")

# The bit fields of user_desc's fourth word (ldt.h).
_SEG_32BIT, _CONTENTS_SHIFT, _READ_EXEC_ONLY = 1 << 0, 1, 1 << 3
_LIMIT_IN_PAGES, _SEG_NOT_PRESENT, _USEABLE = 1 << 4, 1 << 5, 1 << 6


@dataclass(frozen=True)
class UserDesc:
    """One ``struct user_desc`` (``entry_number`` as the u32 it is: -1 reads 0xFFFFFFFF)."""

    entry_number: int
    base_addr: int
    limit: int
    seg_32bit: bool = False
    contents: int = 0
    read_exec_only: bool = False
    limit_in_pages: bool = False
    seg_not_present: bool = False
    useable: bool = False

    @classmethod
    def from_bytes(cls, data: bytes) -> UserDesc:
        """Parse 16 guest bytes; any value of each field is representable (checks come later)."""
        if len(data) != USER_DESC.size:
            raise GuestFault(f"struct user_desc is {USER_DESC.size} bytes, not {len(data)}")
        entry, base, limit, flags = USER_DESC.unpack(data)
        return cls(entry, base, limit, bool(flags & _SEG_32BIT),
                   (flags >> _CONTENTS_SHIFT) & 3, bool(flags & _READ_EXEC_ONLY),
                   bool(flags & _LIMIT_IN_PAGES), bool(flags & _SEG_NOT_PRESENT),
                   bool(flags & _USEABLE))  # fmt: skip

    def to_bytes(self) -> bytes:
        flags = ((_SEG_32BIT if self.seg_32bit else 0) | self.contents << _CONTENTS_SHIFT
                 | (_READ_EXEC_ONLY if self.read_exec_only else 0)
                 | (_LIMIT_IN_PAGES if self.limit_in_pages else 0)
                 | (_SEG_NOT_PRESENT if self.seg_not_present else 0)
                 | (_USEABLE if self.useable else 0))  # fmt: skip
        return USER_DESC.pack(self.entry_number & 0xFFFFFFFF, self.base_addr, self.limit, flags)

    @property
    def clears(self) -> bool:
        """``LDT_empty`` or ``LDT_zero``: the caller asks for "no segment" (the slot is cleared)."""
        blank = self.base_addr == 0 and self.limit == 0 and self.contents == 0 \
            and not self.seg_32bit and not self.limit_in_pages and not self.useable
        empty = self.read_exec_only and self.seg_not_present
        zero = not self.read_exec_only and not self.seg_not_present
        return blank and (empty or zero)

    @property
    def acceptable(self) -> bool:
        """``tls_desc_okay``: "no segment", or a present 32-bit data segment."""
        if self.clears:
            return True
        return self.seg_32bit and self.contents <= 1 and not self.seg_not_present

    def descriptor(self) -> int:
        """``fill_ldt``: the 8-byte GDT descriptor (S = 1, DPL 3, accessed bit set, L = 0), or 0
        for "no segment"."""
        if self.clears:
            return 0
        kind = (0 if self.read_exec_only else 2) | self.contents << 2 | 1  # type, A set
        access = kind | 0x10 | 3 << 5 | (0 if self.seg_not_present else 0x80)  # S, DPL 3, P
        flags = (0x1 if self.useable else 0) | (0x4 if self.seg_32bit else 0) \
            | (0x8 if self.limit_in_pages else 0)  # AVL, D/B, G
        base, limit = self.base_addr, self.limit
        return ((limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40
                | (limit >> 16 & 0xF) << 48 | flags << 52 | (base >> 24 & 0xFF) << 56)  # fmt: skip

    @classmethod
    def from_descriptor(cls, entry: int, desc: int) -> UserDesc:
        """``fill_user_desc``: what ``get_thread_area`` reports for a slot's descriptor."""
        access, flags = desc >> 40 & 0xFF, desc >> 52 & 0xF
        base = (desc >> 16 & 0xFFFFFF) | (desc >> 56 & 0xFF) << 24
        limit = (desc & 0xFFFF) | (desc >> 48 & 0xF) << 16
        return cls(entry, base, limit, bool(flags & 0x4), access >> 2 & 3, not access & 2,
                   bool(flags & 0x8), not access & 0x80, bool(flags & 0x1))  # fmt: skip


def selector(entry: int) -> int:
    """The selector a C library loads for GDT entry ``entry``: index, GDT, RPL 3."""
    return entry << 3 | 3


class TlsSlots:
    """The three TLS slots of the one thread, mirrored into the guest's GDT at ``gdt``
    (guest-physical; the GDT must reach entry ``GDT_ENTRY_TLS_MAX``)."""

    def __init__(self, mem: GuestMemory, gdt: int) -> None:
        self.mem = mem
        self.gdt = gdt
        self.slots = [0] * GDT_ENTRY_TLS_ENTRIES

    def choose(self, info: UserDesc) -> int:
        """The first half of ``set_thread_area``: check ``info`` and return its entry number,
        ``info.entry_number`` or, if that is -1, the first empty slot's (the caller writes it
        back into the guest's ``user_desc`` before ``install``, as Linux does)."""
        if not info.acceptable:
            raise SyscallError(Errno.EINVAL, "only present 32-bit data segments (or none)")
        entry = info.entry_number
        if entry == 0xFFFFFFFF:
            free = [i for i, desc in enumerate(self.slots) if desc == 0]
            if not free:
                raise SyscallError(Errno.ESRCH, "all three TLS slots are in use")
            entry = GDT_ENTRY_TLS_MIN + free[0]
        if not GDT_ENTRY_TLS_MIN <= entry <= GDT_ENTRY_TLS_MAX:
            raise SyscallError(Errno.EINVAL, f"entry {entry} is not a TLS slot "
                               f"({GDT_ENTRY_TLS_MIN}-{GDT_ENTRY_TLS_MAX})")  # fmt: skip
        return entry

    def install(self, entry: int, info: UserDesc) -> int:
        """The second half: put ``info``'s descriptor in slot ``entry`` (from ``choose``) and in
        the guest's GDT; returns the segment base it describes."""
        desc = info.descriptor()
        self.slots[entry - GDT_ENTRY_TLS_MIN] = desc
        self.mem.write(self.gdt + 8 * entry, desc.to_bytes(8, "little"))
        return UserDesc.from_descriptor(entry, desc).base_addr

    def get(self, entry: int) -> UserDesc:
        """``get_thread_area``: the slot ``entry`` as a ``user_desc``."""
        if not GDT_ENTRY_TLS_MIN <= entry <= GDT_ENTRY_TLS_MAX:
            raise SyscallError(Errno.EINVAL, f"entry {entry} is not a TLS slot")
        # An empty slot (0) reads back as LDT_empty: read_exec_only, not present.
        return UserDesc.from_descriptor(entry, self.slots[entry - GDT_ENTRY_TLS_MIN])
