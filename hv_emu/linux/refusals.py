"""A system call's refusal: the ``errno`` a guest program gets back, and host errors turned into it.

Models: the kernel's way of failing a system call: the call returns ``-errno`` and the process
goes on. ``SyscallError`` carries the number and a reason (for traces and tests); ``host_call``
runs a host file operation on the guest's behalf and turns the host's ``OSError`` into the same
``errno`` (host and guest are both Linux, so the numbers agree: ``ENOSPC``, ``EPIPE``, ``EFBIG``
pass through as themselves; only numbers ``numbers.Errno`` does not list become ``EIO``).

Follows: errno(3) and ``include/uapi/asm-generic/errno-base.h`` (``numbers.Errno``).

Leaves out: ``errno`` values the personality never returns (they become ``EIO``).

Guest controls: nothing here; the handlers decide which refusal a guest value earns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hv_emu.errors import GuestFault
from hv_emu.linux.numbers import Errno

_T = TypeVar("_T")


class SyscallError(GuestFault):
    """A system call the kernel refuses: the guest gets ``-errno`` in RAX."""

    def __init__(self, errno: Errno, reason: str) -> None:
        self.errno = errno
        self.reason = reason
        super().__init__(f"{errno.name}: {reason}")


def refusal(err: OSError) -> SyscallError:
    """The guest's view of a host ``OSError``."""
    known = {int(e) for e in Errno}
    code = Errno(err.errno) if err.errno is not None and err.errno in known else Errno.EIO
    return SyscallError(code, err.strerror or "host error")


def host_call(operation: Callable[[], _T]) -> _T:
    """Run a host file operation; a host ``OSError`` becomes the guest's ``SyscallError``."""
    try:
        return operation()
    except OSError as err:
        raise refusal(err) from None
