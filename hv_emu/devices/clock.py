"""Guest time: the clock the timer devices count on, virtual and deterministic by default.

Models: the time base a VMM gives its guest's timers. Virtual (the default): guest time is a
counter of nanoseconds that only the vCPU moves forward, by the guest code it runs (while a
timer is armed: the run loop's instruction budget, ``vcpu/platform.py``) and by each access
to a timer's ports (an ISA I/O cycle, ``IO_NS``), and that jumps to the next timer deadline
when the guest halts waiting for an interrupt. The same guest then sees the same time at the
same instruction in every run, so runs, traces and tests are reproducible. Real time
(``hv-emu run --realtime``): guest time is the host's monotonic clock since the machine was
built, for guests that must pace themselves against the outside world.

Follows: QEMU's ``-icount`` (virtual time from executed instructions, skipping ahead when the
guest is idle) and its ``QEMU_CLOCK_VIRTUAL``; docs/DEVICES.md (guest time) for the numbers.

Leaves out: drift and scaling between the two modes, a TSC derived from this clock (RDTSC is
Unicorn's own), more than one timeline.

Guest controls: how fast its virtual time advances (by running code and touching ports);
never the host's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: One access to a timer port, in guest nanoseconds: an ISA I/O cycle takes about 1 µs.
IO_NS = 1000


class GuestClock:
    """Guest time in nanoseconds: virtual unless ``realtime``."""

    def __init__(self, *, realtime: bool = False,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:  # fmt: skip
        self.realtime = realtime
        self._monotonic_ns = monotonic_ns
        self._origin = monotonic_ns()
        self._virtual = 0

    def now(self) -> int:
        if self.realtime:
            return self._monotonic_ns() - self._origin
        return self._virtual

    def advance(self, ns: int) -> None:
        """The guest did ``ns`` worth of work (virtual time only)."""
        if not self.realtime:
            self._virtual += ns

    def touch(self) -> None:
        """One access to a timer's port."""
        if not self.realtime:
            self._virtual += IO_NS

    def skip_to(self, deadline: int) -> None:
        """The guest is idle until ``deadline``: virtual time jumps there; real time sleeps."""
        if self.realtime:
            delay = deadline - self.now()
            if delay > 0:
                time.sleep(delay / 1e9)
        elif deadline > self._virtual:
            self._virtual = deadline
