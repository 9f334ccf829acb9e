"""The I/O port bus: which device answers an IN or OUT to a given port.

Models: the x86 I/O address space (64 Ki byte-wide ports) as a set of non-overlapping ranges, each
owned by one device that sees only the *offset* into its range, never the port number.

Follows: rust-vmm ``vm-device`` (a bus keyed by ranges, overlapping insertions rejected). Intel SDM
vol. 1, 18.3 (port space, 1/2/4-byte accesses). Unknown ports behave like an empty ISA bus: reads
float high (all ones) and writes vanish, and both are counted so a curious guest is visible.

Leaves out: accesses that straddle two devices (a 4-byte IN at the last port of one range goes to
that device whole), port-I/O permission bitmaps, virtual-8086 I/O privilege checks.

Guest controls: the port, the access size (1, 2 or 4) and the value written. The size is checked
once here, so devices may trust it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from hv_emu.errors import ConfigError
from hv_emu.layout import PORT_SPACE

VALID_SIZES = (1, 2, 4)
_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class PortDevice(Protocol):
    """A device on the port bus. ``offset`` is relative to the device's range."""

    def io_read(self, offset: int, size: int) -> int: ...

    def io_write(self, offset: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class PortRange:
    base: int
    length: int
    name: str
    device: PortDevice

    @property
    def end(self) -> int:
        return self.base + self.length


class PortIoBus:
    """Ranges of ports, each owned by one device; all-ones and a count for the rest."""

    def __init__(self) -> None:
        self._ranges: list[PortRange] = []
        self._bases: list[int] = []
        #: Accesses to ports no device owns, by (direction, port): ("in", 0x80) -> 3.
        self.unknown: Counter[tuple[str, int]] = Counter()

    def register(self, base: int, length: int, device: PortDevice, name: str) -> None:
        """Give ``device`` the ports ``[base, base+length)``; overlaps are a configuration error."""
        if length <= 0 or base < 0 or base + length > PORT_SPACE:
            raise ConfigError(f"port range {base:#x}+{length} for {name} is outside the port space")
        new = PortRange(base, length, name, device)
        i = bisect.bisect_left(self._bases, base)
        for neighbour in self._ranges[max(i - 1, 0) : i + 1]:
            if new.base < neighbour.end and neighbour.base < new.end:
                raise ConfigError(
                    f"port range {base:#x}-{new.end - 1:#x} ({name}) overlaps "
                    f"{neighbour.base:#x}-{neighbour.end - 1:#x} ({neighbour.name})"
                )
        self._ranges.insert(i, new)
        self._bases.insert(i, base)

    def find(self, port: int) -> PortRange | None:
        """The range that owns ``port``, if any."""
        i = bisect.bisect_right(self._bases, port) - 1
        if i >= 0 and port < self._ranges[i].end:
            return self._ranges[i]
        return None

    @property
    def ranges(self) -> tuple[PortRange, ...]:
        return tuple(self._ranges)

    def read(self, port: int, size: int) -> int:
        """An IN of ``size`` bytes from ``port``: the owner's answer, or all ones."""
        if size not in VALID_SIZES:
            raise ValueError(f"I/O access size {size} is not 1, 2 or 4")
        owner = self.find(port)
        if owner is None:
            self.unknown["in", port] += 1
            return _ONES[size]
        return owner.device.io_read(port - owner.base, size) & _ONES[size]

    def write(self, port: int, size: int, value: int) -> None:
        """An OUT of ``size`` bytes to ``port``: to the owner, or counted and dropped."""
        if size not in VALID_SIZES:
            raise ValueError(f"I/O access size {size} is not 1, 2 or 4")
        owner = self.find(port)
        if owner is None:
            self.unknown["out", port] += 1
            return
        owner.device.io_write(port - owner.base, size, value & _ONES[size])
