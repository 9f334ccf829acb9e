"""Ending a run from outside the guest: the watchdog and Ctrl-C, even in the middle of a host wait.

Models: what a VMM does when its user presses Ctrl-C or its time limit passes while a vCPU is
somewhere it cannot be stopped by ``emu_stop`` alone: the host side of an exit blocked in a
system call (a Linux program reading standard input, the only host wait a hook makes). QEMU
kicks its vCPU thread and the blocked read returns ``EINTR``; here the wait itself is a
``select`` on the descriptor and on a pipe of ``RunStop``'s own, which ``cut`` makes readable,
and a cut wait raises ``RunEnding`` (the hooks drop it and stop: the run loop then returns the
timeout or the interruption, docs/UNICORN.md U22). Ctrl-C is sticky (``interrupted``): every
later run of the vCPU ends at once too, while a watchdog's cut is forgotten when a new run starts.

Follows: select(2) and pipe(2) (the self-pipe trick); signal(7) (``hv_emu/cli/interrupt.py`` turns
SIGINT into ``Vcpu.interrupt``).

Leaves out: waits on anything but a readable descriptor (no other host call blocks: granted FIFOs
and sockets are refused when opened, and no system call sleeps).

Guest controls: nothing; the guest only decides that its program reads standard input.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import weakref

from hv_emu.errors import RunEnding

#: ``StopRequest.reason`` of a run ended by Ctrl-C (SIGINT): exit status 130 (``hv-emu run``).
INTERRUPTED = "interrupted (Ctrl-C)"


class RunStop:
    """Host waits the end of a run cuts short, and whether Ctrl-C asked for that end."""

    def __init__(self) -> None:
        #: Set by Ctrl-C (``Vcpu.interrupt``); never cleared: the machine's runs are over.
        self.interrupted = threading.Event()
        self._cut = False
        self._pipe: tuple[int, int] | None = None  # made at the first wait (few runs wait)
        self._lock = threading.Lock()

    def cut(self) -> None:
        """End every host wait, now and until ``rearm`` (any thread; never blocks)."""
        with self._lock:
            self._cut = True
            if self._pipe is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._pipe[1], b"x")

    def rearm(self) -> bool:
        """A new run starts: forget a watchdog's cut, not Ctrl-C's. True if interrupted."""
        with self._lock:
            if self.interrupted.is_set():
                return True
            self._cut = False
            if self._pipe is not None:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._pipe[0], 64):
                        pass
            return False

    def wait_readable(self, fd: int) -> None:
        """Wait until ``fd`` can be read without blocking; ``RunEnding`` if the run is ending
        first (or had already been told to end)."""
        with self._lock:
            if self._pipe is None:
                self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                weakref.finalize(self, _close, self._pipe)
            if self._cut:
                raise RunEnding("the run is ending")
            wake = self._pipe[0]
        # An error or a hang-up of fd makes it readable too: the read that follows reports it.
        readable, _, _ = select.select([fd, wake], [], [])
        if wake in readable:
            raise RunEnding("the run is ending")


def _close(pipe: tuple[int, int]) -> None:
    for fd in pipe:
        with contextlib.suppress(OSError):
            os.close(fd)
