"""Memory-mapped I/O: guest loads and stores to a device's register window become device calls.

Models: the MMIO half of a VMM's exit handling (KVM_EXIT_MMIO seen from the VMM): a window of
guest-physical pages that is not RAM, where every load calls the device's ``mmio_read`` and every
store its ``mmio_write`` with the offset in the window and the size, without leaving
``emu_start``.

Follows: docs/UNICORN.md (Unicorn 2.1.4): ``Uc.mmio_map`` takes whole 4 KiB pages outside RAM
(U50); the callbacks see naturally aligned 1-, 2- and 4-byte accesses only, an 8-byte access
arriving as two 4-byte ones, an unaligned load as two aligned loads of its size and an unaligned
store as single bytes (U51); ``emu_stop`` from an MMIO callback ends the run with RIP still on the
instruction, which runs again (the access is replayed) when the run resumes (U52). So a store
never stops the run: the host writes a device makes to guest RAM from a store (DMA, completion
structures) only mark the translated code stale, and the flush happens at the next MMIO *load*
(which stops, and is replayed once the cache is flushed: loads of hv-emu's devices have no side
effects) or the next exit that ends ``emu_start``. An exception raised by a device is kept for the
run loop, never unwound through Unicorn's frames (U22).

Leaves out: 8-byte device registers, MMIO windows that move (BAR reprogramming), instruction
fetches from a window (a fetch there faults as Unicorn reports it), MMIO accesses as exit values
(they never leave the callback: ``--trace`` and exit observers do not see them).

Guest controls: the address within the window, the access size and alignment, the value stored,
and how often it polls. Devices see only offsets and sizes that U51 allows.
"""

from __future__ import annotations

import unicorn

from hv_emu.mmio import MmioDevice
from hv_emu.vcpu.traps import Traps


class MmioTraps(Traps):
    """The traps plus MMIO windows (``map_mmio``)."""

    #: Set by the run loop (``Vcpu``) when host code wrote guest RAM: translated code may be stale.
    _stale_code: bool
    #: Inside an MMIO store: a host write to RAM must not stop the run there (U52).
    _in_mmio_write = False
    #: The callbacks Unicorn holds, kept alive with the engine.
    _mmio_callbacks: list[object]

    def map_mmio(self, base: int, size: int, device: MmioDevice) -> None:
        """Map ``[base, base + size)`` (whole pages outside RAM) to ``device``."""
        if not hasattr(self, "_mmio_callbacks"):
            self._mmio_callbacks = []

        def read(uc: unicorn.Uc, offset: int, width: int, _ud: object) -> int:
            if self._stale_code and self._emulating:
                # Host code wrote RAM since the last flush (a store's DMA): end the run here; the
                # load is replayed after the flush (U52) and only then reaches the device, so the
                # device sees it once. This value is thrown away.
                self._resume = True
                uc.emu_stop()
                return 0
            try:
                return device.mmio_read(offset, width) & ((1 << (8 * width)) - 1)
            except BaseException as err:
                self._hook_error(err)
                return (1 << (8 * width)) - 1

        def write(uc: unicorn.Uc, offset: int, width: int, value: int, _ud: object) -> None:
            self._in_mmio_write = True
            try:
                device.mmio_write(offset, width, value & ((1 << (8 * width)) - 1))
            except BaseException as err:
                self._hook_error(err)  # stops, and the store would be replayed: the run ends
            finally:
                self._in_mmio_write = False

        self._mmio_callbacks += [read, write]
        self.uc.mmio_map(base, size, read, None, write, None)
