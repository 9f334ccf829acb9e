"""``struct stat`` as a Linux program reads it: the x86-64 and i386 layouts, packed.

Models: what ``fstat``, ``stat`` and ``newfstatat`` write into the program's buffer: x86-64's
``struct stat`` (144 bytes) and i386's ``struct stat64`` (96 bytes), field by field. Every file is
on one device (``st_dev`` 1), owned by root, with one link; ``st_ino`` and ``st_blocks`` are the
host's (``du`` counts the blocks) (the dynamic loader compares ``st_dev``/``st_ino`` to spot a
library loaded twice).

Follows: ``arch/x86/include/uapi/asm/stat.h``.

Leaves out: nanoseconds, ``st_rdev``, real owners and link counts.

Guest controls: nothing; the values come from the host file or the stream.
"""

from __future__ import annotations

import struct

# struct stat (x86-64, 144 bytes) and struct stat64 (i386, 96 bytes), field by field.
_STAT_64 = struct.Struct("<QQQIIIIQqqqqqqqqq24x")
_STAT64_32 = struct.Struct("<Q4xIIIIIQ4xqIQIIIIIIQ")


def pack_stat(bits: int, *, mode: int, size: int, ino: int, mtime: int,
              blocks: int | None = None) -> bytes:  # fmt: skip
    """The stat buffer of an ELF``bits`` program for a file of ``mode`` and ``size`` (``blocks``:
    the 512-byte blocks the host allocated, by default the size rounded up)."""
    nlink, uid, gid, blksize = 1, 0, 0, 4096
    blocks = (size + 511) // 512 if blocks is None else blocks
    if bits == 64:
        return _STAT_64.pack(1, ino, nlink, mode, uid, gid, 0, 0, size, blksize, blocks,
                             mtime, 0, mtime, 0, mtime, 0)  # fmt: skip
    return _STAT64_32.pack(1, ino & 0xFFFFFFFF, mode, nlink, uid, gid, 0, size, blksize, blocks,
                           mtime, 0, mtime, 0, mtime, 0, ino)  # fmt: skip
