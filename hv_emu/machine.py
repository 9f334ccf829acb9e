"""The machine: the composition root that builds a VM and runs it.

Models: the VMM process itself. This is the only place that knows the whole picture: it creates
guest RAM, the port bus and its devices at their addresses (from ``layout.py``), the hypercall table
with hv-emu's services in their ABI slots, the signature database in force and the update service,
and the vCPU, whose every exit it passes to ``dispatch``.

Follows: Firecracker's ``builder.rs`` (one function wires everything; nothing else knows the wiring)
and ``docs/ARCHITECTURE.md``.

Leaves out: more than one vCPU, snapshots, device hot-plug.

Guest controls: whatever its exits carry; the wiring is fixed before the guest runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from hv_emu.abi import DEFAULT_MAX_UPDATE, NAMES, SLOTS, Nr
from hv_emu.boot import BootState
from hv_emu.bus import PortIoBus
from hv_emu.cpuid import CpuidTable
from hv_emu.devices.debugcon import DebugConsole
from hv_emu.dispatch import Handlers, InterruptHandler, SyscallHandler, dispatch
from hv_emu.errors import ConfigError, DatabaseError, HostError
from hv_emu.events import EventLog
from hv_emu.exits import Exit, Fault, Halt, Outcome, StopRequest, Timeout
from hv_emu.guest_services import get_status, update_signatures
from hv_emu.hypercalls import HypercallTable
from hv_emu.layout import DEFAULT_MEM_MIB, MAX_MEM_MIB, MIB, MIN_MEM_MIB, PORT_DEBUGCON
from hv_emu.loader import load_flat
from hv_emu.memory import GuestMemory
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase, compile_database
from hv_emu.scanner.signatures import load_database_file
from hv_emu.updates.service import UpdateService
from hv_emu.updates.state import StateDir
from hv_emu.updates.verify import TrustStore
from hv_emu.vcpu import Vcpu, native_cpuid

VERSION = "0.1.0"


#: Called after every exit the vCPU hands to dispatch: (exit, outcome, seconds spent handling it).
ExitObserver = Callable[[Exit, Outcome, float], None]


@dataclass
class MachineConfig:
    """Everything ``hv-emu run`` can set, with its defaults."""

    mem_mib: int = DEFAULT_MEM_MIB
    timeout: float | None = 30.0
    trust: list[Path] = field(default_factory=list)
    db: Path | None = None
    state_dir: Path | None = None
    max_update: int = DEFAULT_MAX_UPDATE


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``exit`` is the final VM exit (Halt, Fault, Timeout or StopRequest)."""

    exit: Exit
    outcome: Outcome

    @property
    def halted(self) -> bool:
        return isinstance(self.exit, Halt)


class Machine:
    """A VM: RAM, bus, devices, hypercalls, the signature database and one vCPU."""

    def __init__(
        self,
        config: MachineConfig | None = None,
        *,
        console: BinaryIO | None = None,
        events: EventLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config = config or MachineConfig()
        if not MIN_MEM_MIB <= config.mem_mib <= MAX_MEM_MIB:
            raise ConfigError(f"--mem must be {MIN_MEM_MIB}..{MAX_MEM_MIB} MiB")
        self.events = events or EventLog()
        self.mem = GuestMemory(config.mem_mib * MIB)

        # The port bus and its devices (ports from layout.py; devices see offsets only).
        self.bus = PortIoBus()
        self.debugcon = DebugConsole(console)
        self.bus.register(PORT_DEBUGCON, 1, self.debugcon, "debugcon")

        # Trust, the database in force, and the one update pipeline.
        self.trust = TrustStore()
        for path in config.trust:
            self.trust.load_file(path)
        state = StateDir(config.state_dir) if config.state_dir is not None else None
        initial, time_floor = self._initial_database(state)
        self.database = ActiveDatabase(initial)
        self.updates = UpdateService(
            self.trust, self.database, self.events, state=state, time_floor=time_floor,
            max_size=config.max_update, clock=clock,
        )  # fmt: skip
        self.detections = 0

        # Hypercalls in ABI order: registration order is slot order, as in BitVisor.
        self.hypercalls = HypercallTable(self.mem, self.events)
        for nr, handler in (
            (Nr.GET_STATUS, get_status(self.status_text)),
            (Nr.UPDATE_SIGNATURES, update_signatures(self.updates)),
        ):
            if self.hypercalls.register(NAMES[nr], handler) != nr:
                raise HostError(f"hypercall {NAMES[nr]} did not land in slot {int(nr)}")

        self.cpuid = CpuidTable(native_cpuid, SLOTS)
        #: Software-interrupt handlers by vector (an OS personality, a BIOS model): see dispatch.
        self.interrupts: dict[int, InterruptHandler] = {}
        self.handlers = Handlers(self.bus, self.hypercalls, self.cpuid, self.interrupts)
        #: Watchers of every exit (a tracer, statistics); empty on the default path.
        self.exit_observers: list[ExitObserver] = []
        self.vcpu = Vcpu(self.mem, self._on_exit)
        self.boot: BootState | None = None

    def _initial_database(self, state: StateDir | None) -> tuple[SignatureDatabase, int]:
        """The persisted database if there is one, else ``--db`` as version 0, else empty."""
        if state is not None:
            loaded = state.load()
            if loaded is not None:
                installed, body = loaded
                try:
                    db = compile_database(
                        body, kind=installed.kind, version=installed.db_version,
                        source=f"{state.path} (v{installed.db_version})",
                    )  # fmt: skip
                except DatabaseError as bad:
                    raise ConfigError(f"persisted database does not parse: {bad}") from None
                return db, installed.time_floor
        if self.config.db is not None:
            data, kind = load_database_file(self.config.db)
            try:
                return compile_database(data, kind=kind, version=0, source=str(self.config.db)), 0
            except DatabaseError as bad:
                raise ConfigError(str(bad)) from None
        return SignatureDatabase.empty(), 0

    # ------------------------------------------------------------------ running
    def _on_exit(self, exit_: Exit) -> Outcome:
        if not self.exit_observers:
            return dispatch(exit_, self.handlers)
        start = time.perf_counter()
        outcome = dispatch(exit_, self.handlers)
        elapsed = time.perf_counter() - start
        for observer in self.exit_observers:
            observer(exit_, outcome, elapsed)
        return outcome

    def set_syscall_handler(self, handler: SyscallHandler | None) -> None:
        """Who handles SYSCALL (an OS personality); without one, SYSCALL is a guest fault."""
        self.handlers = replace(self.handlers, syscall=handler)

    def load(self, image: bytes, *, mode: int = 64, load: int | None = None,
             entry: int | None = None, paging: str = "none") -> BootState:  # fmt: skip
        """Load a flat image and put the vCPU at its entry point."""
        self.boot = load_flat(self.mem, image, mode=mode, load=load, entry=entry, paging=paging)
        self.vcpu.reset(self.boot)
        return self.boot

    def run(self) -> RunResult:
        """Run the guest to its end and log how it ended."""
        if self.boot is None:
            raise HostError("no image loaded")
        final = self.vcpu.run(self.config.timeout)
        outcome = dispatch(final, self.handlers)
        match final:
            case Halt(mode=mode, rip=rip):
                self.events.emit("halt", mode=mode, rip=rip)
            case Fault():
                self.events.emit(
                    "fault", kind=final.kind, mode=final.mode, cs=final.cs, rip=final.rip,
                    address=final.address, vector=final.vector, instruction=final.instruction,
                    registers=dict(final.registers),
                )  # fmt: skip
            case Timeout(seconds=seconds, mode=mode, rip=rip):
                self.events.emit("timeout", seconds=seconds, mode=mode, rip=rip)
            case StopRequest(reason=reason, mode=mode, rip=rip):
                self.events.emit("stop", reason=reason, mode=mode, rip=rip)
        return RunResult(final, outcome)

    # ------------------------------------------------------------------ status
    def status_text(self) -> str:
        """What ``get_status`` tells the guest (and ``hv-emu run`` prints at the end)."""
        db = self.database.current
        lines = [
            f"hv-emu {VERSION}",
            f"db_version: {db.version}",
            f"signatures: {db.count}",
            f"db_sha256: {db.sha256}",
            f"detections: {self.detections}",
            f"updates_accepted: {self.updates.accepted}",
            f"updates_rejected: {self.updates.rejected}",
        ]
        return "\n".join(lines) + "\n"
