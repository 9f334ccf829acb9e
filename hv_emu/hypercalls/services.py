"""The hypercalls hv-emu offers its guest: ``get_status`` and ``update_signatures``.

Models: the guest-facing end of two hypervisor services. Each handler reads its arguments from the
guest exactly once, bounds every length before it allocates, and answers with a code from
``abi.Rc``.

Follows: ``docs/ABI.md``. ``get_status`` imitates BitVisor's ``get_status`` service (RBX = buffer,
RCX = size; status text for vmmstatus-style agents). ``update_signatures`` is the 2012 design's
function 2: RBX = update data, RCX = its length, RDX = the detached signature.

Leaves out: BitVisor's ``dbgsh`` and ``log_set_buf``.

Guest controls: every argument register and every byte behind them. The update bundle is copied out
once (header and body together), the signature length comes from that copy's header, never from a
second look at guest memory (no double fetch), and nothing is read when RCX exceeds the cap.
"""

from __future__ import annotations

from collections.abc import Callable

from hv_emu.errors import GuestFault, UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.table import HypercallContext, HypercallResult
from hv_emu.updates.format import HEADER_SIZE, BundleHeader, signature_length
from hv_emu.updates.service import UpdateService


def update_signatures(service: UpdateService) -> Callable[[HypercallContext], HypercallResult]:
    """The handler of ``update_signatures`` bound to ``service``."""

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
        return HypercallResult(service.submit(bundle, signature, source))

    return handler


def get_status(status_text: Callable[[], str]) -> Callable[[HypercallContext], HypercallResult]:
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
