"""Open directories of a Linux guest program: ``getdents64`` over a host directory it may see.

Models: an open file description of a directory (``open(dir, O_RDONLY)``): it cannot be read
(``EISDIR``) or written, ``fstat`` says ``S_IFDIR``, and ``getdents64`` hands out its entries as
``struct linux_dirent64`` records (``d_ino`` u64, ``d_off`` s64, ``d_reclen`` u16, ``d_type``
u8, the NUL-terminated name, padded to 8 bytes), as many whole records as fit the buffer, ``.``
and ``..`` first; ``lseek(fd, d_off, SEEK_SET)`` returns to a record (``d_off`` is the index of
the next one) and ``lseek(fd, 0, SEEK_SET)`` rewinds (``rewinddir``). The directory is a granted
host directory (``--file GUESTPATH=HOSTDIR``) or one inside the ``--sysroot``.

Follows: getdents64(2) and ``include/linux/dirent.h``; ``d_type`` values of ``fs_types.h``
(``DT_DIR`` 4, ``DT_REG`` 8, ``DT_LNK`` 10, ``DT_UNKNOWN`` 0 for anything else).

Leaves out: entries added or removed while the directory is open (it is listed once, at the
first ``getdents64``), ``telldir`` cookies other than the record index.

Guest controls: the buffer size and positions (checked: a buffer too small for the next record
is ``EINVAL``, a position past the end reads nothing). The listing is bounded by
``MAX_ENTRIES``; the user controls the host directory.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from hv_emu.linux.numbers import SEEK_CUR, SEEK_SET, Errno
from hv_emu.linux.refusals import SyscallError, host_call

#: Most entries listed from one directory (more are left out, as if not there).
MAX_ENTRIES = 1 << 16
#: ``d_type`` values (``include/linux/fs_types.h``).
DT_UNKNOWN, DT_DIR, DT_REG, DT_LNK = 0, 4, 8, 10
_DIRENT = struct.Struct("<QqHB")  # d_ino, d_off, d_reclen, d_type; then d_name


def dirent64(ino: int, offset: int, kind: int, name: bytes) -> bytes:
    """One ``struct linux_dirent64``, its length rounded up to 8 bytes."""
    size = -(-(_DIRENT.size + len(name) + 1) // 8) * 8
    record = _DIRENT.pack(ino & (1 << 64) - 1, offset, size, kind) + name
    return record.ljust(size, b"\0")


def _kind(entry: os.DirEntry[str]) -> int:
    try:
        if entry.is_symlink():
            return DT_LNK
        if entry.is_dir(follow_symlinks=False):
            return DT_DIR
        if entry.is_file(follow_symlinks=False):
            return DT_REG
    except OSError:
        pass
    return DT_UNKNOWN


@dataclass
class Directory:
    """An open directory: the host descriptor (``O_DIRECTORY``), the guest's path of it (what
    ``openat(fd, name)`` is relative to) and the position, counted in records."""

    fd: int
    guest_path: str
    position: int = 0
    _entries: list[tuple[int, int, bytes]] | None = field(default=None, repr=False)

    def entries(self) -> list[tuple[int, int, bytes]]:
        """(inode, d_type, name) of every entry, ``.`` and ``..`` first, listed once."""
        if self._entries is None:
            here = host_call(lambda: os.fstat(self.fd)).st_ino
            listed = [(here, DT_DIR, b"."), (here, DT_DIR, b"..")]
            with host_call(lambda: os.scandir(self.fd)) as scan:
                for entry in scan:
                    if len(listed) >= MAX_ENTRIES:
                        break
                    listed.append((entry.inode(), _kind(entry), os.fsencode(entry.name)))
            self._entries = listed
        return self._entries

    def getdents(self, size: int) -> bytes:
        """As many whole records as fit in ``size`` bytes from the position on."""
        entries, out = self.entries(), bytearray()
        while self.position < len(entries):
            ino, kind, name = entries[self.position]
            record = dirent64(ino, self.position + 1, kind, name)
            if len(out) + len(record) > size:
                if not out:
                    raise SyscallError(Errno.EINVAL, f"a {size}-byte buffer holds no record")
                break
            out += record
            self.position += 1
        return bytes(out)

    # The operations every open file has (files.FileTable calls them).
    def read(self, n: int) -> bytes:
        raise SyscallError(Errno.EISDIR, f"{self.guest_path} is a directory")

    def pread(self, n: int, offset: int) -> bytes:
        raise SyscallError(Errno.EISDIR, f"{self.guest_path} is a directory")

    def write(self, data: bytes) -> int:
        raise SyscallError(Errno.EBADF, "a directory is not open for writing")

    def seek(self, offset: int, whence: int) -> int:
        base = {SEEK_SET: 0, SEEK_CUR: self.position}.get(whence)
        if base is None or base + offset < 0:
            raise SyscallError(Errno.EINVAL, f"directory seek {offset} whence {whence}")
        self.position = base + offset
        return self.position

    def stat(self) -> os.stat_result:
        return host_call(lambda: os.fstat(self.fd))

    def close(self) -> None:
        os.close(self.fd)
