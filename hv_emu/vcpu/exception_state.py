"""The exception in flight: the CPU's memory of the last exception, forgotten once it is delivered.

The one place that knows where that memory is and how to clear it: the run loop before each
entry (``forget_exception``), the Linux personality's signals (``exceptions.py``) and event
injection through the guest's IVT/IDT (``hidden.HiddenState.forget_exception``, on the context it
is editing anyway) all clear it here (``forget_in_context``).

Models: the part of the x86 exception logic that turns a second fault into a double fault (Intel
SDM vol. 3A 6.15, interrupt 8: a contributory exception or a page fault while delivering a
contributory exception or a page fault is #DF). QEMU keeps it as ``old_exception`` and clears it
once the exception has been delivered through the IDT; Unicorn 2.1.4 calls the interrupt hook
instead of delivering and never clears it, so after a hook handled a #PF, #DE or #GP the next one
of those, however much later and in whichever ``emu_start``, arrives as #DF (docs/UNICORN.md U61).
An OS personality that handles exceptions (the Linux personality's signals) therefore tells the
CPU the exception was delivered, as the IDT delivery would have.

Follows: docs/UNICORN.md U61: the field is part of the CPU context ``uc_context_save`` copies;
its offset is found once per process by raising two #DE in a scratch engine (the field goes
-1, 0, 8: exactly one 32-bit slot of the context does that), and cleared by patching a saved
context and restoring it (about 3 µs).

Leaves out: the rest of the double-fault logic (a handler that faults inside the delivery itself
is the personality's business: it kills the process as Linux would).

Guest controls: nothing; the scratch engine runs fixed code, and the guest's CPU context is saved
and restored unchanged apart from that one field.
"""

from __future__ import annotations

import ctypes
import struct
from functools import cache

import unicorn
from unicorn import x86_const as X

_CODE = bytes.fromhex("f7f1f7f1f4")  # div ecx; div ecx; hlt (ECX = 0: two #DE)
_NONE = struct.pack("<i", -1)


@cache
def in_flight_offset() -> int | None:
    """The byte offset of the exception-in-flight field in a saved context, or ``None`` if this
    Unicorn does not behave as docs/UNICORN.md U61 says (then nothing is cleared)."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_write(0x1000, _CODE)
    snapshots = [bytes(uc.context_save())]
    vectors: list[int] = []

    def hook(engine: unicorn.Uc, vector: int, _ud: object) -> None:
        vectors.append(vector)
        snapshots.append(bytes(engine.context_save()))
        engine.reg_write(X.UC_X86_REG_RIP, engine.reg_read(X.UC_X86_REG_RIP) + 2)
        engine.emu_stop()

    uc.hook_add(unicorn.UC_HOOK_INTR, hook)
    for start in (0x1000, 0x1002):
        uc.emu_start(start, 0x1000 + len(_CODE))
    if vectors != [0, 8] or len(snapshots) != 3:
        return None
    wanted = [-1, 0, 8]  # none; #DE in flight; the second #DE made a #DF
    found = [offset for offset in range(0, len(snapshots[0]) - 3, 4)
             if [struct.unpack_from("<i", s, offset)[0] for s in snapshots] == wanted]  # fmt: skip
    return found[0] if len(found) == 1 else None


def forget_in_context(address: int | None, size: int) -> bool:
    """Mark the exception in flight as delivered in a saved context of ``size`` bytes at
    ``address`` (U61: the field set to -1); False if the field is unknown (nothing written)."""
    offset = in_flight_offset()
    if address is None or offset is None or offset + 4 > size:
        return False
    ctypes.memmove(address + offset, _NONE, 4)
    return True


def forget_exception(uc: unicorn.Uc) -> bool:
    """Mark ``uc``'s exception in flight as delivered (U61): its context saved, the field
    cleared there, the context restored; False if the field is unknown."""
    context = uc.context_save()
    if not forget_in_context(ctypes.cast(context.context, ctypes.c_void_p).value, context.size):
        return False
    uc.context_restore(context)
    return True
