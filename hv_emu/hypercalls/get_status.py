"""The hypercall ``get_status``: the hypervisor's status text, copied into a guest buffer.

Models: BitVisor's ``get_status`` service exactly (``core/vmmcall_status.c``, read at commit
66559d6; vmmstatus-gtk and vmmstatus-win32 are its agents): RBX = buffer, RCX = its size. The
text is UTF-8, one ``key: value`` per line; the machine supplies it (``Machine.status_text``):
``db_version`` is the newest accepted database, ``db_active_version`` the one scanning disk writes,
``db_state`` how far the accepted one got (``UpdateService.status``).

BitVisor's behaviour, which this handler reproduces (docs/ABI.md, "``get_status``"):

- RCX is set to the text's length **without** a terminating NUL, always, success or failure;
- the text is copied only if that length is at most the size in RCX (a buffer of exactly the
  text's length is enough), and **no NUL is written**: the caller terminates it (vmmstatus passes
  its buffer's size minus one and stores the NUL at the returned RCX);
- RAX = 0 after a complete copy; RAX = 1 if the buffer is too small (nothing written) or a byte of
  it cannot be written (the bytes before it stay written). BitVisor has no other value, so here
  1 is ``Rc.UNREADABLE``, and ``Rc.BUFFER_TOO_SMALL`` is never returned (its value 8 is retired).

Follows: ``docs/ABI.md``, its row of "Functions", and its section "``get_status``".

Leaves out: BitVisor's ``config.vmm.status`` switch (with status disabled BitVisor returns without
touching RAX or RCX; hv-emu's status is always on), its spinlock (one vCPU).

Guest controls: RBX and RCX. Nothing is written when RCX is too small; a buffer that is unmapped,
read-only under CR0.WP, or outside RAM stops the copy at the first page it cannot write, as
BitVisor's byte-by-byte copy stops at the first byte it cannot write.
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
from hv_emu.layout import PAGE_SIZE


def get_status(status_text: Callable[[], str]) -> Handler:
    """The handler of ``get_status``: RBX = buffer, RCX = its size, as BitVisor's.

    Returns RCX = the text's length (no NUL) in every case; RAX = ``OK`` once the whole text is
    written (without a NUL), else 1 (``UNREADABLE``): the buffer is smaller than the text
    (nothing written) or part of it cannot be written (what precedes that part is written).
    """

    def handler(ctx: HypercallContext) -> HypercallResult:
        text = status_text().encode("utf-8")
        length = {"rcx": len(text)}
        if ctx.rcx < len(text):
            return HypercallResult(Rc.UNREADABLE, length)
        done = 0
        while done < len(text):  # page by page: a fault keeps what came before it
            piece = min(PAGE_SIZE - (ctx.rbx + done) % PAGE_SIZE, len(text) - done)
            try:
                ctx.write(ctx.rbx + done, text[done : done + piece])
            except GuestFault:
                return HypercallResult(Rc.UNREADABLE, length)
            done += piece
        return HypercallResult(Rc.OK, length)

    return handler


def _make(services: HypercallServices) -> Handler:
    return get_status(services.status_text)


SPEC = HypercallSpec(
    "get_status",
    returns=frozenset({Rc.OK, Rc.UNREADABLE}),
    make=_make,
)
