"""Reading a file the user named on the command line (``--db``, a ``.manifest`` next to an update).

Models: what ``cat`` does with a path, made safe to run unattended: the open never blocks (a FIFO
is refused, not waited on), only a regular file is read (a symbolic link to one is fine: the user
named it; ``/dev/zero`` or a directory is refused), and at most ``limit + 1`` bytes are read, so a
file that is too large, or grows while it is read, is refused without being held in memory.

Follows: open(2) ``O_NONBLOCK``, fstat(2) ``S_ISREG``. Unlike ``hostile_dir.py`` (entries someone
else may have planted in our own directories), links are followed here.

Leaves out: the wording of the error; callers say what the file was for.

Who controls what: the user chose the path; whoever can write it controls its kind, size and bytes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hv_emu.errors import ConfigError

#: Flags of the open: never blocking on a FIFO, never inherited; links followed.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class RefusedFile(ConfigError):
    """A file that opened but is not one to read: not a regular file, or larger than the limit;
    the message is the reason ("not a regular file")."""


def read_named_file(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (through links), at most ``limit`` of them.

    Raises ``OSError`` when it cannot be opened or read, ``RefusedFile`` when it is not a regular
    file or holds more than ``limit`` bytes (only ``limit + 1`` are ever read)."""
    fd = os.open(path, READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RefusedFile("not a regular file")
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise RefusedFile(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


#: The largest file a command reads by default: a u32 length's worth (a bundle body, an image).
DEFAULT_LIMIT = 1 << 32


def read_user_file(path: Path | str, what: str, limit: int = DEFAULT_LIMIT) -> bytes:
    """``read_named_file`` for a command line: any problem is one ``ConfigError`` line naming
    ``what`` the file was for and its path ("cannot read image x.bin: No such file or
    directory", "image x.bin: not a regular file")."""
    try:
        return read_named_file(path, limit)
    except RefusedFile as refused:
        raise ConfigError(f"{what} {path}: {refused}") from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror or err}") from None
