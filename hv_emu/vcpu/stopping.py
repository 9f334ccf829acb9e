"""Ending a run from outside the guest: the watchdog and a signal (Ctrl-C, SIGTERM, SIGHUP), even
in the middle of a host wait.

Models: what a VMM does when its user presses Ctrl-C (or ``kill``s it, or closes its terminal) or
its time limit passes while a vCPU is
somewhere it cannot be stopped by ``emu_stop`` alone: the host side of an exit blocked in a
system call (a Linux program reading standard input, the only host wait a hook makes). QEMU
kicks its vCPU thread and the blocked read returns ``EINTR``; here the wait itself is a
``select`` on the descriptor and on a pipe of ``RunStop``'s own, which ``cut`` makes readable,
and a cut wait raises ``RunEnding`` (the hooks drop it and stop: the run loop then returns the
timeout or the interruption, docs/UNICORN.md U22). A signal is sticky (``interrupted``, the first
one's number in ``signal_number``): every later run of the vCPU ends at once too, while a
watchdog's cut is forgotten when a new run starts. ``ENDINGS`` is the one table of the signals that
end a run: each one's ``StopRequest`` reason, its word and the exit status ``hv-emu run`` gives
(128 + its number, as a shell shows a process a signal killed).

A stop asked just before ``emu_start`` begins is lost (``emu_start`` clears a stop request made
before it, docs/UNICORN.md U74), so one ``emu_stop`` is not enough to end a run: ``Repeater``
repeats it every ``REPEAT`` seconds from a thread of its own until the run has returned, for the
watchdog and the signals alike (``Vcpu._watchdog_fire``).

Follows: select(2) and pipe(2) (the self-pipe trick); signal(7) (``hv_emu/cli/interrupt.py`` turns
SIGINT, SIGTERM and SIGHUP into ``Vcpu.interrupt``).

Leaves out: waits on anything but a readable descriptor (no other host call blocks: granted FIFOs
and sockets are refused when opened, and no system call sleeps).

Guest controls: nothing; the guest only decides that its program reads standard input.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.errors import RunEnding

REPEAT = 0.1  # seconds between two stop requests once a run was told to end


@dataclass(frozen=True)
class SignalEnding:
    """How a signal ends a run: ``word`` ("terminated") and ``shown`` ("SIGTERM", or "Ctrl-C")."""

    number: int
    word: str
    shown: str

    @property
    def reason(self) -> str:
        """The ``StopRequest.reason`` (and the ``stop`` event's) of a run it ended."""
        return f"{self.word} ({self.shown})"

    @property
    def status(self) -> int:
        """``hv-emu run``'s exit status: 128 + the signal's number, as a shell shows it."""
        return 128 + self.number


#: The signals that end a run, by number (the one table: ``hv_emu/cli/interrupt.py`` installs a
#: handler for each, ``run_status.py`` says each one's line and status).
ENDINGS: dict[int, SignalEnding] = {
    int(signal.SIGINT): SignalEnding(int(signal.SIGINT), "interrupted", "Ctrl-C"),
    int(signal.SIGTERM): SignalEnding(int(signal.SIGTERM), "terminated", "SIGTERM"),
    int(signal.SIGHUP): SignalEnding(int(signal.SIGHUP), "hung up", "SIGHUP"),
}
#: ``StopRequest.reason`` of a run ended by Ctrl-C (SIGINT): exit status 130 (``hv-emu run``).
INTERRUPTED = ENDINGS[signal.SIGINT].reason
#: ``StopRequest.reason`` of a run a debugger broke into (``Vcpu.pause``: gdb's Ctrl-C). Not an
#: ending: the debugger resumes the guest, and a later run goes on from there.
PAUSED = "paused by the debugger"


def ending_of(reason: str) -> SignalEnding | None:
    """The signal a ``StopRequest`` with this reason was ended by, if any."""
    return next((end for end in ENDINGS.values() if end.reason == reason), None)


class RunStop:
    """Host waits the end of a run cuts short, and whether a signal asked for that end."""

    def __init__(self) -> None:
        #: Set by a signal (``Vcpu.interrupt``); never cleared: the machine's runs are over.
        self.interrupted = threading.Event()
        self.signal_number: int | None = None  # the first signal's (``ENDINGS``)
        self._cut = False
        self._pipe: tuple[int, int] | None = None  # made at the first wait (few runs wait)
        self._lock = threading.RLock()  # a signal handler may take it in the main thread

    def interrupt(self, signum: int) -> None:
        """A signal ends the machine's runs (the first one's number is kept); ``cut`` follows."""
        with self._lock:
            if self.signal_number is None:
                self.signal_number = signum
            self.interrupted.set()

    def reason(self) -> str:
        """The ``StopRequest.reason`` of a run the signal ended (Ctrl-C's if none was named)."""
        ending = ENDINGS.get(self.signal_number if self.signal_number is not None else -1)
        return INTERRUPTED if ending is None else ending.reason

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


class Repeater:
    """Calls ``stop`` now and every ``REPEAT`` seconds, from a thread of its own, while ``wanted``
    holds and until ``cancel`` (the end of the run): a stop that landed before ``emu_start`` began
    is made again once it runs (U74). Any thread may call ``start``, as often as it likes."""

    def __init__(self, stop: Callable[[], None], wanted: Callable[[], bool]) -> None:
        self._stop, self._wanted = stop, wanted
        self._lock = threading.RLock()  # a signal handler may take it in the main thread
        self._running: tuple[threading.Thread, threading.Event] | None = None

    def start(self) -> None:
        self._stop()
        with self._lock:
            if self._running is not None and self._running[0].is_alive():
                return  # already repeating
            cancelled = threading.Event()
            thread = threading.Thread(target=self._loop, args=(cancelled,), name="hv-emu stop",
                                      daemon=True)  # fmt: skip
            self._running = (thread, cancelled)
            thread.start()

    def _loop(self, cancelled: threading.Event) -> None:
        while not cancelled.wait(REPEAT) and self._wanted():
            self._stop()

    def cancel(self) -> None:
        """The run returned: stop repeating, and wait until the thread has (never from it)."""
        with self._lock:
            running, self._running = self._running, None
        if running is not None:
            running[1].set()
            running[0].join()


def _close(pipe: tuple[int, int]) -> None:
    for fd in pipe:
        with contextlib.suppress(OSError):
            os.close(fd)
