"""gdb's Ctrl-C: a 0x03 byte on the connection while the guest runs pauses the vCPU.

Models: the break-in of a remote debugging session. While gdb waits for the stop reply to a
``c`` packet, the user's Ctrl-C makes it send one bare byte, 0x03, outside any packet; the stub
must notice it while the guest is running and answer with a stop reply for SIGINT (``T02``), as
gdbserver and QEMU's gdb stub do. ``BreakIn.watching`` holds a thread over the connection for the
length of one continue: it waits (``select``) on the socket and on a pipe of its own that ends
the watch, peeks at the first byte that arrives, and on 0x03 takes it and calls ``pause``
(``Vcpu.pause``: the run returns ``StopRequest(PAUSED)`` at the next point Unicorn stops at).

Follows: the GDB manual, appendix E, "Interrupts" (the 0x03 byte; the stop reply that follows
may name SIGINT).

Leaves out: anything but 0x03 while the guest runs: gdb sends nothing else in all-stop mode
before the stop reply, so any other byte (or the connection's end) is left where it is for the
conversation after the stop, and the watch ends. A pause that comes after the run already
stopped for another reason is forgotten (``Vcpu.clear_pause``): gdb is told that reason.

The debugger controls the byte and its timing; it is a user on localhost. The guest controls
nothing here.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from collections.abc import Callable, Iterator

#: The byte gdb sends for the user's Ctrl-C.
BREAK = b"\x03"


class BreakIn:
    """Watches ``conn`` during a continue and calls ``pause`` when gdb sends 0x03."""

    def __init__(self, conn: socket.socket, pause: Callable[[], None]) -> None:
        self._conn, self._pause = conn, pause

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Watch for the length of the ``with`` block; the thread has ended when it exits."""
        wake_read, wake_write = os.pipe2(os.O_CLOEXEC)
        thread = threading.Thread(target=self._watch, args=(wake_read,), name="hv-emu gdb break",
                                  daemon=True)  # fmt: skip
        thread.start()
        try:
            yield
        finally:
            os.write(wake_write, b"x")
            thread.join()
            os.close(wake_read)
            os.close(wake_write)

    def _watch(self, wake: int) -> None:
        readable, _, _ = select.select([self._conn.fileno(), wake], [], [])
        if wake in readable:
            return
        try:
            first = self._conn.recv(1, socket.MSG_PEEK)
            if first == BREAK:
                self._conn.recv(1)
                self._pause()
        except OSError:
            return  # a reset connection: the conversation after the stop sees it too
