"""A test bench for hypercall ABIs: build a machine, run a guest, look at what it did.

Models: the workbench of someone designing a hypercall. A ``Hypervisor`` is one hv-emu machine
(RAM, port bus, hypercall table, signature database, one vCPU) that a test fills with its own
hypercall handlers and port devices, then runs small guests on: assembly text, a flat image, or a
program from ``asm/``. Each run returns a ``GuestRun``: how it ended, the registers at the end,
every hypercall with its arguments and result, the debug-console output, the event log, and guest
memory read through the guest's own page tables. ``hv_emu.testing.pytest_plugin`` offers it as
the ``hv``
fixture; ``docs/TESTING.md`` has worked examples, each of them run by the test suite.

Follows: ``docs/ABI.md`` (the register convention: number in RAX, arguments in RBX, RCX, RDX, RSI,
RDI, result in RAX) and BitVisor's table (a name resolved by ``get_vmmcall_number``, slots given
in registration order unless a number is asked for).

Leaves out: snapshots and rewinding; several vCPUs. A ``Hypervisor`` keeps one machine: running
another guest on it reuses its RAM, devices, database and event log (each ``GuestRun`` reports only
its own hypercalls, exits and events); make a new ``Hypervisor`` for a clean machine.

Guest controls: everything a run reports (registers, memory, arguments). The test controls the
handlers and devices it registers; a handler's ``GuestFault`` still becomes ``Rc.UNREADABLE`` for
the guest, as in the real table, and any other exception fails the test with its traceback.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from guest_tool.assemble import assemble
from guest_tool.programs import abi_prelude, build_program
from hv_emu.bus import PortDevice
from hv_emu.events import Event
from hv_emu.exits import Exit, Fault, Handled, Hypercall, Outcome
from hv_emu.hypercalls.spec import HypercallContext, HypercallResult
from hv_emu.loaders.flat import default_load
from hv_emu.machine import Machine, MachineConfig, RunResult
from hv_emu.memory.walk import read_cstring, read_virt

__all__ = [
    "GuestRun",
    "HypercallContext",
    "HypercallRecord",
    "HypercallResult",
    "Hypervisor",
]

#: A test's hypercall handler: the guest's arguments and memory in, RAX (or a full result) out.
HypercallFunction = Callable[[HypercallContext], HypercallResult | int]
#: A bench's default watchdog: a test guest that runs longer than this is stuck.
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class HypercallRecord:
    """One VMCALL as the hypervisor saw and answered it."""

    nr: int  # RAX at the VMCALL
    name: str | None  # the function in that slot (None: no such function, RAX = 0 came back)
    args: tuple[int, int, int, int, int]  # RBX, RCX, RDX, RSI, RDI
    rax: int  # RAX returned to the guest
    registers: Mapping[str, int]  # every register the handler set, RAX included
    rip: int  # the address just past the VMCALL, where the guest resumed
    mode: int


class GuestRun:
    """What one run left behind. Registers are a snapshot at the end of the run; memory is read
    live from the machine."""

    def __init__(self, machine: Machine, result: RunResult, exits: list[tuple[Exit, Outcome]],
                 console: bytes, events: list[Event]) -> None:  # fmt: skip
        self.machine = machine
        self.result = result
        #: Every exit the vCPU took, in order, with the hypervisor's answer (the final one last).
        self.exits = exits
        #: Bytes the guest wrote to the debug console (port 0xE9).
        self.console = console
        #: This run's events (``docs/EVENTS.md``).
        self.events = events
        #: RAX..R15, RIP, RFLAGS, segment and control registers when the run ended.
        self.registers: dict[str, int] = machine.vcpu.registers()
        self.hypercalls = [
            _record(exit_, outcome, machine)
            for exit_, outcome in exits
            if isinstance(exit_, Hypercall) and isinstance(outcome, Handled)
        ]

    @property
    def exit(self) -> Exit:
        """The exit that ended the run: ``Halt``, ``Fault``, ``Timeout`` or ``StopRequest``."""
        return self.result.exit

    @property
    def halted(self) -> bool:
        return self.result.halted

    @property
    def fault(self) -> Fault | None:
        return self.result.exit if isinstance(self.result.exit, Fault) else None

    @property
    def output(self) -> str:
        """The debug-console output as text (undecodable bytes shown as U+FFFD)."""
        return self.console.decode("utf-8", "replace")

    def events_of(self, kind: str) -> list[Event]:
        return [event for event in self.events if event["event"] == kind]

    def read(self, va: int, n: int) -> bytes:
        """``n`` bytes at guest-virtual ``va``, through the guest's page tables as they are now
        (``PageFault`` or ``GuestMemoryError`` if unmapped)."""
        return read_virt(self.machine.mem, self.machine.vcpu.paging_state(), va, n)

    def read_string(self, va: int, limit: int = 4096) -> bytes:
        """The NUL-terminated bytes at guest-virtual ``va`` (without the NUL)."""
        text = read_cstring(self.machine.mem, self.machine.vcpu.paging_state(), va, limit)
        if text is None:
            raise ValueError(f"no NUL within {limit} bytes at {va:#x}")
        return text

    def read_physical(self, pa: int, n: int) -> bytes:
        return self.machine.mem.read(pa, n)


def _record(exit_: Hypercall, outcome: Handled, machine: Machine) -> HypercallRecord:
    return HypercallRecord(exit_.nr, machine.hypercalls.name(exit_.nr), exit_.args,
                           outcome.registers.get("rax", 0), outcome.registers, exit_.rip,
                           exit_.mode)  # fmt: skip


def _as_handler(function: HypercallFunction) -> Callable[[HypercallContext], HypercallResult]:
    """Let a test's handler return a plain RAX value."""

    def handler(ctx: HypercallContext) -> HypercallResult:
        result = function(ctx)
        return result if isinstance(result, HypercallResult) else HypercallResult(result)

    return handler


class Hypervisor:
    """One machine to test hypercalls on: register handlers and devices, then run guests.

    ``config`` is ``hv-emu run``'s configuration (trusted keys, database, RAM...); by default a
    64 MiB machine with an empty database and a 10-second watchdog. ``sync_updates=True`` (or
    ``bench.sync_updates = True`` later, e.g. on the ``hv`` fixture) is ``--sync-updates``:
    ``update_signatures`` answers only once its database is active, so a guest's next
    ``get_status`` says ``db_state: active``. ``cpu="amd"`` (or ``bench.cpu = "amd"`` between
    runs) is ``--cpu amd``: CPUID says AuthenticAMD and the hypercall is VMMCALL, VMCALL a #UD.
    """

    def __init__(self, config: MachineConfig | None = None, *,
                 sync_updates: bool | None = None, cpu: str | None = None) -> None:  # fmt: skip
        self._console = io.BytesIO()
        config = config or MachineConfig(timeout=DEFAULT_TIMEOUT)
        if cpu is not None:
            config = replace(config, cpu=cpu)
        self.machine = Machine(config, console=self._console)
        if sync_updates is not None:
            self.sync_updates = sync_updates
        self._exits: list[tuple[Exit, Outcome]] = []
        self.machine.exit_observers.append(lambda e, outcome, _s: self._exits.append((e, outcome)))

    @property
    def sync_updates(self) -> bool:
        """``update_signatures`` answers only once its database is active (``--sync-updates``)."""
        return self.machine.config.sync_updates

    @sync_updates.setter
    def sync_updates(self, value: bool) -> None:
        self.machine.config.sync_updates = value

    @property
    def cpu(self) -> str:
        """The CPU vendor the guest sees (``--cpu``): ``"intel"`` (VMCALL) or ``"amd"``
        (VMMCALL)."""
        return self.machine.config.cpu

    @cpu.setter
    def cpu(self, vendor: str) -> None:
        self.machine.set_cpu(vendor)

    def register_hypercall(self, name: str, handler: HypercallFunction, *,
                           nr: int | None = None) -> int:  # fmt: skip
        """Add a hypercall: at number ``nr``, or in the next free slot; return its number.

        ``handler`` gets a ``HypercallContext`` (``ctx.rbx``, ``ctx.args``, ``ctx.read(va, n)``,
        ``ctx.write(va, data)``) and returns RAX or a ``HypercallResult``. Guests find it by name
        with ``get_vmmcall_number`` (hypercall 0)."""
        return self.machine.hypercalls.register(name, _as_handler(handler), nr=nr)

    def add_port_device(self, base: int, length: int, device: PortDevice,
                        name: str | None = None) -> None:  # fmt: skip
        """Give ``device`` the I/O ports ``[base, base + length)``. It sees offsets, never ports:
        ``io_read(offset, size) -> int`` and ``io_write(offset, size, value)``."""
        self.machine.bus.register(base, length, device, name or type(device).__name__)

    # ------------------------------------------------------------------ running guests
    def run_asm(self, source: str, *, mode: int = 64, paging: str = "none",
                load: int | None = None) -> GuestRun:  # fmt: skip
        """Assemble Intel-syntax ``source`` (with the hypercall numbers generated from the
        built-in table, such as ``HC_GET_STATUS``, the ports of ``hv_emu.layout``, such as
        ``DEBUGCON_PORT``, and the constants of ``asm/include/hvabi.s``, such as ``RC_OK``,
        defined) and run it to its end."""
        address = default_load(mode) if load is None else load
        image = assemble(source, mode=mode, address=address, prelude=abi_prelude())
        return self.run_image(image, mode=mode, load=address, paging=paging)

    def run_program(self, name: str, *, mode: int = 64) -> GuestRun:
        """Build and run a program from ``asm/`` as ``guest-tool build --program NAME`` builds it
        (``"hello"`` is ``asm/programs/hello64.s`` in mode 64; ``guest_tool.programs.
        buildable_programs()`` lists them, and the update and diskwrite programs, which need data,
        are refused with the function that builds them)."""
        return self.run_image(build_program(name, mode=mode), mode=mode)

    def run_image(self, image: bytes, *, mode: int = 64, load: int | None = None,
                  entry: int | None = None, paging: str = "none") -> GuestRun:  # fmt: skip
        """Load a flat image as ``hv-emu run`` does and run it to its end."""
        self._console.seek(0)
        self._console.truncate()
        self._exits.clear()
        first_event = len(self.machine.events.records)
        self.machine.load(image, mode=mode, load=load, entry=entry, paging=paging)
        result = self.machine.run()
        return GuestRun(self.machine, result, list(self._exits), self._console.getvalue(),
                        self.machine.events.records[first_event:])  # fmt: skip

    def close(self) -> None:
        self.machine.close()

