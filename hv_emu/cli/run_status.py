"""How ``hv-emu run`` ended, for the user: the summary line and the exit status.

Models: the last thing a VMM's front end does, as ``qemu`` or ``bhyve`` do: say in one line on
standard error how the guest ended (halted, faulted, timed out, stopped; a Linux program's exit
status or signal) with the run's counts (hypercalls, time, the database in force, detections, the
network), and turn that ending into the exit status ``run.py``'s docstring lists (a signal's,
a ``StopRequest`` whose reason is in ``stopping.ENDINGS``, is 128 + its number: Ctrl-C's 130,
"interrupted at RIP=... (Ctrl-C)", SIGTERM's 143, "terminated at RIP=... (SIGTERM)").

Follows: README.md (``hv-emu run``), docs/ELF.md (a program's own status, as ``qemu-x86_64``).

Leaves out: the run report (``--report``: ``run.py`` and ``hv_emu/debug/report_html.py``).

Guest controls: how the run ends and the counts; never the shape of the line.
"""

from __future__ import annotations

import sys

from hv_emu.errors import HostError
from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout
from hv_emu.linux.signal_numbers import signal_name
from hv_emu.linux.syscalls import LinuxProcess
from hv_emu.machine import Machine
from hv_emu.run_end import status_of
from hv_emu.vcpu.stopping import ending_of


def database_summary(machine: Machine) -> str:
    """The database in force at the end, and the newest accepted one if that never came into force
    (its compile was refused: ``database_failed``). The run waited for pending compiles, so
    nothing is still compiling here."""
    db, status = machine.database.current, machine.updates.status()
    text = f"database v{db.version} ({db.count} signatures)"
    if status.version != db.version:
        text += f", v{status.version} accepted but not in force ({status.state})"
    return text


def run_summary(machine: Machine, elapsed: float) -> str:
    """The run's counts: hypercalls, seconds, the database, detections, the network."""
    summary = f"{machine.hypercalls.calls} hypercalls, {elapsed:.3f} s; "
    summary += database_summary(machine)
    if machine.disk is not None:
        summary += f"; {machine.detections} detections in disk writes"
    if machine.network is not None:
        summary += f"; network {machine.network.summary()}"
    received = machine.receiver.stats() if machine.receiver is not None else None
    if received is not None and received.datagrams:  # what arrived, the top drop reasons
        summary += f"; {received.summary()}"
    return summary


def program_exited(linux: LinuxProcess, summary: str, quiet: bool, final: Exit) -> int:
    """A Linux program called exit, or a signal killed it: hv-emu run exits with the program's
    own status (128 + the signal's number, as a shell shows it); a fault it had no handler for
    is reported as any guest fault is."""
    if isinstance(final, Fault):
        print(f"hv-emu: {final.describe()}", file=sys.stderr)
    if not quiet:
        print(f"hv-emu: {program_end(linux)}: {program_summary(linux, summary)}",
              file=sys.stderr)  # fmt: skip
    return linux.exit_status or 0


def program_end(linux: LinuxProcess) -> str:
    """How a Linux program ended (the CLI's last line and the report's header say the same)."""
    how = "exited"
    if linux.killed_by is not None:
        how = f"killed by {signal_name(linux.killed_by)}, exited"
    return f"program {how} with status {linux.exit_status}"


def program_summary(linux: LinuxProcess, summary: str) -> str:
    """The run's summary with the program's system calls, and those it was refused (-ENOSYS)."""
    unsupported = ", ".join(name or str(nr) for nr, name in linux.unsupported.items())
    note = f"; unsupported system calls (-ENOSYS): {unsupported}" if unsupported else ""
    return f"{linux.calls} system calls, {summary}{note}"


def exit_status(machine: Machine, final: Exit, summary: str, quiet: bool) -> int:
    """Say how the run ended (one line on standard error) and return its exit status."""
    if machine.linux is not None and machine.linux.exit_status is not None:
        return program_exited(machine.linux, summary, quiet, final)
    match final:
        case Halt():
            if not quiet:
                print(f"hv-emu: guest halted: {summary}", file=sys.stderr)
        case Fault():
            print(f"hv-emu: {final.describe()}", file=sys.stderr)
        case Timeout(seconds=seconds, rip=rip):
            print(f"hv-emu: timeout: the guest ran {seconds:g} s without halting "
                  f"(RIP={rip:#x}); raise --timeout if it needs longer", file=sys.stderr)
        case StopRequest(reason=reason, rip=rip) if (by := ending_of(reason)) is not None:
            print(f"hv-emu: {by.word} at RIP={rip:#x} ({by.shown}): {summary}",
                  file=sys.stderr)  # fmt: skip
        case StopRequest(reason=reason):
            print(f"hv-emu: stopped: {reason}: {summary}", file=sys.stderr)
        case _:
            raise HostError(f"unexpected end of run: {final!r}")
    return status_of(final)
