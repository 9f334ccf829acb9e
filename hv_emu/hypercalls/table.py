"""The hypercall table: VMCALL number -> handler, BitVisor style.

Models: BitVisor's ``vmmcall`` dispatcher (core/vmmcall.c): 128 slots filled in registration order,
slot 0 is ``get_vmmcall_number`` (``get_vmmcall_number.py``), which turns a NUL-terminated name in
guest memory into the number of the function registered under it (0 if none). The built-in
functions are one module each, listed in ``builtin.py``; what a handler sees and answers is
``spec.py``. A number that names no function leaves RAX = 0, which is also the success code of
most functions: guests must resolve a name before calling it.
A test bench (``hv_emu/testing/__init__.py``) may also put a handler at a number of its choosing.

Follows: ``docs/ABI.md`` (the source of truth) and ``hv_emu/hypercalls/abi.py`` (the same facts
as data).

Leaves out: BitVisor's per-function CPL checks (every function is callable from any ring, as in
BitVisor for all but ``log_set_buf``) and its ``vmmcall_boot`` functions.

Guest controls: RAX (the number) and every argument register. Handlers get the arguments as plain
integers and read guest memory only through ``HypercallContext``, which walks the guest's page
tables and turns every unmapped or out-of-RAM address into ``GuestFault`` (-> ``Rc.UNREADABLE``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hv_emu.errors import ConfigError, GuestFault
from hv_emu.events import EventLog
from hv_emu.exits import Handled, Hypercall
from hv_emu.hypercalls import get_vmmcall_number
from hv_emu.hypercalls.abi import MAX_NAME, SLOTS, Rc
from hv_emu.hypercalls.spec import Handler, HypercallContext, HypercallResult
from hv_emu.memory.guest import GuestMemory


@dataclass(frozen=True)
class _Slot:
    name: str
    handler: Handler


class HypercallTable:
    """128 slots; slot 0 resolves names. ``handle`` turns a ``Hypercall`` exit into registers."""

    def __init__(self, mem: GuestMemory, events: EventLog) -> None:
        self._mem = mem
        self._events = events
        self._slots: list[_Slot | None] = [None] * SLOTS
        self.calls = 0
        # Slot 0 answers from this very table, so the table binds it itself, first, so in slot 0
        # (a bare table, as a test bench builds, resolves names too); the machine registers the
        # rest of BUILTINS, where get_vmmcall_number comes first too.
        slot0 = get_vmmcall_number.SPEC
        self.register(slot0.name, get_vmmcall_number.get_vmmcall_number(self.number), nr=0)

    # ------------------------------------------------------------------ registration
    def register(self, name: str, handler: Handler, *, nr: int | None = None) -> int:
        """Put ``handler`` under ``name`` in slot ``nr``, or in the next free slot (BitVisor's
        way) when ``nr`` is None; return its number."""
        if not name or len(name.encode()) >= MAX_NAME:
            raise ConfigError(f"hypercall name {name!r} must be 1..{MAX_NAME - 1} bytes")
        if self.number(name) is not None:
            raise ConfigError(f"hypercall {name!r} is registered already")
        if nr is not None:
            if not 0 <= nr < SLOTS:
                raise ConfigError(f"hypercall number {nr} is outside the table (0..{SLOTS - 1})")
            taken = self._slots[nr]
            if taken is not None:
                raise ConfigError(f"hypercall number {nr} is taken by {taken.name!r}")
            self._slots[nr] = _Slot(name, handler)
            return nr
        for nr, slot in enumerate(self._slots):
            if slot is None:
                self._slots[nr] = _Slot(name, handler)
                return nr
        raise ConfigError(f"all {SLOTS} hypercall slots are taken; cannot register {name!r}")

    def number(self, name: str) -> int | None:
        for nr, slot in enumerate(self._slots):
            if slot is not None and slot.name == name:
                return nr
        return None

    def name(self, nr: int) -> str | None:
        slot = self._slots[nr] if 0 <= nr < SLOTS else None
        return slot.name if slot is not None else None

    def names(self) -> dict[int, str]:
        return {nr: slot.name for nr, slot in enumerate(self._slots) if slot is not None}

    # ------------------------------------------------------------------ dispatch
    def handle(self, exit_: Hypercall) -> Handled:
        """Run the handler for ``exit_.nr``; an unknown number leaves RAX = 0 (BitVisor)."""
        self.calls += 1
        slot = self._slots[exit_.nr] if 0 <= exit_.nr < SLOTS else None
        if slot is None:
            result = HypercallResult(0)
        else:
            ctx = HypercallContext(exit_.args, exit_.mode, exit_.paging, self._mem)
            try:
                result = slot.handler(ctx)
            except GuestFault:
                # A handler that let a guest fault escape still answers the guest, never crashes.
                result = HypercallResult(Rc.UNREADABLE)
        self._events.emit(
            "hypercall",
            nr=exit_.nr,
            name=slot.name if slot else None,
            args=[exit_.args[0], exit_.args[1], exit_.args[2]],
            ret=result.rax,
        )
        return Handled(registers={"rax": result.rax, **result.registers})
