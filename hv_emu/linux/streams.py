"""The standard streams of a Linux guest program: descriptors 0, 1 and 2 are hv-emu's own.

Models: a pipe end as a program sees it: ``read`` returns what is available now (a line typed at
a terminal), ``write`` goes to hv-emu's standard output or error at once, there is no position
(``ESPIPE``), and a reader that went away is ``EPIPE``. ``None`` as the stream reads and writes
nothing, as ``/dev/null`` does; ``NullDevice`` is ``/dev/null`` itself, which every program may
open (C libraries and interpreters open it to park descriptors), with or without a sysroot.

Follows: pipe(7) and read(2)/write(2) on pipes.

Leaves out: ``SIGPIPE``, terminals (``ioctl`` is ``ENOTTY``), non-blocking mode.

Guest controls: counts and data; reads are capped by the caller (``files.MAX_IO``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError


@dataclass
class Stream:
    """A standard stream: hv-emu's stdin/stdout/stderr (``None``: reads give end of file, writes
    vanish, like ``/dev/null``)."""

    stream: BinaryIO | None
    readable: bool

    def read(self, n: int) -> bytes:
        if not self.readable:
            raise SyscallError(Errno.EBADF, "not open for reading")
        if self.stream is None:
            return b""
        # read1: what is available now (a line typed at a terminal), as read(2) on a pipe does,
        # rather than waiting for all n bytes.
        read1 = getattr(self.stream, "read1", None)
        data = read1(n) if read1 is not None else self.stream.read(n)
        return bytes(data or b"")

    def write(self, data: bytes) -> int:
        if self.readable:
            raise SyscallError(Errno.EBADF, "not open for writing")
        if self.stream is not None:
            try:
                self.stream.write(data)
                self.stream.flush()
            except BrokenPipeError:
                # The host reader went away (hv-emu run prog | head): the program gets EPIPE, as
                # it would on Linux (without the SIGPIPE, which the personality does not model).
                raise SyscallError(Errno.EPIPE, "the reader of this stream has gone") from None
            except OSError as err:  # a full disk (> /dev/full): the program sees the host's error
                code = Errno.EIO
                if err.errno is not None and err.errno in Errno._value2member_map_:
                    code = Errno(err.errno)
                raise SyscallError(code, err.strerror or "write failed") from None
        return len(data)

    def seek(self, offset: int, whence: int) -> int:
        raise SyscallError(Errno.ESPIPE, "a stream has no position")

    def pread(self, n: int, offset: int) -> bytes:
        raise SyscallError(Errno.ESPIPE, "a stream has no position")

    def stat(self) -> os.stat_result | None:
        return None

    def close(self) -> None:
        """The streams belong to hv-emu: closing the descriptor leaves them open."""


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
