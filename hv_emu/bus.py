"""The I/O port bus: which device answers an IN or OUT to a given port.

Models: the x86 I/O address space (64 Ki byte-wide ports) as a set of non-overlapping ranges, each
owned by one device that sees only the *offset* into its range, never the port number. A device
that takes runs of OUTs at once (a data port fed by ``rep outsw``) says so by being a
``BlockPortDevice``; the vCPU then moves a string instruction's block in one call.

Follows: rust-vmm ``vm-device`` (a bus keyed by ranges, overlapping insertions rejected). Intel SDM
vol. 1, 18.3 (port space, 1/2/4-byte accesses). docs/UNICORN.md U13: the vCPU's one IN and one
OUT hook dispatch here by port. Unknown ports behave like an empty ISA bus: reads float high (all
ones, where Unicorn alone would read 0) and writes vanish, and both are counted so a curious guest
is visible. The
lookup is one list index: a 64 Ki-entry table of bound handlers, filled when a device registers
(KVM's ``kvm_io_bus`` resolves in O(log n); QEMU's memory API flattens ranges into a table).

Leaves out: accesses that straddle two devices (a 4-byte IN at the last port of one range goes to
that device whole), port-I/O permission bitmaps, virtual-8086 I/O privilege checks.

Guest controls: the port, the access size (1, 2 or 4), the value written and, for string I/O,
the bytes of a block. The size is checked once here, so devices may trust it; a block is never
larger than the room its device gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from hv_emu.errors import ConfigError
from hv_emu.layout import PORT_SPACE

VALID_SIZES = (1, 2, 4)
_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}

#: A resolved IN: (port, size) -> value, already masked to the size.
PortReader = Callable[[int, int], int]
#: A resolved OUT: (port, size, value).
PortWriter = Callable[[int, int, int], None]


class PortDevice(Protocol):
    """A device on the port bus. ``offset`` is relative to the device's range."""

    def io_read(self, offset: int, size: int) -> int: ...

    def io_write(self, offset: int, size: int, value: int) -> None: ...


@runtime_checkable
class BlockPortDevice(Protocol):
    """A port device that also takes runs of same-size OUTs to one offset, and gives runs of INs
    from one offset (string I/O).

    ``io_write_room`` says how many consecutive OUTs of ``size`` to ``offset`` it would take at
    once right now (0: send them one by one); ``io_write_block`` then gets the bytes of at most that
    many, in the order they would have been written, with the same effect as that many
    ``io_write`` calls. ``io_read_room`` and ``io_read_block(offset, size, count)`` are the same
    for INs: the bytes of ``count`` consecutive ``io_read`` calls, first element first, with the
    same effect on the device.
    """

    def io_write_room(self, offset: int, size: int) -> int: ...

    def io_write_block(self, offset: int, size: int, data: bytes) -> None: ...

    def io_read_room(self, offset: int, size: int) -> int: ...

    def io_read_block(self, offset: int, size: int, count: int) -> bytes: ...


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
        # One entry per port: the owner, and its IN and OUT bound to the owner's base.
        self._owners: list[PortRange | None] = [None] * PORT_SPACE
        #: The IN of each port 0..0xFFFF, resolved: ``readers[port](port, size)`` is ``read``
        #: without its checks, for a caller that guarantees them (the vCPU's port hooks: Unicorn
        #: gives 16-bit ports and sizes 1, 2, 4). Read-only outside this class.
        self.readers: list[PortReader] = [self._read_unknown] * PORT_SPACE
        #: The OUT of each port, likewise.
        self.writers: list[PortWriter] = [self._write_unknown] * PORT_SPACE
        #: The ports whose owner takes string I/O in blocks: port -> (device, offset).
        self.block_ports: dict[int, tuple[BlockPortDevice, int]] = {}
        # Accesses to ports no device owns, one counter per port and direction (see unknown).
        self._unknown_in = [0] * PORT_SPACE
        self._unknown_out = [0] * PORT_SPACE
        self._unknown_beyond: Counter[tuple[str, int]] = Counter()  # ports past 0xFFFF

    def register(self, base: int, length: int, device: PortDevice, name: str) -> None:
        """Give ``device`` the ports ``[base, base+length)``; overlaps are a configuration error."""
        if length <= 0 or base < 0 or base + length > PORT_SPACE:
            raise ConfigError(f"port range {base:#x}+{length} for {name} is outside the port space")
        new = PortRange(base, length, name, device)
        for other in self._ranges:
            if new.base < other.end and other.base < new.end:
                raise ConfigError(
                    f"port range {base:#x}-{new.end - 1:#x} ({name}) overlaps "
                    f"{other.base:#x}-{other.end - 1:#x} ({other.name})"
                )
        self._ranges.append(new)
        self._ranges.sort(key=lambda r: r.base)
        reader, writer = _bind(new)
        self._owners[base : new.end] = [new] * length
        self.readers[base : new.end] = [reader] * length
        self.writers[base : new.end] = [writer] * length
        if isinstance(device, BlockPortDevice):
            self.block_ports.update((base + i, (device, i)) for i in range(length))

    def find(self, port: int) -> PortRange | None:
        """The range that owns ``port``, if any."""
        return self._owners[port] if 0 <= port < PORT_SPACE else None

    @property
    def ranges(self) -> tuple[PortRange, ...]:
        return tuple(self._ranges)

    def read(self, port: int, size: int) -> int:
        """An IN of ``size`` bytes from ``port``: the owner's answer, or all ones."""
        if size not in VALID_SIZES:
            raise ValueError(f"I/O access size {size} is not 1, 2 or 4")
        if 0 <= port < PORT_SPACE:
            return self.readers[port](port, size)
        return self._read_unknown(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        """An OUT of ``size`` bytes to ``port``: to the owner, or counted and dropped."""
        if size not in VALID_SIZES:
            raise ValueError(f"I/O access size {size} is not 1, 2 or 4")
        if 0 <= port < PORT_SPACE:
            self.writers[port](port, size, value)
        else:
            self._write_unknown(port, size, value)

        # ------------------------------------------------------------------ string I/O
    def write_room(self, port: int, size: int) -> int:
        """How many consecutive OUTs of ``size`` to ``port`` its owner takes at once (0: none,
        or an owner that takes no blocks)."""
        owner = self.block_ports.get(port)
        if owner is None or size not in VALID_SIZES:
            return 0
        device, offset = owner
        return max(0, device.io_write_room(offset, size))

    def write_block(self, port: int, size: int, data: bytes) -> None:
        """Consecutive OUTs of ``size`` bytes each, lowest-addressed first in ``data``: at most
        what ``write_room`` just said."""
        device, offset = self.block_ports[port]
        device.io_write_block(offset, size, data)

    def read_room(self, port: int, size: int) -> int:
        """How many consecutive INs of ``size`` from ``port`` its owner gives at once (0: none,
        or an owner that gives no blocks)."""
        owner = self.block_ports.get(port)
        if owner is None or size not in VALID_SIZES:
            return 0
        device, offset = owner
        return max(0, device.io_read_room(offset, size))

    def read_block(self, port: int, size: int, count: int) -> bytes:
        """The bytes of ``count`` consecutive INs of ``size`` bytes each, first element first: at
        most what ``read_room`` just said."""
        device, offset = self.block_ports[port]
        data = device.io_read_block(offset, size, count)
        if len(data) != count * size:
            raise ValueError(f"{len(data)} bytes for {count} INs of {size}")  # a device bug
        return data

    # ------------------------------------------------------------------ the empty bus
    @property
    def unknown(self) -> Counter[tuple[str, int]]:
        """Accesses to ports no device owns, by (direction, port): ("in", 0x80) -> 3. Built on
        each call from per-port counters (a count costs the hot path one list store)."""
        counts = Counter(self._unknown_beyond)
        for direction, table in (("in", self._unknown_in), ("out", self._unknown_out)):
            counts.update({(direction, port): n for port, n in enumerate(table) if n})
        return counts

    def _read_unknown(self, port: int, size: int) -> int:
        if 0 <= port < PORT_SPACE:
            self._unknown_in[port] += 1
        else:
            self._unknown_beyond["in", port] += 1
        return _ONES[size]

    def _write_unknown(self, port: int, size: int, value: int) -> None:
        if 0 <= port < PORT_SPACE:
            self._unknown_out[port] += 1
        else:
            self._unknown_beyond["out", port] += 1


def _bind(owner: PortRange) -> tuple[PortReader, PortWriter]:
    """The IN and OUT of ``owner``'s device as functions of the port: offset and mask applied."""
    io_read, io_write, base = owner.device.io_read, owner.device.io_write, owner.base

    def read(port: int, size: int) -> int:
        return io_read(port - base, size) & _ONES[size]

    def write(port: int, size: int, value: int) -> None:
        io_write(port - base, size, value & _ONES[size])

    return read, write
