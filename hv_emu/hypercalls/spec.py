"""One hypercall as the table sees it: what a handler gets, what it answers, what a module declares.

Models: the contract between BitVisor-style ``vmmcall`` dispatch (``table.py``) and one hypercall
function. A handler gets a ``HypercallContext`` (the guest's argument registers and its memory,
read through the guest's page tables) and answers a ``HypercallResult`` (RAX and any secondary
registers). Each built-in hypercall is one module declaring a ``HypercallSpec``: its name, the
return codes it can give, and how to make its handler from the ``HypercallServices`` the machine
lends it; ``builtin.py`` lists them, and a spec's position in that list is its number.

Follows: ``docs/ABI.md`` (registers, numbers, names and return codes; its tables are tested
against every ``HypercallSpec`` and its position in ``builtin.BUILTINS``).

Leaves out: per-function privilege checks (every function is callable from any ring).

Guest controls: every argument register and every byte a handler reads through the context. A
read or write of an unmapped or out-of-RAM address raises ``GuestFault``, which the handler turns
into ``Rc.UNREADABLE`` (and the table does too, if one escapes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hv_emu.hypercalls.abi import MAX_NAME, Rc
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_cstring, read_virt, write_virt
from hv_emu.updates.service import UpdateService


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
class HypercallServices:
    """What the machine lends the built-in handlers, and nothing more of it."""

    #: The text ``get_status`` returns (``Machine.status_text``).
    status_text: Callable[[], str]
    #: Verify, parse and swap pipeline that ``update_signatures`` feeds.
    updates: UpdateService
    #: Whether ``update_signatures`` answers only once its database is active (``--sync-updates``),
    #: asked at each call.
    sync_updates: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class HypercallSpec:
    """A built-in hypercall: its ABI name, the codes it can return, its handler.

    It carries no number: its number is its position in ``builtin.BUILTINS`` (registration order,
    as in BitVisor). ``make`` builds the handler from the machine's services. It is ``None`` only
    for slot 0, ``get_vmmcall_number``, which resolves names in the table itself: every
    ``HypercallTable`` registers it first, when it is built.
    """

    name: str
    #: The ``Rc`` values that can reach RAX (empty: RAX carries something else, such as a number).
    returns: frozenset[Rc]
    make: Callable[[HypercallServices], Handler] | None
