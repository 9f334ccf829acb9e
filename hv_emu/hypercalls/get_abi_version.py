"""The hypercall ``get_abi_version``: the ABI version in RCX (a scratch example of adding one).

Models: a trivial service: RAX = OK, RCX = the ABI version (CPUID leaf 0x40000001, EAX).

Follows: ``docs/ABI.md``, its row of "Functions".

Leaves out: everything else.

Guest controls: nothing it reads; it takes no arguments.
"""

from __future__ import annotations

from hv_emu.cpuid import ABI_VERSION
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.spec import (
    Handler,
    HypercallContext,
    HypercallResult,
    HypercallServices,
    HypercallSpec,
)


def get_abi_version(ctx: HypercallContext) -> HypercallResult:
    """RAX = OK, RCX = the ABI version."""
    return HypercallResult(Rc.OK, {"rcx": ABI_VERSION})


def _make(services: HypercallServices) -> Handler:
    return get_abi_version


SPEC = HypercallSpec("get_abi_version", returns=frozenset({Rc.OK}), make=_make)
