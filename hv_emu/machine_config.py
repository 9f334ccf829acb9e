"""What a machine is built from and what a run gives back: ``MachineConfig`` and ``RunResult``.

Models: a VMM's configuration as one value (Firecracker's ``VmConfig``, QEMU's command line
parsed): guest RAM, the CPU vendor, the trusted keys, the database and state, the disk and its
controller, the network, the watchdog; and the result of a run, its final exit and the outcome
dispatch gave it. ``machine.py`` (the composition root) builds a ``Machine`` from the one and
returns the other; both are re-exported there, where callers import them.

Follows: README.md (``hv-emu run``'s options, which ``cli/run.py`` turns into a config).

Leaves out: checking the values (the machine does, as it builds each part).

Guest controls: nothing; the user sets the config before the guest exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hv_emu import layout
from hv_emu.exits import Exit, Halt, Outcome
from hv_emu.hypercalls.abi import CPU_VENDORS, DEFAULT_MAX_UPDATE
from hv_emu.inspection import DEFAULT_ACTIONS
from hv_emu.layout import DEFAULT_MEM_MIB
from hv_emu.net.backends import NetSpec
from hv_emu.net.config import NetConfig

#: The disk controllers ``--disk-controller`` offers (the first is the default).
DISK_CONTROLLERS = ("ide", "ahci")


@dataclass
class MachineConfig:
    """Everything ``hv-emu run`` can set, with its defaults."""

    mem_mib: int = DEFAULT_MEM_MIB
    timeout: float | None = 30.0
    trust: list[Path] = field(default_factory=list)
    db: Path | None = None
    state_dir: Path | None = None
    max_update: int = DEFAULT_MAX_UPDATE
    disk: Path | None = None  # raw image on the primary ATA channel or AHCI port 0 (``--disk``)
    disk_size_mib: int | None = None  # create ``disk`` with this size first (``--disk-size``)
    disk_controller: str = "ide"  # ``--disk-controller``: "ide" (PIIX3) or "ahci" (ICH9)
    on_detect: tuple[str, ...] = DEFAULT_ACTIONS  # what a detection does (``--on-detect``)
    net: NetSpec | None = None  # the guest NIC's backend (``--net``); no NIC without one
    net_config: NetConfig = field(default_factory=NetConfig)  # ``--hv-mac/--hv-ip/--update-port``
    guest_mac: bytes = layout.GUEST_MAC  # the guest NIC's MAC
    capture: Path | None = None  # every frame through the hypervisor's switch (``--capture``)
    #: ``update_signatures`` answers only once its database is active (``--sync-updates``): the
    #: guest's pause then includes the compile. Read at each call: it may change between runs.
    sync_updates: bool = False
    #: The CPU vendor the guest sees (``--cpu``): ``intel`` (CPUID "GenuineIntel", the hypercall
    #: is VMCALL) or ``amd`` ("AuthenticAMD", VMMCALL); the other vendor's instruction is a #UD.
    cpu: str = CPU_VENDORS[0]
    #: Guest time follows the host's clock (``--realtime``) instead of the guest's own work.
    realtime: bool = False
    #: ELF programs: the host directory whose tree the program sees read-only as its root, where
    #: a dynamically linked program's loader and libraries come from (``--sysroot``; docs/ELF.md).
    sysroot: Path | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``exit`` is the final VM exit (Halt, Fault, Timeout or StopRequest)."""

    exit: Exit
    outcome: Outcome

    @property
    def halted(self) -> bool:
        return isinstance(self.exit, Halt)
