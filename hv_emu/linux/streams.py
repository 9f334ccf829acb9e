"""The standard streams of a Linux guest program: descriptors 0, 1 and 2 are hv-emu's own.

Models: a pipe end as a program sees it: ``read`` returns what is available now (a line typed at a
terminal), ``write`` goes to hv-emu's standard output or error at once, there is no position
(``ESPIPE``), a reader that went away is ``EPIPE`` (the caller sends ``SIGPIPE``), and any other
host error is the host's own ``errno`` (``ENOSPC`` for ``hv-emu run ... > /dev/full``). ``None`` as
the stream reads and writes nothing, as ``/dev/null`` does; ``NullDevice`` is ``/dev/null`` itself,
which every program may open (C libraries and interpreters open it to park descriptors), with or
without a sysroot.

Follows: pipe(7) and read(2)/write(2) on pipes: a write to a stream with a host descriptor is
one ``write(2)`` of it (a short write is the program's to finish, as on Linux), after whatever
hv-emu had buffered there.

A read that would block (standard input with nothing typed yet) waits through ``wait`` when the
machine gave one (``vcpu/stopping.py``: the watchdog and Ctrl-C cut it short, ``RunEnding``, and
nothing is consumed), then takes what the descriptor has with one ``read(2)``.

Leaves out: terminals (``ioctl`` is ``ENOTTY``), non-blocking mode.

Guest controls: counts and data; reads are capped by the caller (``files.MAX_IO``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError, refusal


@dataclass
class Stream:
    """A standard stream: hv-emu's stdin/stdout/stderr (``None``: reads give end of file, writes
    vanish, like ``/dev/null``)."""

    stream: BinaryIO | None
    readable: bool
    #: Waits until a descriptor is readable, or raises ``RunEnding`` (``vcpu/stopping.py``).
    wait: Callable[[int], None] | None = None

    def read(self, n: int) -> bytes:
        if not self.readable:
            raise SyscallError(Errno.EBADF, "not open for reading")
        if self.stream is None:
            return b""
        fd = _descriptor(self.stream) if self.wait is not None else None
        if self.wait is not None and fd is not None:
            self.wait(fd)  # the run's end cuts it short: nothing read, nothing lost
            try:
                return os.read(fd, n)
            except OSError as err:
                raise refusal(err) from None
        # read1: what is available now (a line typed at a terminal), as read(2) on a pipe does,
        # rather than waiting for all n bytes.
        read1 = getattr(self.stream, "read1", None)
        data = read1(n) if read1 is not None else self.stream.read(n)
        return bytes(data or b"")

    def write(self, data: bytes) -> int:
        if self.readable:
            raise SyscallError(Errno.EBADF, "not open for writing")
        if self.stream is None:
            return len(data)
        fd = _descriptor(self.stream)
        try:
            self.stream.flush()  # what hv-emu wrote there before goes first
            if fd is not None:
                # Unbuffered: a failed write leaves nothing behind for Python to retry at exit.
                return os.write(fd, data)
            self.stream.write(data)
            self.stream.flush()
        except OSError as err:
            # The host reader went away (hv-emu run prog | head): EPIPE, and the caller sends
            # SIGPIPE; a full device: ENOSPC; each as the host said it.
            raise refusal(err) from None
        return len(data)

    def seek(self, offset: int, whence: int) -> int:
        raise SyscallError(Errno.ESPIPE, "a stream has no position")

    def pread(self, n: int, offset: int) -> bytes:
        raise SyscallError(Errno.ESPIPE, "a stream has no position")

    def stat(self) -> os.stat_result | None:
        return None

    def close(self) -> None:
        """The streams belong to hv-emu: closing the descriptor leaves them open."""


def _descriptor(stream: BinaryIO) -> int | None:
    """The host descriptor behind ``stream``, if it has one (a ``BytesIO`` has none)."""
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        return None


@dataclass
class NullDevice:
    """``/dev/null``, always there: reads give end of file, writes vanish (every byte taken)."""

    def read(self, n: int) -> bytes:
        return b""

    def pread(self, n: int, offset: int) -> bytes:
        return b""

    def write(self, data: bytes) -> int:
        return len(data)

    def seek(self, offset: int, whence: int) -> int:
        return 0

    def stat(self) -> os.stat_result | None:
        return None

    def close(self) -> None:
        """Nothing to release."""
