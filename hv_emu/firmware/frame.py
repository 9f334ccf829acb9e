"""A firmware call's registers, and the reply that goes back to the caller.

Models: the register frame of a real-mode BIOS call as SeaBIOS's ``struct bregs`` gives it to a
service: AX..DI (with their 8-bit halves and the 32-bit forms E820 needs), DS, ES, SS, and the
caller's FLAGS image. A service reads and sets registers by name; ``Reply`` carries only the
changed registers, and the FLAGS the caller gets back: its own image (at SS:SP+4, where
``INT n`` or ``pushf; call far`` put it) with CF and ZF as the service says, since the stub
returns with ``retf 2`` (docs/DEVICES.md, the firmware).

Follows: Ralf Brown's Interrupt List conventions (CF=1 and AH = status on error); SeaBIOS
``src/bregs.h`` (``set_cf``, ``set_success``, ``set_code_*``).

Leaves out: segment registers as outputs (no service here returns one: an ES:DI answer is only
for floppies, which are left out).

Guest controls: every value here; a name outside the table is a host bug (``KeyError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hv_emu.memory.guest import GuestMemory

CF = 0x0001
ZF = 0x0040

#: register name -> (64-bit register, shift, width in bits)
_FIELDS = {
    **{f"e{r}x": (f"r{r}x", 0, 32) for r in "abcd"},
    **{f"{r}x": (f"r{r}x", 0, 16) for r in "abcd"},
    **{f"{r}h": (f"r{r}x", 8, 8) for r in "abcd"},
    **{f"{r}l": (f"r{r}x", 0, 8) for r in "abcd"},
    "esi": ("rsi", 0, 32), "edi": ("rdi", 0, 32), "si": ("rsi", 0, 16), "di": ("rdi", 0, 16),
    "bp": ("rbp", 0, 16), "sp": ("rsp", 0, 16),
    "ds": ("ds", 0, 16), "es": ("es", 0, 16), "ss": ("ss", 0, 16),
}  # fmt: skip


class Regs:
    """The registers of one call, readable and settable by their 8/16/32-bit names."""

    def __init__(self, registers: Mapping[str, int]) -> None:
        self._values = dict(registers)
        self.changed: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        reg, shift, bits = _FIELDS[name]
        return (self._values.get(reg, 0) >> shift) & ((1 << bits) - 1)

    def __setitem__(self, name: str, value: int) -> None:
        reg, shift, bits = _FIELDS[name]
        mask = ((1 << bits) - 1) << shift
        new = (self._values.get(reg, 0) & ~mask) | ((value << shift) & mask)
        self._values[reg] = self.changed[reg] = new & 0xFFFFFFFF

    def linear(self, segment: str, offset: str) -> int:
        """The linear address segment:offset (real mode: segment * 16 + offset)."""
        return (self[segment] << 4) + self[offset]


@dataclass(frozen=True)
class Reply:
    """What a service answers: registers to write, CF and ZF (``None``: the caller's own), or
    ``stop``: end the run with this reason instead (int 16h waiting for a key that never comes).
    ``jump``: the stub's own far jump runs next (int 19h), so nothing is returned."""

    registers: Mapping[str, int] = field(default_factory=dict)
    cf: bool | None = None
    zf: bool | None = None
    stop: str | None = None


def ok(regs: Regs, *, zf: bool | None = None) -> Reply:
    """Success: the changed registers, CF clear."""
    return Reply(regs.changed, cf=False, zf=zf)


def fail(regs: Regs, status: int) -> Reply:
    """Failure: AH = ``status``, CF set (Ralf Brown's convention for every service here)."""
    regs["ah"] = status
    return Reply(regs.changed, cf=True)


def returned_flags(mem: GuestMemory, registers: Mapping[str, int], reply: Reply) -> int:
    """The FLAGS the caller sees after the stub's ``retf 2``: its own image from SS:SP+4 (the
    live FLAGS if the stack is outside RAM), with CF and ZF as the reply sets them."""
    at = ((registers.get("ss", 0) & 0xFFFF) << 4) + ((registers.get("rsp", 0) + 4) & 0xFFFF)
    live = registers.get("rflags", 0x2) & 0xFFFF
    flags = mem.read_u16(at) if mem.contains(at, 2) else live
    for bit, value in ((CF, reply.cf), (ZF, reply.zf)):
        if value is not None:
            flags = flags | bit if value else flags & ~bit
    return flags | 0x2  # bit 1 always reads 1
