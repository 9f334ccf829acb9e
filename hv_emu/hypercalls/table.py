"""The hypercall table: VMCALL number -> handler, BitVisor style.

Models: BitVisor's ``vmmcall`` dispatcher (core/vmmcall.c): 128 slots filled in registration order,
slot 0 is ``get_vmmcall_number``, which turns a NUL-terminated name in guest memory into the number
of the function registered under it (0 if none). A number that names no function leaves RAX = 0,
which is also the success code of most functions: guests must resolve a name before calling it.
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hv_emu.errors import ConfigError, GuestFault
from hv_emu.events import EventLog
from hv_emu.exits import Handled, Hypercall
from hv_emu.hypercalls.abi import MAX_NAME, NAMES, SLOTS, Nr, Rc
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_cstring, read_virt, write_virt


@dataclass(frozen=True)
class HypercallContext:
    """What a handler sees of the calling guest: its argument registers and its memory."""

    args: tuple[int, int, int, int, int]  # RBX, RCX, RDX, RSI, RDI
    mode: int
    paging: PagingState
    mem: GuestMemory

    @property
    def rbx(self) -> int:
        return self.args[0]

    @property
    def rcx(self) -> int:
        return self.args[1]

    @property
    def rdx(self) -> int:
        return self.args[2]

    def read(self, va: int, n: int) -> bytes:
        """Copy ``n`` bytes at guest-virtual ``va`` (one copy: parse the result, not the guest)."""
        return read_virt(self.mem, self.paging, va, n)

    def write(self, va: int, data: bytes) -> None:
        write_virt(self.mem, self.paging, va, data)

    def read_name(self, va: int) -> bytes | None:
        """A NUL-terminated name of at most ``MAX_NAME`` bytes with its NUL, or ``None``."""
        return read_cstring(self.mem, self.paging, va, MAX_NAME)


@dataclass(frozen=True)
class HypercallResult:
    """RAX, plus any secondary results (``{"rcx": needed_size}``)."""

    rax: int
    registers: Mapping[str, int] = field(default_factory=dict)


Handler = Callable[[HypercallContext], HypercallResult]


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
        self.register(NAMES[Nr.GET_VMMCALL_NUMBER], self._get_vmmcall_number)

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

    # ------------------------------------------------------------------ slot 0
    def _get_vmmcall_number(self, ctx: HypercallContext) -> HypercallResult:
        """RBX -> NUL-terminated name; RAX <- its number, or 0 if unknown or unreadable."""
        try:
            raw = ctx.read_name(ctx.rbx)
        except GuestFault:
            return HypercallResult(0)
        if raw is None:
            return HypercallResult(0)
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            return HypercallResult(0)
        return HypercallResult(self.number(name) or 0)
