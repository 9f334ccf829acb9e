"""The MMIO bus: which device answers a load or store to a memory-mapped register window.

Models: the part of the physical address space above RAM where PCI devices' memory BARs decode
(QEMU q35 puts the ICH9 AHCI's ABAR at 0xFEBF0000, ``layout.py``), as a set of non-overlapping,
page-aligned windows, each owned by one device that sees only the *offset* into its window and
the access size, never the address. ``machine.py`` registers the windows; the vCPU maps each one
(``Vcpu.map_mmio``, docs/UNICORN.md U50-U52).

Follows: the port bus (``bus.py``) and rust-vmm ``vm-device`` (a bus keyed by ranges, overlapping
insertions rejected). Unicorn's ``mmio_map`` takes whole 4 KiB pages (docs/UNICORN.md U50), so a
window is a multiple of 4 KiB at a 4 KiB boundary; a window may not overlap RAM.

Leaves out: moving a window after the guest starts (BAR reprogramming), windows that overlap RAM
(no shadowing), 8-byte device accesses (the CPU's are split into two 4-byte ones, U51).

Guest controls: the offset (within the window), the size (1, 2 or 4) and the value written. A
device must treat them as hostile: any offset of its window, any size, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hv_emu.errors import ConfigError
from hv_emu.layout import PAGE_SIZE

#: The physical address space hv-emu's guests address (32-bit BARs: below 4 GiB).
MMIO_SPACE = 1 << 32


class MmioDevice(Protocol):
    """A device on the MMIO bus. ``offset`` is relative to the device's window; ``size`` is 1, 2
    or 4 and the access is naturally aligned (docs/UNICORN.md U51)."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class MmioRegion:
    base: int
    size: int
    name: str
    device: MmioDevice

    @property
    def end(self) -> int:
        return self.base + self.size


class MmioBus:
    """Page-aligned windows above RAM, each owned by one device."""

    def __init__(self, ram_size: int) -> None:
        self.ram_size = ram_size
        self._regions: list[MmioRegion] = []

    def register(self, base: int, size: int, device: MmioDevice, name: str) -> MmioRegion:
        if base % PAGE_SIZE or size <= 0 or size % PAGE_SIZE:
            raise ConfigError(f"MMIO window {name} at {base:#x}+{size:#x} is not whole 4 KiB pages")
        if base < self.ram_size or base + size > MMIO_SPACE:
            raise ConfigError(f"MMIO window {name} at {base:#x} overlaps RAM or leaves 4 GiB")
        for other in self._regions:
            if base < other.end and other.base < base + size:
                raise ConfigError(f"MMIO window {name} overlaps {other.name}")
        region = MmioRegion(base, size, name, device)
        self._regions.append(region)
        return region

    @property
    def regions(self) -> tuple[MmioRegion, ...]:
        return tuple(self._regions)

    def find(self, address: int) -> MmioRegion | None:
        for region in self._regions:
            if region.base <= address < region.end:
                return region
        return None
