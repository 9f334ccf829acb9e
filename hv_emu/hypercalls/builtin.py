"""The built-in hypercalls, one line each, in slot order: the one table the machine registers.

Models: the list of functions hv-emu offers every guest, as BitVisor's ``vmmcall_register`` calls
at start-up do: registration order is slot order, so the position in ``BUILTINS`` *is* the number.
No module states its number and there is no hand-kept enum of them: ``NUMBERS`` is derived from
this list, ``machine.py`` checks that each spec lands in the slot of its position, and
``guest_tool`` generates the ``HC_<NAME>`` constants of assembly programs from it (as Linux
generates ``unistd_64.h`` from ``syscall_64.tbl``).

Follows: ``docs/ABI.md``, "Functions" and "Return codes"; ``tests/docs/test_abi_doc.py`` checks
every spec's position, name and return codes here against the Functions table. Adding a built-in
hypercall is one module, one line and one row: a module ``hv_emu/hypercalls/<name>.py`` declaring
its ``SPEC`` (name, return codes, handler factory), its line at the end of ``BUILTINS`` below (and
its name in the import above it), and its row in the Functions table of ``docs/ABI.md`` naming the
codes it returns. Its number, its ``HC_<NAME>`` constant for ``asm/`` and its entry in ``NUMBERS``
follow.

Leaves out: BitVisor's other services (``dbgsh``, ``log_set_buf``, ``loadcfg``...). This is not
``hypercalls/__init__.py`` so that importing ``abi`` (as ``updates/`` does) does not import the
handlers, which import ``updates/``.

Guest controls: nothing here; it is fixed before the guest runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from hv_emu.hypercalls import get_status, get_vmmcall_number, update_signatures
from hv_emu.hypercalls.spec import HypercallSpec

BUILTINS: tuple[HypercallSpec, ...] = (
    get_vmmcall_number.SPEC,  # slot 0 by the ABI: the table binds it itself when it is built
    get_status.SPEC,
    update_signatures.SPEC,
)

#: Each built-in's number by name (``NUMBERS["get_status"] == 1``): its position in ``BUILTINS``.
NUMBERS: Mapping[str, int] = MappingProxyType({spec.name: nr for nr, spec in enumerate(BUILTINS)})
