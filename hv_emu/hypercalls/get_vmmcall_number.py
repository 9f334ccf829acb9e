"""Hypercall 0, ``get_vmmcall_number``: a function's name in guest memory -> its number.

Models: BitVisor's ``get_vmmcall_number`` (core/vmmcall.c), the one function every table holds
from birth: RBX points to a NUL-terminated name; RAX returns the number of the function registered
under it, or 0 if there is none. 0 is the lookup function itself, so a result of 0 can only mean
"not provided". Because it answers from the table it lives in, ``HypercallTable`` binds it to
itself when it is built (``SPEC.make`` is ``None``), which also gives a bare table (a test bench)
name lookup.

Follows: ``docs/ABI.md``, "Functions", row 0.

Leaves out: nothing of BitVisor's function; names are ASCII here (BitVisor compares bytes).

Guest controls: RBX and the bytes behind it. At most ``MAX_NAME`` bytes are read, with the NUL; a
name that is unterminated within them, runs into unmapped memory or out of RAM, or is not ASCII
returns 0, never a fault.
"""

from __future__ import annotations

from collections.abc import Callable

from hv_emu.errors import GuestFault
from hv_emu.hypercalls.spec import Handler, HypercallContext, HypercallResult, HypercallSpec

SPEC = HypercallSpec("get_vmmcall_number", returns=frozenset(), make=None)


def get_vmmcall_number(number: Callable[[str], int | None]) -> Handler:
    """The handler of ``get_vmmcall_number`` answering from ``number`` (a table's name lookup)."""

    def handler(ctx: HypercallContext) -> HypercallResult:
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
        return HypercallResult(number(name) or 0)

    return handler
