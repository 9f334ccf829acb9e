"""Ctrl-C, SIGTERM and SIGHUP during ``hv-emu run``: end the guest's run promptly, as an ending like
any other.

Models: a VMM front end's handling of the signals that ask it to end (QEMU's ``-nographic`` Ctrl-C,
and its SIGTERM and SIGHUP, "terminating on signal N", end it with a line and its outputs): a
``kill PID``, a closed terminal, a CI runner's or ``timeout(1)``'s limit. Every signal of
``hv_emu.vcpu.stopping.ENDINGS`` (the one table) goes through the same handler. Python runs a
signal handler only in the main thread between two bytecodes, so while Unicorn runs guest code
without calling a hook (a tight loop) no handler runs at all, and a ``KeyboardInterrupt`` raised
inside a hook (a ctypes callback) can be lost in Unicorn's C frames. So, within ``signals_end``:

- The handler never raises while the vCPU runs (``Vcpu.run`` on the stack): it calls
  ``Vcpu.interrupt`` with the signal's number, which stops ``emu_start`` (again and again until the
  run returns, ``vcpu/stopping.py``) and cuts short a host wait (a Linux program's read of
  standard input); the run returns a ``StopRequest`` naming the first signal.
- Outside a run (before the machine is built, the gdb stub waiting for gdb or between its
  commands, after the run) it raises ``KeyboardInterrupt``, whatever the signal; ``Ending.signal``
  says which it was, and ``run.py`` turns it into the same ending (or, before the guest started,
  into the signal's line and status with no output touched).
- The C-level handler writes the signal's number to a pipe (``signal.set_wakeup_fd``) even
  while the main thread is inside ``emu_start``; a watcher thread reads it and calls
  ``Vcpu.interrupt`` from there (``emu_stop`` from another thread, docs/UNICORN.md U23).

Follows: signal(7) (SIGHUP 1, SIGINT 2, SIGTERM 15; a shell shows 128 + the number), Python's
``signal`` module (handlers in the main thread; ``set_wakeup_fd``).

A signal ignored when the block begins (``nohup`` ignores SIGHUP; a shell ignores SIGINT for a
job a script puts in the background) is left ignored.

Leaves out: other signals (SIGKILL cannot be caught: the process ends, outputs are temporaries that
stay behind, ``--events`` keeps what it had written; SIGQUIT and the rest keep their default).

Guest controls: nothing; the guest may only be somewhere slow to stop.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from hv_emu.vcpu.runloop import Vcpu
from hv_emu.vcpu.stopping import ENDINGS, SignalEnding

_RUN_CODE = Vcpu.run.__code__
_MAX_FRAMES = 10_000  # a Python stack is never deeper (the recursion limit is 1000)


def _in_run(frame: FrameType | None) -> bool:
    """Whether ``Vcpu.run`` is on the interrupted main thread's stack."""
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return False
        if frame.f_code is _RUN_CODE:
            return True
        frame = frame.f_back
    return False


class Ending:
    """What the signals act on (``vcpu``, once the machine is built) and the first one received."""

    def __init__(self) -> None:
        self.vcpu: Vcpu | None = None
        self.signal: SignalEnding | None = None

    def received(self, signum: int) -> None:
        if self.signal is None:
            self.signal = ENDINGS.get(signum)
        if self.vcpu is not None:
            self.vcpu.interrupt(signum)


@contextlib.contextmanager
def signals_end() -> Iterator[Ending]:
    """Within the block, every signal of ``ENDINGS`` ends the run of the ``vcpu`` set on the
    ``Ending`` it yields (the module docstring); outside the main thread (a test bench's worker)
    nothing changes."""
    ending = Ending()
    if threading.current_thread() is not threading.main_thread():
        yield ending
        return
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    quit_read, quit_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        ending.received(signum)
        if ending.vcpu is None or not _in_run(frame):
            raise KeyboardInterrupt

    def watch() -> None:
        while True:
            readable, _, _ = select.select([read_end, quit_read], [], [])
            if quit_read in readable:
                return
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(read_end, 64):
                    if signum in ENDINGS:
                        ending.received(signum)

    old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # A signal ignored when hv-emu started (``nohup``'s SIGHUP, SIGINT for a job a script put in
    # the background) stays ignored, as the process's default would have it.
    old_handlers = {signum: signal.signal(signum, on_signal) for signum in ENDINGS
                    if signal.getsignal(signum) != signal.SIG_IGN}  # fmt: skip
    watcher = threading.Thread(target=watch, name="hv-emu signals", daemon=True)
    watcher.start()
    try:
        yield ending
    finally:
        for signum, old in old_handlers.items():
            signal.signal(signum, old)
        signal.set_wakeup_fd(old_fd)
        os.write(quit_write, b"q")
        watcher.join()
        for fd in (read_end, write_end, quit_read, quit_write):
            os.close(fd)
