"""The exception tree of hv-emu, split by who is at fault.

Models: the two kinds of failure a hypervisor meets. A ``GuestFault`` is something the guest (or a
packet from the network) did that the hypervisor refuses: it becomes an error code in RAX, a counted
drop or a fault report, never a crash. A ``HostError`` is a problem of configuration (a bad flag, a
missing file) or a bug of ours; the CLI turns it into one line on standard error.

Follows: h11's split of ``LocalProtocolError``/``RemoteProtocolError`` by who broke the rules, and
rust-vmm's habit of errors that carry data (addresses, ports, expected/got), not only a message.

Leaves out: nothing guest-visible; the mapping from exception to hypercall return code lives in
``hypercalls/table.py`` and ``hypercalls/abi.py``.

Guest controls: the field values (addresses, lengths) of every ``GuestFault``; never the type.
"""

from __future__ import annotations


class HvEmuError(Exception):
    """Base of every error hv-emu raises on purpose."""


# --------------------------------------------------------------------------- the guest's fault


class GuestFault(HvEmuError):
    """The guest or the network did something illegal; the hypervisor refuses and goes on."""


class GuestMemoryError(GuestFault):
    """A guest-physical access outside RAM (or across its end)."""

    def __init__(self, address: int, size: int, reason: str = "outside guest RAM") -> None:
        self.address = address
        self.size = size
        self.reason = reason
        super().__init__(f"guest-physical {address:#x}+{size:#x}: {reason}")


class PageFault(GuestFault):
    """A guest-virtual address that the guest's page tables do not map (or forbid).

    ``level`` is the paging level whose entry stopped the walk (4 = PML4 ... 1 = PT; 3 = PDPT under
    PAE). Never injected into the guest: a hypercall reports it as an error code.
    """

    def __init__(self, va: int, level: int, reason: str, write: bool = False) -> None:
        self.va = va
        self.level = level
        self.reason = reason
        self.write = write
        super().__init__(f"page fault at {va:#x} (level {level}): {reason}")


class UpdateRejected(GuestFault):
    """A signature update that failed a check; ``code`` is its return code from ``abi.Rc``."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(reason)


class DatabaseError(HvEmuError):
    """A signature database that does not parse. Who is at fault depends on where it came from:
    a file the user named (a ``HostError`` at the CLI) or an update (rejected as malformed)."""

    def __init__(self, source: str, line: int, column: int, message: str) -> None:
        self.source = source
        self.line = line
        self.column = column
        self.message = message
        where = f"{source}:{line}" + (f":{column}" if column else "")
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- our side


class HostError(HvEmuError):
    """Configuration or a bug of ours: the run cannot go on as asked."""


class ConfigError(HostError):
    """A bad argument, image, key or file given by the user."""


class StorageError(HostError):
    """The host could not persist something it must (a full disk, a refused entry in the state
    directory): the operation that needed it did not happen, and nothing it would change did."""


class ImageError(ConfigError):
    """A guest image that cannot be loaded as asked (too big, overlapping, unreadable)."""


class RunEnding(HostError):
    """A host wait cut short because the run is ending (the watchdog fired, or Ctrl-C): raised
    inside a hook, which drops it and stops; the run loop then reports that ending, not this."""
