"""Port devices made of bound methods: how a device with several register blocks joins the bus.

Models: the glue between one device model and the port bus when the device owns more than one
range (an ATA channel's command and control blocks, PCI's address and data ports): each range is a
view whose ``io_read``/``io_write`` are the device's own methods, so the bus calls them directly.
A ``BlockPortView`` also lets the bus hand string I/O to the device a block at a time, both
ways (``bus.BlockPortDevice``).

Follows: ``hv_emu/bus.py`` (``PortDevice``, ``BlockPortDevice``); vm-superio's devices, which
expose plain methods and leave the bus to the VMM.

Leaves out: nothing of its own; what the device leaves out is in the device's module.

Guest controls: nothing here; the offsets, sizes and values pass through to the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PortView:
    """A ``PortDevice`` made of two bound methods. The methods are the fields themselves, so the
    bus calls the device's method directly, with no forwarding call per access."""

    io_read: Callable[[int, int], int]
    io_write: Callable[[int, int, int], None]


@dataclass(frozen=True)
class BlockPortView(PortView):
    """A ``PortView`` that also takes runs of OUTs and gives runs of INs at once
    (``bus.BlockPortDevice``)."""

    io_write_room: Callable[[int, int], int]
    io_write_block: Callable[[int, int, bytes], None]
    io_read_room: Callable[[int, int], int]
    io_read_block: Callable[[int, int, int], bytes]
