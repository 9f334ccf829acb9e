"""Host directories a guest program sees read-only: the ``--sysroot`` and directory grants.

Models: path lookup inside a ``chroot``: the program names a path, and the kernel walks it one
component at a time from the root (``fs/namei.c``: ``link_path_walk``), following symbolic links
(at most ``MAX_LINKS``, else ``ELOOP``) and ``..``, where the root is its own parent. Because
the walk is done here, component by component against ``lstat``, an absolute link target starts
again at the tree's root and ``..`` stops there: nothing outside the directory can be reached,
whatever the links inside it say (``/lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...``
stays in the tree). ``resolve`` is the walk over any ``Lookup`` (a pure function, tested with
Hypothesis over made-up trees); ``HostTree`` runs it against a host directory and opens what it
finds, read-only, refusing anything but regular files and directories (a FIFO, a device or a
socket under the root is ``EACCES``: opening one could block hv-emu or reach host devices).

Follows: path_resolution(7) (components, ``.``, ``..``, symbolic links, ``ELOOP`` after 40
links, ``ENOTDIR`` for a non-directory in the middle, ``ENAMETOOLONG``) and chroot(2).

``readlink`` reads a link itself (its last component is not followed).

Leaves out: creating, writing or renaming anything (the trees are read-only: ``EROFS``),
``O_NOFOLLOW``/``AT_SYMLINK_NOFOLLOW`` on the last component (links are followed but by
``readlink``),
mount points, permission checks beyond the host's own.

Guest controls: every path (up to ``PATH_MAX`` bytes, checked by the caller) and so how many
components and links the walk meets: both are bounded (``MAX_LINKS``, ``MAX_STEPS``), and every
refusal is a ``SyscallError``. The user controls the root and what lies under it; a concurrent
change of the tree by someone else is out of scope (the final ``open`` still refuses a link).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError, host_call, refusal

#: Most symbolic links one lookup follows (Linux's ``MAXSYMLINKS``).
MAX_LINKS = 40
#: Most components one lookup visits, links' targets included (bounds the walk's work).
MAX_STEPS = 4096
#: Longest component (``NAME_MAX``).
NAME_MAX = 255


class Kind(Enum):
    """What a path inside the tree is, as ``lstat`` sees it."""

    DIR = "directory"
    FILE = "regular file"
    LINK = "symbolic link"
    MISSING = "missing"
    OTHER = "special file"


#: ``lookup(components)``: what the path made of ``components`` (no ``.``, ``..``, links) is,
#: and a link's target (empty for anything else).
Lookup = Callable[[tuple[str, ...]], tuple[Kind, str]]


def resolve(path: str, lookup: Lookup) -> tuple[tuple[str, ...], Kind]:
    """Walk ``path`` from the root of the tree ``lookup`` describes (a relative path starts
    there too); return the components of what it names (no link, ``.`` or ``..`` among them) and
    its kind (``DIR`` or ``FILE``, or ``OTHER``). Raise ``SyscallError`` ``ENOENT``, ``ENOTDIR``,
    ``ELOOP`` or ``ENAMETOOLONG`` as Linux would."""
    pending = list(reversed(path.split("/")))
    resolved: list[str] = []
    kind, links, steps = Kind.DIR, 0, 0
    while pending:
        steps += 1
        if steps > MAX_STEPS:
            raise SyscallError(Errno.ELOOP, f"more than {MAX_STEPS} path components")
        part = pending.pop()
        if kind is not Kind.DIR:  # even "file/" and "file/." are ENOTDIR
            raise SyscallError(Errno.ENOTDIR, f"{'/'.join(resolved)} is not a directory")
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise SyscallError(Errno.ENAMETOOLONG, f"a component is over {NAME_MAX} bytes")
        kind, target = lookup((*resolved, part))
        if kind is Kind.MISSING:
            raise SyscallError(Errno.ENOENT, f"{'/'.join((*resolved, part))} does not exist")
        if kind is Kind.LINK:
            links += 1
            if links > MAX_LINKS:
                raise SyscallError(Errno.ELOOP, f"more than {MAX_LINKS} symbolic links")
            if target.startswith("/"):
                resolved.clear()
            pending.extend(reversed(target.split("/")))
            kind = Kind.DIR  # the walk goes on from the link's directory
            continue
        resolved.append(part)
    return tuple(resolved), kind


@dataclass(frozen=True)
class Found:
    """An open host descriptor for a path in a tree, and whether it is a directory."""

    fd: int
    is_dir: bool
    mode: int


@dataclass(frozen=True)
class HostTree:
    """A host directory, seen read-only from the guest as the root of a tree."""

    root: Path

    def lookup(self, components: tuple[str, ...]) -> tuple[Kind, str]:
        """``Lookup`` on the host: ``lstat`` of the path under ``root``, never following a
        link (the walk does that, inside the tree)."""
        host = self.root.joinpath(*components)
        try:
            info = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return Kind.MISSING, ""
        except OSError as err:
            raise refusal(err) from None
        if stat.S_ISLNK(info.st_mode):
            return Kind.LINK, host_call(lambda: os.readlink(host))
        if stat.S_ISDIR(info.st_mode):
            return Kind.DIR, ""
        return (Kind.FILE if stat.S_ISREG(info.st_mode) else Kind.OTHER), ""

    def host_path(self, path: str) -> tuple[Path, Kind]:
        """The host path (no links in it) of a guest ``path`` in this tree, and its kind."""
        components, kind = resolve(path, self.lookup)
        return self.root.joinpath(*components), kind

    def readlink(self, path: str) -> str:
        """The target of the symbolic link ``path`` names (its last component not followed);
        ``EINVAL`` for anything else that exists."""
        parent, _, last = path.rpartition("/")
        if last in ("", ".", ".."):
            self.host_path(path)  # ENOENT/ENOTDIR as the walk finds them
            raise SyscallError(Errno.EINVAL, f"{path} is not a symbolic link")
        components, kind = resolve(parent, self.lookup)
        if kind is not Kind.DIR:
            raise SyscallError(Errno.ENOTDIR, f"{parent} is not a directory")
        kind, target = self.lookup((*components, last))
        if kind is Kind.MISSING:
            raise SyscallError(Errno.ENOENT, f"{path} does not exist")
        if kind is not Kind.LINK:
            raise SyscallError(Errno.EINVAL, f"{path} is not a symbolic link")
        return target

    def open(self, path: str, *, directory: bool = False) -> Found:
        """Open ``path`` read-only: a regular file, or a directory (required if ``directory``)."""
        host, kind = self.host_path(path)
        if kind is Kind.OTHER:
            raise SyscallError(Errno.EACCES, f"{path} is not a regular file or a directory")
        if directory and kind is not Kind.DIR:
            raise SyscallError(Errno.ENOTDIR, f"{path} is not a directory")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        if kind is Kind.DIR:
            flags |= os.O_DIRECTORY
        fd = host_call(lambda: os.open(host, flags))
        info = os.fstat(fd)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            os.close(fd)
            raise SyscallError(Errno.EACCES, f"{path} changed under hv-emu")
        return Found(fd, stat.S_ISDIR(info.st_mode), info.st_mode)

