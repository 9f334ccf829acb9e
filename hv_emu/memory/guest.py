"""Guest-physical memory: one block of RAM at address 0, bounds-checked in one place.

Models: the RAM of the virtual machine as the hypervisor sees it. The block is an anonymous ``mmap``
owned by this object; the vCPU maps the very same bytes into Unicorn (``mem_map_ptr``), so the CPU
and the hypervisor share them with no copy (docs/UNICORN.md U8). Devices (DMA), the loader and
hypercall handlers read and write through this class only.

Follows: rust-vmm ``vm-memory`` (``GuestMemory``: typed guest-physical addresses, every access
bounds-checked in one function). Unicorn: host writes do not invalidate translated code
(docs/UNICORN.md U9, U10), so every ``write`` tells its listeners, and the vCPU registers one that
flushes translated code before the guest runs again.

Leaves out: memory holes and MMIO regions (RAM is contiguous from 0), dirty tracking, NUMA.

Guest controls: the contents of RAM and the addresses it asks the hypervisor to touch; every such
address goes through ``_check`` and fails with ``GuestMemoryError`` when it is outside RAM.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable

from hv_emu.errors import GuestMemoryError
from hv_emu.layout import PAGE_SIZE

#: Called with (guest-physical address, length) after every host write.
WriteListener = Callable[[int, int], None]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class GuestMemory:
    """Guest RAM of ``size`` bytes at guest-physical 0 (a multiple of the 4 KiB page)."""

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"guest RAM size {size:#x} is not a positive multiple of 4 KiB")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._view = memoryview(self._map)
        # Keeps the buffer exported, so its host address stays valid for Unicorn.
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self._listeners: list[WriteListener] = []

    # ------------------------------------------------------------------ bounds, in one place
    def _check(self, pa: int, n: int) -> None:
        if n < 0 or pa < 0 or pa + n > self.size:
            raise GuestMemoryError(pa, n)

    def contains(self, pa: int, n: int = 1) -> bool:
        """Whether ``[pa, pa+n)`` lies inside RAM."""
        return pa >= 0 and n >= 0 and pa + n <= self.size

    # ------------------------------------------------------------------ host access
    @property
    def host_address(self) -> int:
        """Host virtual address of guest-physical 0 (for ``Uc.mem_map_ptr``)."""
        return ctypes.addressof(self._anchor)

    def read(self, pa: int, n: int) -> bytes:
        """Copy ``n`` bytes out of guest RAM (one copy: the caller owns the result)."""
        self._check(pa, n)
        return self._view[pa : pa + n].tobytes()

    def view(self, pa: int, n: int) -> memoryview:
        """A zero-copy, read-only window on guest RAM. The guest may change it under you: never
        parse guest data through a view, copy it with ``read`` first (no double fetch)."""
        self._check(pa, n)
        return self._view[pa : pa + n].toreadonly()

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into guest RAM and tell the listeners (code-cache invalidation)."""
        n = len(data)
        self._check(pa, n)
        self._view[pa : pa + n] = data
        for listener in self._listeners:
            listener(pa, n)

    def fill(self, pa: int, n: int, byte: int = 0) -> None:
        """Set ``n`` bytes to ``byte``."""
        self.write(pa, bytes([byte]) * n)

    def zero(self, pa: int, n: int) -> None:
        """Set ``n`` bytes to zero, handing whole pages back to the host (``MADV_DONTNEED`` on
        private anonymous memory: they read as zeros again and cost nothing until touched), so
        zeroing a large region (an ELF program's heap) is cheap and commits no memory."""
        self._check(pa, n)
        start = -(-pa // PAGE_SIZE) * PAGE_SIZE
        end = (pa + n) // PAGE_SIZE * PAGE_SIZE
        edges = [(pa, n)]
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
            edges = [(pa, start - pa), (end, pa + n - end)]
        for at, length in edges:
            self._view[at : at + length] = bytes(length)
        for listener in self._listeners:
            listener(pa, n)

    def add_write_listener(self, listener: WriteListener) -> None:
        self._listeners.append(listener)

    # ------------------------------------------------------------------ little-endian scalars
    def read_u8(self, pa: int) -> int:
        self._check(pa, 1)
        return self._view[pa]

    def read_u16(self, pa: int) -> int:
        self._check(pa, 2)
        return int(_U16.unpack_from(self._view, pa)[0])

    def read_u32(self, pa: int) -> int:
        self._check(pa, 4)
        return int(_U32.unpack_from(self._view, pa)[0])

    def read_u64(self, pa: int) -> int:
        self._check(pa, 8)
        return int(_U64.unpack_from(self._view, pa)[0])

    def write_u8(self, pa: int, value: int) -> None:
        self.write(pa, bytes((value & 0xFF,)))

    def write_u16(self, pa: int, value: int) -> None:
        self.write(pa, _U16.pack(value & 0xFFFF))

    def write_u32(self, pa: int, value: int) -> None:
        self.write(pa, _U32.pack(value & 0xFFFFFFFF))

    def write_u64(self, pa: int, value: int) -> None:
        self.write(pa, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))
