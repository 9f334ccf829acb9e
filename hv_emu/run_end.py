"""How a run ended, as the exit status ``hv-emu run`` gives it.

Models: the one mapping from a run's last exit to a number, used wherever that number is told:
the process's own exit status (``cli/run_status.py``), the run report's header (``cli/run.py``)
and a debugger's ``W`` stop reply (``debug/gdbstub.py``), so the three can never disagree.

Follows: README.md (``hv-emu run``'s exit statuses), docs/ELF.md (a Linux program's own status
is hv-emu's, as ``qemu-x86_64`` does), ``vcpu/stopping.py`` (a signal's end is 128 + its
number, as a shell shows a process a signal killed).

Leaves out: the words said about the end (``cli/run_status.py``); the statuses of refused runs
(1 or 2 from ``cli/main.py``, before any guest ran).

Guest controls: how its run ends, and a Linux program its own status; never the mapping.
"""

from __future__ import annotations

from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout
from hv_emu.vcpu.stopping import ending_of

#: The guest halted; it faulted; the watchdog ended it; a hypercall or the host stopped it.
EXIT_HALT, EXIT_FAULT, EXIT_TIMEOUT, EXIT_STOPPED = 0, 1, 3, 4


def status_of(final: Exit, program_status: int | None = None) -> int:
    """The exit status of a run that ended with ``final``; a Linux program that ended has its
    own ``program_status`` instead."""
    if program_status is not None:
        return program_status
    match final:
        case Halt():
            return EXIT_HALT
        case Fault():
            return EXIT_FAULT
        case Timeout():
            return EXIT_TIMEOUT
        case StopRequest(reason=reason) if (by := ending_of(reason)) is not None:
            return by.status
    return EXIT_STOPPED
