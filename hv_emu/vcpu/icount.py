"""How many instructions the last budgeted ``emu_start`` ran: Unicorn's own instruction counter.

Models: the count a VMM reads after a VM exit to charge guest time for what ran (QEMU's
``-icount`` budget, ``icount_decr``; VT-x's preemption-timer value saved at exit). It tells the
run loop exactly why a budgeted entry returned normally: the budget ran out, or the guest
executed HLT (the byte before RIP alone cannot: ``mov al, 0F4h`` ends in the same byte), and how
many instructions an entry ended early by an exit ran, so guest time moves by them.

Follows: docs/UNICORN.md U65. Unicorn 2.1.4 implements ``emu_start(count=N)`` with a code hook
of its own (``uc.c`` ``hook_count_cb``) that adds one to ``uc->emu_counter`` at the start of
every instruction, before the instruction runs, and calls ``uc_emu_stop`` when the counter passes
``uc->emu_count`` (N): a budget that runs out leaves the counter at N + 1 with N instructions
run; any other return leaves it at most N. ``emu_start`` sets the counter to 0. No ``uc_ctl``,
query or hook gives it, so it is read where the engine keeps it: two adjacent ``size_t`` fields
of the engine's ``uc_struct`` (``emu_counter``, then ``emu_count``), found once per process by
running a scratch engine with two known budgets and looking for the pair, never assumed.

Leaves out: builds where the probe does not find the pair (``Counter.offset`` is ``None``; the
run loop then goes back to the byte before RIP, as before, and says so in docs/UNICORN.md U65).

Guest controls: nothing here: the probe runs on a scratch engine with code of our own, and the
read is of the engine's own memory, at an offset checked twice, ``PROBE_SPAN`` bytes at most
from the start of the structure.
"""

from __future__ import annotations

import ctypes
import functools

import unicorn
from unicorn import x86_const

#: How far into ``uc_struct`` the probe looks for the counter (Unicorn 2.1.4 keeps it 1,368 bytes
#: in on x86-64 Linux; the structure goes on for kilobytes after it: 64 ``sigjmp_buf``s alone).
PROBE_SPAN = 2048
#: The two budgets the probe runs: N NOPs each, then a HLT the budget never reaches.
_PROBES = (7, 13)
_WORD = ctypes.sizeof(ctypes.c_size_t)


def _handle(uc: unicorn.Uc) -> int:
    """The address of the engine's ``uc_struct`` (the binding's ``_uch``)."""
    handle = uc._uch  # the binding's handle; no public accessor
    value = handle.value if isinstance(handle, ctypes.c_void_p) else handle
    return int(value or 0)


def _word(address: int) -> int:
    return int(ctypes.c_size_t.from_address(address).value)


@functools.cache
def counter_offset() -> int | None:
    """Where ``emu_counter`` sits in ``uc_struct`` on this Unicorn, or ``None`` if the probe does
    not find it (checked with two budgets: at each, counter = budget + 1 beside count = budget)."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x90" * 32 + b"\xf4")
    base = _handle(uc)
    if base == 0:
        return None
    candidates: set[int] | None = None
    for budget in _PROBES:
        uc.emu_start(0, 2**64 - 1, count=budget)
        if uc.reg_read(x86_const.UC_X86_REG_RIP) != budget:
            return None
        pair = (budget + 1, budget)  # emu_counter, then emu_count
        offsets = range(0, PROBE_SPAN - _WORD, _WORD)
        found = {off for off in offsets if (_word(base + off), _word(base + off + _WORD)) == pair}
        candidates = found if candidates is None else candidates & found
    if not candidates or len(candidates) != 1:
        return None
    return candidates.pop()


class Counter:
    """Reads the instruction counter of one engine after a budgeted ``emu_start``."""

    def __init__(self, uc: unicorn.Uc) -> None:
        offset = counter_offset()
        self.offset = offset
        # A view of the field, made once: each read is then one load (the engine outlives it).
        self._view = None if offset is None else ctypes.c_size_t.from_address(_handle(uc) + offset)

    def ran(self, budget: int) -> tuple[int, bool] | None:
        """After ``emu_start(count=budget)`` returned: how many instructions ran (at most
        ``budget``) and whether the budget ran out; ``None`` when the counter is not found.

        The counter includes an instruction whose start was counted but that a stop requested
        earlier in its translation block kept from running (U65): at most one, the same one in
        every run, so guest time stays deterministic."""
        if self._view is None:
            return None
        counted = int(self._view.value)
        return min(counted, budget), counted > budget
