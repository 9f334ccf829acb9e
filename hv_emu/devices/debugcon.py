"""The debug console: a one-port device that prints what the guest writes to it.

Models: the Bochs/QEMU ``debugcon`` port (0xE9 by convention; the port number lives in layout.py):
every byte OUT to it goes to hv-emu's standard output at once, with no driver, no UART and no
interrupts. Reading the port returns 0xE9, the value Bochs and QEMU use so a guest can tell the
console is there.

Follows: Bochs ``iodev/iodebug``/QEMU ``hw/char/debugcon.c`` (readback value 0xE9).

Leaves out: the terminal side (no input), 16/32-bit OUTs are printed as their low byte only, as
QEMU does.

Guest controls: the bytes printed. They are written raw (the guest may print escape sequences);
``captured`` keeps at most ``capture_limit`` bytes for tests and the event log.

Threats: a guest printing without end -> output is streamed, never accumulated beyond the cap;
the reader going away (``hv-emu run | head``) -> streaming stops (``output_error`` says why), the
guest runs on and the capture goes on.
"""

from __future__ import annotations

from typing import BinaryIO

#: What a read of the port returns (Bochs/QEMU).
READBACK = 0xE9


class DebugConsole:
    """A ``PortDevice`` of one port writing each byte to ``out`` (flushed, so unbuffered)."""

    def __init__(self, out: BinaryIO | None, capture_limit: int = 1 << 20) -> None:
        self._out = out
        self._limit = capture_limit
        self.captured = bytearray()
        self.bytes_written = 0
        #: Why streaming to ``out`` stopped (a closed pipe), or ``None`` while it goes on.
        self.output_error: OSError | None = None

    def io_read(self, offset: int, size: int) -> int:
        return READBACK

    def io_write(self, offset: int, size: int, value: int) -> None:
        byte = bytes((value & 0xFF,))
        self.bytes_written += 1
        if len(self.captured) < self._limit:
            self.captured += byte
        if self._out is not None:
            try:
                self._out.write(byte)
                self._out.flush()
            except OSError as err:  # nobody reads any more: a console without a screen
                self._out, self.output_error = None, err

    def text(self) -> str:
        """What the guest has printed so far (up to the capture limit), decoded leniently."""
        return self.captured.decode("utf-8", errors="replace")
