"""The time of day and the clocks of a Linux guest program: the host's, read on each call.

Models: ``clock_gettime``, ``clock_getres``, ``gettimeofday`` and ``time`` as the kernel answers
them when there is no vDSO (there is none here, so glibc makes the real system calls): the
clocks ``CLOCK_REALTIME`` (0) to ``CLOCK_BOOTTIME`` (7) are the host's same clocks (the CPU-time
clocks 2 and 3 are hv-emu's own process and thread), written as ``struct timespec`` /
``struct timeval`` of the program's ABI: two 64-bit words on x86-64 and for i386's
``clock_gettime64``, two 32-bit words for i386's older calls (whose ``time_t`` ends in 2038).

Follows: clock_gettime(2), gettimeofday(2), time(2); ``include/uapi/linux/time.h`` (clock ids),
``arch/x86/entry/syscalls`` (``clock_gettime64`` is i386's 403).

Leaves out: setting clocks (``clock_settime``, ``settimeofday``), timers, ``nanosleep``, the
time zone of ``gettimeofday`` (written as zero, as Linux's is), clock ids of other processes.

Guest controls: the clock id (``EINVAL`` if unknown) and the pointers (``EFAULT`` if bad, through
the caller); nothing else.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Protocol

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError

#: The clock ids answered (``CLOCK_REALTIME`` .. ``CLOCK_BOOTTIME``), all of which Linux hosts have.
CLOCK_IDS = range(8)
_NS = 1_000_000_000


class Call(Protocol):
    args: tuple[int, ...]
    bits: int

    def write(self, va: int, data: bytes) -> None: ...


def _pair(c: Call, wide: bool, first: int, second: int) -> bytes:
    """A ``timespec``/``timeval``: two words, 64-bit unless an i386 call with a 32-bit time_t."""
    if c.bits == 64 or wide:
        return struct.pack("<qq", first, second)
    return struct.pack("<ii", first & 0x7FFFFFFF, second)  # time_t: signed 32 bits until 2038


class ClockCalls:
    """The handlers; ``now(clock_id)`` is the host's clock in nanoseconds (tests replace it)."""

    def __init__(self, now: Callable[[int], int] = time.clock_gettime_ns) -> None:
        self.now = now

    def handlers(self) -> dict[str, Callable[[Call], int]]:
        return {
            "clock_gettime": lambda c: self._gettime(c, wide=False),
            "clock_gettime64": lambda c: self._gettime(c, wide=True),
            "clock_getres": lambda c: self._getres(c, wide=False),
            "clock_getres_time64": lambda c: self._getres(c, wide=True),
            "gettimeofday": self._gettimeofday, "time": self._time,
        }  # fmt: skip

    def _clock(self, clock_id: int) -> int:
        if clock_id not in CLOCK_IDS:
            raise SyscallError(Errno.EINVAL, f"clock {clock_id}")
        return self.now(clock_id)

    def _gettime(self, c: Call, *, wide: bool) -> int:
        ns = self._clock(c.args[0])
        c.write(c.args[1], _pair(c, wide, ns // _NS, ns % _NS))
        return 0

    def _getres(self, c: Call, *, wide: bool) -> int:
        self._clock(c.args[0])
        if c.args[1]:
            c.write(c.args[1], _pair(c, wide, 0, 1))  # nanosecond resolution, as Linux reports
        return 0

    def _gettimeofday(self, c: Call) -> int:
        ns = self.now(time.CLOCK_REALTIME)
        if c.args[0]:
            c.write(c.args[0], _pair(c, False, ns // _NS, ns % _NS // 1000))
        if c.args[1]:
            c.write(c.args[1], bytes(8))  # struct timezone: minutes west, DST type
        return 0

    def _time(self, c: Call) -> int:
        seconds = self.now(time.CLOCK_REALTIME) // _NS
        if c.args[0]:
            c.write(c.args[0], seconds.to_bytes(c.bits // 8, "little"))
        return seconds
