"""The machine: the composition root that builds a VM and runs it.

Models: the VMM process itself. This is the only place that knows the whole picture: it creates
guest RAM, the port bus and its devices at their addresses (from ``layout.py``), the hypercall table
with hv-emu's services in their ABI slots, the signature database in force and the update service,
and the vCPU, whose every exit it passes to ``dispatch``. It calls two helpers: ``loading.py``
puts a guest into the built machine (a flat image, a disk boot, an ELF program) and plugs in what
that kind of guest needs (the firmware's services, the Linux personality) through the machine's
own attributes; ``updates/initial.py`` picks the database in force at start. What it is built from
and what a run gives back are ``machine_config.py``'s (``MachineConfig``, ``RunResult``).

Follows: Firecracker's ``builder.rs`` (one function wires everything; nothing else knows the wiring)
and ``docs/ARCHITECTURE.md``.

Leaves out: more than one vCPU, snapshots, device hot-plug.

Guest controls: whatever its exits carry; the wiring is fixed before the guest runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hv_emu import __version__, layout, loading
from hv_emu.bus import PortIoBus
from hv_emu.cpuid import CpuidTable
from hv_emu.devices.clock import GuestClock
from hv_emu.devices.debugcon import DebugConsole
from hv_emu.devices.pci import PciConfigSpace
from hv_emu.devices.pic import PicPair
from hv_emu.devices.pit import Pit8254, SystemControlPort
from hv_emu.devices.storage.ahci import AhciHba
from hv_emu.devices.storage.ata import AtaChannel
from hv_emu.devices.storage.busmaster import BusMaster
from hv_emu.devices.storage.disk import DiskImage
from hv_emu.devices.storage.observer import StorageObserver, StorageRead, StorageWrite, Verdict
from hv_emu.devices.vga import VgaText
from hv_emu.dispatch import Handlers, InterruptHandler, SyscallHandler, dispatch
from hv_emu.errors import ConfigError, HostError
from hv_emu.events import EventLog
from hv_emu.exits import Exit, Fault, Halt, Outcome, StopRequest, Timeout
from hv_emu.firmware.bios import Bios
from hv_emu.hypercalls.abi import CPU_VENDORS, HYPERCALL_INSTRUCTIONS, SLOTS
from hv_emu.hypercalls.builtin import BUILTINS
from hv_emu.hypercalls.spec import HypercallServices
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.inspection import Inspector
from hv_emu.layout import MAX_MEM_MIB, MIB, MIN_MEM_MIB, PORT_DEBUGCON
from hv_emu.linux.files import FileTable
from hv_emu.linux.syscalls import LinuxProcess
from hv_emu.machine_config import DISK_CONTROLLERS as DISK_CONTROLLERS
from hv_emu.machine_config import MachineConfig as MachineConfig
from hv_emu.machine_config import RunResult as RunResult
from hv_emu.memory.boot import BootState
from hv_emu.memory.guest import GuestMemory
from hv_emu.mmio import MmioBus
from hv_emu.scanner.database import ActiveDatabase
from hv_emu.updates.initial import initial_database
from hv_emu.updates.receiver import UpdateReceiver
from hv_emu.updates.service import UpdateService
from hv_emu.updates.state import StateDir
from hv_emu.updates.verify import TrustStore
from hv_emu.vcpu import Vcpu, native_cpuid

if TYPE_CHECKING:  # the network stack (and numpy, its batch path's) loads with --net only
    from hv_emu.net.attachment import GuestNetwork
    from hv_emu.net.backends import NetSpec

#: Called after every exit the vCPU hands to dispatch: (exit, outcome, seconds spent handling it).
ExitObserver = Callable[[Exit, Outcome, float], None]
#: Called after the inspection policy answered a disk write: (the write, the verdict).
DiskWriteWatcher = Callable[[StorageWrite, Verdict], None]


class _WatchedStorage:
    """A storage observer that asks ``policy`` and then tells ``watcher`` what it answered."""

    def __init__(self, policy: StorageObserver, watcher: DiskWriteWatcher) -> None:
        self.policy, self.watcher = policy, watcher

    def on_write(self, w: StorageWrite) -> Verdict:
        verdict = self.policy.on_write(w)
        self.watcher(w, verdict)
        return verdict

    def on_read(self, r: StorageRead) -> None:
        self.policy.on_read(r)


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
        if not 0 < config.max_update <= MAX_MEM_MIB * MIB:
            # The cap bounds what one update_signatures call copies out of the guest (read_virt
            # of RCX bytes, which the guest's page tables can alias far past its RAM).
            raise ConfigError(f"--max-update must be 1..{MAX_MEM_MIB * MIB} bytes")
        if config.cpu not in CPU_VENDORS:
            raise ConfigError(f"--cpu must be one of {', '.join(CPU_VENDORS)}, not {config.cpu!r}")
        self.events = events or EventLog()
        self.mem = GuestMemory(config.mem_mib * MIB)

        # The port bus and its devices (ports from layout.py; devices see offsets only).
        self.bus = PortIoBus()
        self.debugcon = DebugConsole(console)
        self.bus.register(PORT_DEBUGCON, 1, self.debugcon, "debugcon")
        # Guest time, the interrupt controller and the timer (IRQ lines wired below).
        self.clock = GuestClock(realtime=config.realtime)
        self.pic = PicPair()
        self.bus.register(layout.PORT_PIC_MASTER, layout.PORT_PIC_LEN, self.pic.master, "pic1")
        self.bus.register(layout.PORT_PIC_SLAVE, layout.PORT_PIC_LEN, self.pic.slave, "pic2")
        self.pit = Pit8254(self.clock)
        self.bus.register(layout.PORT_PIT, layout.PORT_PIT_LEN, self.pit, "pit")
        self.bus.register(layout.PORT_SYSTEM_CONTROL_B, 1, SystemControlPort(self.pit),
                          "port61")  # fmt: skip
        self.pit.irq.connect(self._irq_input(layout.IRQ_PIT))

        #: What the user should hear about the configuration before the guest runs (the CLI
        #: prints each as a warning): options that had no effect, and why.
        self.notices: list[str] = []
        # Trust, the database in force, and the one update pipeline.
        self.trust = TrustStore()
        for path in config.trust:
            self.trust.load_file(path)
        state = (StateDir(config.state_dir, max_body=config.max_update)
                 if config.state_dir is not None else None)  # fmt: skip
        initial, time_floor = initial_database(state, config.db, self.notices)
        self.database = ActiveDatabase(initial)
        self.updates = UpdateService(
            self.trust, self.database, self.events, state=state, time_floor=time_floor,
            max_size=config.max_update, clock=clock,
        )  # fmt: skip

        # The network cut-off: a flag the NIC obeys; its listeners (the NIC) hear it once.
        self.network_cut = False
        self.network_cut_listeners: list[Callable[[str], None]] = []
        self.network: GuestNetwork | None = None
        self.receiver: UpdateReceiver | None = None
        if config.net is not None:
            self._attach_network(config.net, clock)

        # The text screen, PCI configuration space and, with a disk, the primary ATA channel,
        # its bus master and the inspection policy standing between the channel and the image.
        self.vga = VgaText(self.mem, layout.VGA_TEXT_BASE)
        if config.disk_controller not in DISK_CONTROLLERS:
            raise ConfigError(f"--disk-controller must be one of {', '.join(DISK_CONTROLLERS)}")
        ahci = config.disk_controller == "ahci" and config.disk is not None
        self.mmio = MmioBus(self.mem.size)
        self.ahci: AhciHba | None = None
        self.pci = PciConfigSpace(layout.PORT_BUSMASTER,
                                  ahci_abar=layout.AHCI_ABAR if ahci else None,
                                  ahci_irq=layout.IRQ_AHCI)  # fmt: skip
        self.bus.register(layout.PORT_PCI_CONFIG_ADDRESS, 4, self.pci.address_port, "pci-addr")
        self.bus.register(layout.PORT_PCI_CONFIG_DATA, 4, self.pci.data_port, "pci-data")
        self.disk: DiskImage | None = None
        self.inspector: Inspector | None = None
        if config.disk is not None:
            try:
                self._attach_disk(config.disk, config.disk_size_mib)
            except BaseException:
                if self.network is not None:  # no Machine to close(): release the socket here
                    self.network.close()
                raise

        # Hypercalls in ABI order: registration order is slot order, as in BitVisor.
        self.hypercalls = HypercallTable(self.mem, self.events)
        services = HypercallServices(status_text=self.status_text, updates=self.updates,
                                     sync_updates=lambda: self.config.sync_updates)  # fmt: skip
        # A built-in's number is its position in BUILTINS; check that each lands there.
        for nr, spec in enumerate(BUILTINS):
            if spec.make is None:  # get_vmmcall_number: every table holds slot 0 from birth
                landed = self.hypercalls.number(spec.name)
            else:
                landed = self.hypercalls.register(spec.name, spec.make(services))
            if landed != nr:
                raise HostError(f"hypercall {spec.name} is in slot {landed}, not {nr}")

        self.cpuid = CpuidTable(native_cpuid, SLOTS, vendor=config.cpu)
        #: Software-interrupt handlers by vector (an OS personality, a BIOS model): see dispatch.
        self.interrupts: dict[int, InterruptHandler] = {}
        self.handlers = Handlers(self.bus, self.hypercalls, self.cpuid, self.interrupts)
        #: Watchers of every exit (a tracer, statistics); empty on the default path.
        self.exit_observers: list[ExitObserver] = []
        self.vcpu = Vcpu(self.mem, self._on_exit)
        for region in self.mmio.regions:
            self.vcpu.map_mmio(region.base, region.size, region.device)
        # Port exits go straight to the bus while nobody watches exits: dispatch sends PortIn and
        # PortOut nowhere else, so the guest cannot tell (docs/PERFORMANCE.md, the exit path).
        self.vcpu.direct_ports = self.bus
        self.vcpu.exit_watchers = self.exit_observers
        self.vcpu.hypercall_instruction = HYPERCALL_INSTRUCTIONS[config.cpu]
        # Software interrupts with a handler here are the hypervisor's, never the guest IDT's.
        self.vcpu.owned_vectors = self.interrupts
        # INTR and guest time for the run loop; a new request kicks the vCPU out of emu_start.
        self.vcpu.pic, self.vcpu.timer, self.vcpu.clock = self.pic, self.pit, self.clock
        self.pic.on_intr = self.pit.on_rearm = self.vcpu.kick
        if self.network is not None:
            self.vcpu.entry_hooks.append(self.network.nic.sync_irq)
        self.boot: BootState | None = None
        #: The Linux process when the guest is an ELF program (``load_elf``), else ``None``.
        self.linux: LinuxProcess | None = None
        #: The firmware of a 16-bit run (``load`` with mode 16, ``boot_disk``), else ``None``.
        self.firmware: Bios | None = None

    def _attach_disk(self, path: Path, size_mib: int | None) -> None:
        """The disk on the primary channel (or AHCI port 0), every write inspected before it
        lands."""
        disk = DiskImage.open(path) if size_mib is None else DiskImage.create(path, size_mib)
        self.disk = disk
        self.inspector = Inspector(
            self.database, disk, self.events, actions=self.config.on_detect, screen=self.vga,
            cut_network=self.cut_network,
        )  # fmt: skip
        if self.config.disk_controller == "ahci":
            self.ahci = AhciHba(disk, self.mem, self.inspector,
                                enabled=self.pci.ahci_bus_master_enabled)  # fmt: skip
            self.mmio.register(layout.AHCI_ABAR, layout.AHCI_ABAR_LEN, self.ahci, "ahci")
            self.ahci.on_interrupt = self._irq_input(layout.IRQ_AHCI)
            return
        self.ata = AtaChannel(disk, self.inspector, self.mem)
        self.ata.irq.connect(self._irq_input(layout.IRQ_ATA_PRIMARY))
        self.busmaster = BusMaster(self.ata, self.mem, enabled=self.pci.bus_master_enabled)
        self.bus.register(layout.PORT_ATA_PRIMARY, layout.PORT_ATA_PRIMARY_LEN,
                          self.ata.command_block, "ata0")  # fmt: skip
        self.bus.register(layout.PORT_ATA_PRIMARY_CTRL, 1, self.ata.control_block, "ata0-ctrl")
        self.bus.register(layout.PORT_BUSMASTER, layout.PORT_BUSMASTER_LEN, self.busmaster,
                          "busmaster")  # fmt: skip

    def _attach_network(self, spec: NetSpec, clock: Callable[[], float]) -> None:
        """The guest's NIC on the bus, behind the hypervisor's switch and the ``--net`` backend;
        update datagrams go to the update receiver, a network cut takes the guest's link down."""
        # The network stack (numpy with its batch path) loads only for a run with --net.
        from hv_emu.net.attachment import GuestNetwork
        from hv_emu.net.backends import open_backend
        from hv_emu.updates.batch import UpdateTriage

        self.receiver = receiver = UpdateReceiver(self.updates, wall_clock=clock)
        backend = open_backend(spec)
        try:
            network = GuestNetwork(
                backend, self.config.net_config, guest_mac=self.config.guest_mac,
                on_update=lambda d: receiver.on_datagram(d.payload, (str(d.src_ip), d.src_port)),
                poll=receiver.poll, checks=receiver, capture=self.config.capture,
                on_update_payload=receiver.on_payload, update_batch=UpdateTriage(receiver),
            )  # fmt: skip
        except BaseException:
            backend.close()
            raise
        self.network = network
        self.bus.register(layout.PORT_NIC, layout.PORT_NIC_LEN, network.nic, "nic")
        network.nic.irq.connect(self._irq_input(layout.IRQ_NIC))
        self.network_cut_listeners.append(lambda _reason: network.cut())

    def _irq_input(self, irq: int) -> Callable[[bool], None]:
        """The PIC input ``irq`` as a device's ``Line`` sees it."""
        return lambda level: self.pic.set_irq(irq, level)

    def close(self) -> None:
        """Release host resources (the disk image's file, the network's sockets and capture)."""
        if self.disk is not None:
            self.disk.close()
        if self.network is not None:
            self.network.close()
        if self.linux is not None:
            self.linux.files.close_all()

    def watch_disk_writes(self, watcher: DiskWriteWatcher) -> None:
        """Tell ``watcher`` every disk write and the policy's verdict on it (a run report); the
        default path stays as it is until someone watches. Without a disk, there is none."""
        if self.disk is not None:
            self.ata.observer = _WatchedStorage(self.ata.observer, watcher)

    def cut_network(self, reason: str) -> None:
        """Cut the guest off the network (a detection's ``cut-network``); idempotent."""
        if self.network_cut:
            return
        self.network_cut = True
        self.events.emit("network_cut", reason=reason)
        for listener in self.network_cut_listeners:
            listener(reason)

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

    def set_cpu(self, vendor: str) -> None:
        """Present a CPU of ``vendor`` (``MachineConfig.cpu``) from the next instruction on: its
        CPUID vendor string, its hypercall instruction. For a test bench between runs; a real CPU
        never changes vendor under its guest."""
        if vendor not in CPU_VENDORS:
            raise ConfigError(f"--cpu must be one of {', '.join(CPU_VENDORS)}, not {vendor!r}")
        self.config.cpu = vendor
        self.cpuid.set_vendor(vendor)
        self.vcpu.hypercall_instruction = HYPERCALL_INSTRUCTIONS[vendor]

    def set_syscall_handler(self, handler: SyscallHandler | None) -> None:
        """Who handles SYSCALL (an OS personality); without one, SYSCALL is a guest fault."""
        self.handlers = replace(self.handlers, syscall=handler)

    def load(self, image: bytes, *, mode: int = 64, load: int | None = None,
             entry: int | None = None, paging: str = "none") -> BootState:  # fmt: skip
        """Load a flat image and put the vCPU at its entry point (``loading.load_flat_image``:
        a 16-bit image gets the firmware first)."""
        return loading.load_flat_image(self, image, mode=mode, load=load, entry=entry,
                                       paging=paging)  # fmt: skip

    def boot_disk(self) -> BootState:
        """Boot the disk on the primary channel as a PC does (``hv-emu run --boot``,
        ``loading.boot_from_disk``)."""
        return loading.boot_from_disk(self)

    def load_elf(self, image: bytes, *, argv: Sequence[str], env: Sequence[str] = (),
                 files: FileTable | None = None) -> LinuxProcess:  # fmt: skip
        """Load an ELF executable as a Linux process (docs/ELF.md, ``loading.load_elf_program``)."""
        return loading.load_elf_program(self, image, argv=argv, env=env, files=files)

    def run(self) -> RunResult:
        """Run the guest to its end and log how it ended."""
        if self.boot is None:
            raise HostError("no image loaded")
        with self.serving_network():
            final = self.vcpu.run(self.config.timeout)
        return self.finish(final)

    @contextlib.contextmanager
    def serving_network(self) -> Iterator[None]:
        """Around any way of running the vCPU (``run``, a debugger session): the network's I/O
        thread serves the backend inside the block and is stopped and joined when it ends."""
        if self.network is None:
            yield
            return
        self.network.start()
        try:
            yield
        finally:
            self.network.stop()

    def finish(self, final: Exit) -> RunResult:
        """Dispatch and log the exit that ended a run (``run``'s, or a debugger session's)."""
        # Updates the guest had accepted finish compiling: the run ends on the newest database.
        self.updates.wait_active()
        outcome = self._on_exit(final)  # exit observers see the final exit too
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
    @property
    def detections(self) -> int:
        """Signatures found in disk writes so far."""
        return 0 if self.inspector is None else self.inspector.detections

    def status_text(self) -> str:
        """What ``get_status`` tells the guest (docs/ABI.md): ``db_version``, ``signatures`` and
        ``db_sha256`` describe the newest accepted database, ``db_active_version`` the one that
        scans disk writes now, ``db_state`` how far the accepted one got."""
        db = self.updates.status()
        lines = [
            f"hv-emu {__version__}",
            f"db_version: {db.version}",
            f"signatures: {db.signatures}",
            f"db_sha256: {db.sha256}",
            f"db_active_version: {db.active_version}",
            f"db_state: {db.state}",
            f"detections: {self.detections}",
            f"network: {'cut' if self.network_cut else 'up'}",
            f"updates_accepted: {self.updates.accepted}",
            f"updates_rejected: {self.updates.rejected}",
        ]
        if self.network is not None:
            lines += self.network.status_lines()
            if self.receiver is not None:
                lines += self.network.under_lock(self.receiver.stats).status_lines()
        return "\n".join(lines) + "\n"
