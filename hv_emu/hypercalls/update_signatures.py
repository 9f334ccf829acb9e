"""The hypercall ``update_signatures``: a signed signature-database update handed over by the guest.

Models: the guest-facing end of the update pipeline (verify -> parse -> swap, ``updates/``), the
2012 design's function 2: RBX = update data, RCX = its length, RDX = the detached signature. The
same pipeline also takes updates from the network; this module only fetches the arguments.

Follows: ``docs/ABI.md``, its row of "Functions", and its section "``update_signatures``" (the
order of the checks); the bundle format is ``docs/UPDATE-FORMAT.md``.

Leaves out: updates split over several calls (one VMCALL carries one whole bundle).

Answers at acceptance: the database compiles afterwards, off the vCPU path (``get_status`` says
``db_state: compiling`` meanwhile). With ``--sync-updates`` (``MachineConfig.sync_updates``) it
answers only once the compile is done, so the guest's pause includes the compile.

Guest controls: every argument register and every byte behind them. Nothing is read when RCX
exceeds the cap; the bundle is copied out once (header and body together) and the signature's
length comes from that copy's header, never from a second look at guest memory (no double fetch).
"""

from __future__ import annotations

from collections.abc import Callable

from hv_emu.errors import GuestFault, UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.spec import (
    Handler,
    HypercallContext,
    HypercallResult,
    HypercallServices,
    HypercallSpec,
)
from hv_emu.updates.format import HEADER_SIZE, BundleHeader, signature_length
from hv_emu.updates.service import UpdateService


def update_signatures(service: UpdateService, sync: Callable[[], bool] = lambda: False) -> Handler:
    """The handler of ``update_signatures`` bound to ``service``; when ``sync()`` says so at the
    call (``hv-emu run --sync-updates``), an accepted update is answered only once the compile
    worker is done with it."""

    def handler(ctx: HypercallContext) -> HypercallResult:
        data_va, length, sig_va = ctx.rbx, ctx.rcx, ctx.rdx
        source = "vmcall"
        if length > service.max_size:
            # Refused before a single byte is read or allocated.
            return HypercallResult(
                service.reject(source, Rc.TOO_LARGE, f"length {length} > cap {service.max_size}")
            )
        if length < HEADER_SIZE:
            return HypercallResult(
                service.reject(source, Rc.MALFORMED, f"length {length} < header {HEADER_SIZE}")
            )
        try:
            bundle = ctx.read(data_va, length)  # the one copy of the update data
        except GuestFault as fault:
            return HypercallResult(service.reject(source, Rc.UNREADABLE, f"data: {fault}"))
        try:
            sig_len = signature_length(BundleHeader.from_bytes(bundle[:HEADER_SIZE]).sig_alg)
        except UpdateRejected as bad:
            return HypercallResult(service.reject(source, Rc(bad.code), bad.reason))
        try:
            signature = ctx.read(sig_va, sig_len)
        except GuestFault as fault:
            return HypercallResult(service.reject(source, Rc.UNREADABLE, f"signature: {fault}"))
        return HypercallResult(service.submit(bundle, signature, source, wait=sync()))

    return handler


def _make(services: HypercallServices) -> Handler:
    return update_signatures(services.updates, services.sync_updates)


SPEC = HypercallSpec(
    "update_signatures",
    returns=frozenset({
        Rc.OK, Rc.UNREADABLE, Rc.BAD_SIGNATURE, Rc.MALFORMED, Rc.TOO_LARGE, Rc.STALE_VERSION,
        Rc.UNTRUSTED_KEY, Rc.EXPIRED, Rc.STORAGE_FAILED,
    }),
    make=_make,
)
