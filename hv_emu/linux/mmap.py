"""The mmap arena of a Linux process: which of its pages are mapped, where a new mapping goes.

Models: the part of Linux's ``mm/mmap.c`` that picks addresses: ``get_unmapped_area`` finds a
free range for ``mmap(NULL, ...)`` (here the lowest one that fits, bottom up, where Linux goes top
down), ``MAP_FIXED`` takes the range asked for whatever was there (``MAP_FIXED_NOREPLACE``
refuses with ``EEXIST`` if any of it is in use), and ``munmap`` gives pages back for reuse. The
arena is one range of guest-virtual memory the loader mapped, writable, up front
(``loaders/elf_process.py``); this module only keeps the books (sorted, merged ``[start, end)``
ranges in use), so it is a pure data structure, tested without a CPU.

Follows: mmap(2) and munmap(2) (page-aligned addresses, lengths rounded up to pages, ``EINVAL``,
``ENOMEM``, ``EEXIST``), ``vm.max_map_count`` (``MAX_MAPS``).

Leaves out: mappings outside the arena (``MAP_FIXED`` there is ``ENOMEM``; ``munmap`` there
succeeds and changes nothing), address hints (ignored, as Linux may), top-down placement,
per-page protections (``dynamic.py`` says what ``mprotect`` does).

Guest controls: every address and length; all are checked against the arena before the books
change, and the number of separate ranges is bounded (``MAX_MAPS``), so no guest value can make a
walk here longer than that.
"""

from __future__ import annotations

import bisect

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError

PAGE = 0x1000
#: Most separate ranges in use at once (Linux's default ``vm.max_map_count``).
MAX_MAPS = 65530


class MemoryMap:
    """The pages of ``[start, end)`` in use, as sorted disjoint ranges."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, max(start, end)
        self._starts: list[int] = []
        self._ends: list[int] = []

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The ranges in use, lowest first (merged: no two touch)."""
        return list(zip(self._starts, self._ends, strict=True))

    @property
    def used(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def inside(self, start: int, size: int) -> bool:
        """Whether ``[start, start + size)`` lies in the arena."""
        return self.start <= start and start + size <= self.end

    def find(self, size: int) -> int:
        """The lowest free address with ``size`` free bytes after it (``ENOMEM`` if none)."""
        at = self.start
        for s, e in self.ranges:
            if s - at >= size:
                return at
            at = e
        if self.end - at >= size:
            return at
        raise SyscallError(Errno.ENOMEM, f"no free {size:#x} bytes in the mmap arena")

    def overlaps(self, start: int, size: int) -> bool:
        """Whether any page of ``[start, start + size)`` is in use."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and self._ends[i] > start:
            return True
        j = bisect.bisect_left(self._starts, start)
        return j < len(self._starts) and self._starts[j] < start + size

    def take(self, start: int, size: int) -> None:
        """Mark ``[start, start + size)`` in use (it must lie in the arena)."""
        if not self.inside(start, size) or size <= 0:
            raise SyscallError(Errno.ENOMEM, f"{start:#x}+{size:#x} is outside the mmap arena")
        end = start + size
        lo = bisect.bisect_left(self._ends, start)  # first range ending at or after start
        hi = bisect.bisect_right(self._starts, end)  # ranges starting at or before end
        if lo < hi:
            start, end = min(start, self._starts[lo]), max(end, self._ends[hi - 1])
        elif len(self._starts) >= MAX_MAPS:
            raise SyscallError(Errno.ENOMEM, f"more than {MAX_MAPS} mappings")
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def release(self, start: int, size: int) -> None:
        """Give ``[start, start + size)`` back (the part in the arena; the rest is ignored)."""
        start, end = max(start, self.start), min(start + size, self.end)
        if start >= end:
            return
        lo = bisect.bisect_right(self._ends, start)  # first range ending after start
        hi = bisect.bisect_left(self._starts, end)  # ranges starting before end
        if lo >= hi:
            return
        kept: list[tuple[int, int]] = []
        if self._starts[lo] < start:
            kept.append((self._starts[lo], start))
        if self._ends[hi - 1] > end:
            kept.append((end, self._ends[hi - 1]))
        if len(self._starts) - (hi - lo) + len(kept) > MAX_MAPS:
            raise SyscallError(Errno.ENOMEM, f"more than {MAX_MAPS} mappings")
        self._starts[lo:hi] = [s for s, _ in kept]
        self._ends[lo:hi] = [e for _, e in kept]
