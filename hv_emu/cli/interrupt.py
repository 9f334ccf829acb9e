"""Ctrl-C during ``hv-emu run``: end the guest's run promptly, as an ending like any other.

Models: a VMM front end's SIGINT handling (QEMU's ``-nographic`` Ctrl-C ends it with a line and
its outputs). Python runs a signal handler only in the main thread between two bytecodes, so
while Unicorn runs guest code without calling a hook (a tight loop) no handler runs at all, and
a ``KeyboardInterrupt`` raised inside a hook (a ctypes callback) can be lost in Unicorn's C
frames. So, within ``ctrl_c_ends``:

- SIGINT's handler never raises while the vCPU runs (``Vcpu.run`` on the stack): it calls
  ``Vcpu.interrupt``, which stops ``emu_start`` and cuts short a host wait (a Linux program's
  read of standard input, ``vcpu/stopping.py``); the run returns ``StopRequest(INTERRUPTED)``.
- Outside a run (the gdb stub waiting for gdb, or between its commands) it also raises
  ``KeyboardInterrupt``, which ``run.py`` turns into the same ending.
- The C-level handler writes the signal's number to a pipe (``signal.set_wakeup_fd``) even
  while the main thread is inside ``emu_start``; a watcher thread reads it and calls
  ``Vcpu.interrupt`` from there (``emu_stop`` from another thread, docs/UNICORN.md U23), again
  every ``REPEAT`` seconds until the block ends (a stop that landed just before ``emu_start``
  began is not lost).

Follows: signal(7), Python's ``signal`` module (handlers in the main thread; ``set_wakeup_fd``).

Leaves out: other signals (SIGTERM keeps its default: the process ends, outputs are temporaries
that stay behind, ``--events`` keeps what it had written).

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

REPEAT = 0.1  # seconds between two stop requests once Ctrl-C was pressed
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


@contextlib.contextmanager
def ctrl_c_ends(vcpu: Vcpu) -> Iterator[None]:
    """Within the block, Ctrl-C ends ``vcpu``'s run (the module docstring); outside the main
    thread (a test bench's worker) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    quit_read, quit_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_sigint(_signum: int, frame: FrameType | None) -> None:
        vcpu.interrupt()
        if not _in_run(frame):
            raise KeyboardInterrupt

    def watch() -> None:
        pressed = False
        while True:
            readable, _, _ = select.select([read_end, quit_read], [], [],
                                           REPEAT if pressed else None)  # fmt: skip
            if quit_read in readable:
                return
            if read_end in readable:
                with contextlib.suppress(BlockingIOError):
                    pressed = pressed or signal.SIGINT in os.read(read_end, 64)
            if pressed:
                vcpu.interrupt()

    old_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    old_handler = signal.signal(signal.SIGINT, on_sigint)
    watcher = threading.Thread(target=watch, name="hv-emu ctrl-c", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_handler)
        signal.set_wakeup_fd(old_fd)
        os.write(quit_write, b"q")
        watcher.join()
        for fd in (read_end, write_end, quit_read, quit_write):
            os.close(fd)
