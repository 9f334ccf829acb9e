"""The interpreter's thread switch interval, shortened while any guest network runs.

Models: one process-wide setting shared by every ``GuestNetwork`` of the process: a flooded I/O
thread holds the GIL nearly all the time, and every other thread (the vCPU's, the verifier's,
a test's or benchmark's sender) would wait a whole interval (5 ms by default) for it at each
wake-up. ``hold`` shortens it to at most ``SWITCH_INTERVAL``; the last ``release`` gives the
interpreter back the interval it had before the first ``hold``, however the networks' starts
and stops interleave.

Follows: ``sys.setswitchinterval``; docs/PERFORMANCE.md, "Issue 11: batches" (the measurement).

Leaves out: anyone else changing the interval meanwhile (the last release restores the value
saved at the first hold).

Guest controls: nothing.
"""

from __future__ import annotations

import sys
import threading

#: The interpreter's thread switch interval while a network runs (at most; 5 ms by default): a
#: pusher sharing the process with a flooded I/O thread sent 411-532 datagrams a second at
#: 5 ms, 1,019-1,044 at 0.5 ms (docs/PERFORMANCE.md, "Issue 11: batches").
SWITCH_INTERVAL = 0.0005

_lock = threading.Lock()
_holders = 0
_saved = 0.0


def hold() -> None:
    """A network starts: the first one shortens the interval."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved, SWITCH_INTERVAL))
        _holders += 1


def release() -> None:
    """A network that held the interval stopped: the last one restores it."""
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0:
            sys.setswitchinterval(_saved)
