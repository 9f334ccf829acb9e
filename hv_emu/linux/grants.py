"""The files and directories the user grants a Linux guest program (``--file``), and the paths
that lead through them.

Models: a bind mount of one host file or directory at a guest path: ``FileGrant`` is one
``--file GUESTPATH=HOSTPATH[:rw]``; ``open_granted`` opens a granted host file as a program's
``open`` would, but never waits (a FIFO's other end) and takes only regular files and devices;
``through_grants`` gives ``..`` at a granted directory's root its meaning in the program's tree:
the grant's parent as the program sees it (a directory of the sysroot, or above the grants),
never the host directory's own parent; ``above_grants`` names the directories above the grants
when there is no sysroot, which the program sees as synthetic, empty, read-only directories.

Follows: path_resolution(7) for ``..`` at a mount point (it leaves the mount, to the directory
the mount sits on); open(2) ``O_NONBLOCK`` on FIFOs (``ENXIO`` opening one for writing with no
reader).

Leaves out: symbolic links above a grant (the path to a grant is taken as written, lexically, as
the grant itself is matched), grants inside grants that overlap (the longest wins, ``files.py``).

Guest controls: the paths (any string: bounded by their length, each component looked at once);
the user controls the grants (a bad ``--file`` is a ``ConfigError``).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hv_emu.errors import ConfigError
from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError, refusal


@dataclass(frozen=True)
class FileGrant:
    """``--file GUESTPATH=HOSTPATH[:rw]``: the guest may open ``guest_path``, which is the host's
    ``host_path``; for writing only if ``writable``."""

    guest_path: str
    host_path: Path
    writable: bool = False

    @classmethod
    def parse(cls, spec: str) -> FileGrant:
        guest, sep, host = spec.partition("=")
        if not sep or not guest or not host:
            raise ConfigError(f"--file {spec!r}: expected GUESTPATH=HOSTPATH[:rw]")
        writable = host.endswith(":rw")
        if writable or host.endswith(":ro"):
            host = host[:-3]
        if not host:
            raise ConfigError(f"--file {spec!r}: the host path is empty")
        return cls(posixpath.normpath(guest), Path(host), writable)

    def holds(self, path: str) -> bool:
        """Whether the normalised guest ``path`` is this grant's path or lies under it."""
        root = self.guest_path
        return path == root or path.startswith(root.rstrip("/") + "/")


def open_granted(grant: FileGrant, host_flags: int) -> int:
    """Open a granted host file without ever blocking: ``O_NONBLOCK`` for the open itself (a FIFO
    would wait for its other end), refused unless it is a regular file or a device (``EACCES``,
    as the sysroot refuses: a FIFO or a socket has no position for ``pread``), then blocking
    again for reads and writes."""
    path = grant.host_path
    try:
        fd = os.open(path, host_flags | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno == Errno.ENXIO:  # a FIFO opened for writing with no reader, a socket
            raise SyscallError(Errno.EACCES, f"{path} is not a regular file or a device") from None
        raise refusal(err) from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        os.close(fd)
        raise SyscallError(Errno.EACCES, f"{path} is not a regular file or a device")
    os.set_blocking(fd, True)
    return fd


def through_grants(grants: Sequence[FileGrant], path: str) -> str:
    """``path``, with ``..`` taken lexically where it leaves a granted directory (the whole path
    normalised then, as grants are matched); a path whose ``..`` leaves no grant is returned as
    is, for the sysroot's walk (``sysroot.py``), which resolves ``..`` as a chroot does."""
    parts = path.split("/")
    if ".." not in parts:
        return path
    dirs = [g for g in grants if g.host_path.is_dir()]
    kept: list[str] = []
    for part in parts:
        if part == ".." and any(g.holds(posixpath.normpath("/".join(kept) or ".")) for g in dirs):
            return posixpath.normpath(path)
        kept.append(part)
    return path


def above_grants(grants: Sequence[FileGrant], path: str) -> bool:
    """Whether ``path`` names a directory above a grant (``/``, ``.``, a granted path's parents:
    the working directory is ``/``), which without a sysroot exists only as a synthetic one."""
    if not grants or not path:
        return False  # an empty path is ENOENT, whatever is granted
    norm = posixpath.normpath(path)
    if norm in (".", "/"):
        return True
    return any(g.guest_path.startswith(norm.rstrip("/") + "/") for g in grants)
