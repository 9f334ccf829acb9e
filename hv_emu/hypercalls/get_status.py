"""The hypercall ``get_status``: the hypervisor's status text, copied into a guest buffer.

Models: BitVisor's ``get_status`` service (status text for vmmstatus-style agents): RBX = buffer,
RCX = its size. The text is UTF-8, one ``key: value`` per line, with a terminating NUL; the machine
supplies it (``Machine.status_text``): ``db_version`` is the newest accepted database,
``db_active_version`` the one scanning disk writes, ``db_state`` how far the accepted one got
(``UpdateService.status``).

Follows: ``docs/ABI.md``, its row of "Functions", and its section "``get_status``".

Leaves out: partial copies (a buffer too small gets nothing, only the size needed).

Guest controls: RBX and RCX. Nothing is written when RCX is too small; a buffer that is unmapped
or outside RAM returns ``UNREADABLE`` (a write may stop part way, as a guest's own would).
"""

from __future__ import annotations

from collections.abc import Callable

from hv_emu.errors import GuestFault
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.spec import (
    Handler,
    HypercallContext,
    HypercallResult,
    HypercallServices,
    HypercallSpec,
)


def get_status(status_text: Callable[[], str]) -> Handler:
    """The handler of ``get_status``: RBX = buffer, RCX = its size.

    Writes the status text with a terminating NUL and returns OK with RCX = bytes written; if the
    buffer is too small, writes nothing and returns BUFFER_TOO_SMALL with RCX = the size needed.
    """

    def handler(ctx: HypercallContext) -> HypercallResult:
        text = status_text().encode("utf-8") + b"\0"
        if ctx.rcx < len(text):
            return HypercallResult(Rc.BUFFER_TOO_SMALL, {"rcx": len(text)})
        try:
            ctx.write(ctx.rbx, text)
        except GuestFault:
            return HypercallResult(Rc.UNREADABLE)
        return HypercallResult(Rc.OK, {"rcx": len(text)})

    return handler


def _make(services: HypercallServices) -> Handler:
    return get_status(services.status_text)


SPEC = HypercallSpec(
    "get_status",
    returns=frozenset({Rc.OK, Rc.BUFFER_TOO_SMALL, Rc.UNREADABLE}),
    make=_make,
)
