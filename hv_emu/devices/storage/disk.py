"""Disk backends: the sectors behind the ATA device, in a raw image file or in memory.

Models: a fixed-size block device of 512-byte sectors addressed by LBA, as the ATA device model
sees its medium. ``DiskImage`` is a raw image file (``hv-emu run --disk disk.img``; ``--disk-size``
creates a sparse one); ``MemoryDisk`` is a sparse in-memory disk for tests.

Follows: the raw image format of QEMU (``-drive format=raw``): sector n at byte offset n * 512, no
header. ``flush`` is ``fsync`` (what FLUSH CACHE promises the guest).

Leaves out: copy-on-write overlays, image formats other than raw, sector sizes other than 512, a
trailing partial sector of an image (ignored: ``sector_count`` rounds down). Host I/O errors
propagate as ``OSError``; the ATA device turns them into ERR for the guest (never a crash).

Guest controls: nothing directly. The ATA device checks LBA and count against ``sector_count``
before calling a backend; the backends check again and raise ``DiskRangeError`` (a bug of ours if
it ever fires).

Threats (threat -> mitigation):
- LBA or count outside the disk -> checked by the device (ERR, IDNF|ABRT) and again here
  (``DiskRangeError``);
- partial-sector writes -> refused (``ValueError``): writes are whole sectors;
- clobbering a user's file with ``--disk-size`` -> ``create`` refuses an existing path unless
  ``overwrite=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from hv_emu.errors import ConfigError, HostError
from hv_emu.layout import MIB

SECTOR_SIZE = 512


class DiskRangeError(HostError):
    """A backend was asked for sectors outside the disk (the device should have caught it)."""

    def __init__(self, lba: int, count: int, sector_count: int) -> None:
        self.lba = lba
        self.count = count
        self.sector_count = sector_count
        super().__init__(f"sectors {lba}+{count} outside a disk of {sector_count} sectors")


class Disk(Protocol):
    """What the ATA device needs from its medium."""

    @property
    def sector_count(self) -> int: ...

    @property
    def read_only(self) -> bool: ...

    def read_sectors(self, lba: int, count: int) -> bytes: ...

    def write_sectors(self, lba: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


def _check(lba: int, count: int, sector_count: int) -> None:
    if lba < 0 or count < 0 or lba + count > sector_count:
        raise DiskRangeError(lba, count, sector_count)


def _sectors_of(data: bytes) -> int:
    if len(data) % SECTOR_SIZE:
        raise ValueError(f"write of {len(data)} bytes is not a whole number of sectors")
    return len(data) // SECTOR_SIZE


class DiskImage:
    """A raw image file, opened read-write. Use ``open`` or ``create``; close with ``close``."""

    def __init__(self, path: Path, fd: int, sector_count: int, read_only: bool = False) -> None:
        self.path = path
        self._fd = fd
        self._sectors = sector_count
        self._read_only = read_only

    @classmethod
    def open(cls, path: str | os.PathLike[str], read_only: bool = False) -> DiskImage:
        """Open an existing raw image. Its size, rounded down to a sector, is the capacity."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY if read_only else os.O_RDWR)
        except OSError as e:
            raise ConfigError(f"cannot open disk image {p}: {e.strerror}") from e
        size = os.fstat(fd).st_size
        if size < SECTOR_SIZE:
            os.close(fd)
            raise ConfigError(f"disk image {p} is smaller than one sector ({size} bytes)")
        return cls(p, fd, size // SECTOR_SIZE, read_only)

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], size_mib: int, overwrite: bool = False
    ) -> DiskImage:
        """Create a sparse, zero-filled image of ``size_mib`` MiB and open it."""
        p = Path(path)
        if size_mib <= 0:
            raise ConfigError(f"disk size must be a positive number of MiB, not {size_mib}")
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(p, flags, 0o644)
        except FileExistsError as e:
            raise ConfigError(f"disk image {p} exists; refusing to overwrite it") from e
        except OSError as e:
            raise ConfigError(f"cannot create disk image {p}: {e.strerror}") from e
        try:
            os.ftruncate(fd, size_mib * MIB)
        except (OSError, OverflowError) as e:  # EFBIG, ENOSPC, or past the host's file offsets
            os.close(fd)
            p.unlink()  # the file is ours (O_EXCL, or truncated anyway): leave nothing half-made
            why = e.strerror if isinstance(e, OSError) else "too large for a file offset"
            raise ConfigError(f"cannot make disk image {p} {size_mib} MiB: {why}") from None
        return cls(p, fd, size_mib * MIB // SECTOR_SIZE)

    @property
    def sector_count(self) -> int:
        return self._sectors

    @property
    def read_only(self) -> bool:
        return self._read_only

    def read_sectors(self, lba: int, count: int) -> bytes:
        _check(lba, count, self._sectors)
        n = count * SECTOR_SIZE
        data = os.pread(self._fd, n, lba * SECTOR_SIZE)
        return data.ljust(n, b"\0")

    def write_sectors(self, lba: int, data: bytes) -> None:
        _check(lba, _sectors_of(data), self._sectors)
        view = memoryview(data)
        offset = lba * SECTOR_SIZE
        while view:
            done = os.pwrite(self._fd, view, offset)
            view = view[done:]
            offset += done

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DiskImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MemoryDisk:
    """A sparse in-memory disk: unwritten sectors read as zeros, so a large disk costs nothing."""

    def __init__(self, sector_count: int, read_only: bool = False) -> None:
        if sector_count <= 0:
            raise ValueError("a disk needs at least one sector")
        self._sectors = sector_count
        self._read_only = read_only
        self._data: dict[int, bytes] = {}
        self.flushes = 0

    @property
    def sector_count(self) -> int:
        return self._sectors

    @property
    def read_only(self) -> bool:
        return self._read_only

    def read_sectors(self, lba: int, count: int) -> bytes:
        _check(lba, count, self._sectors)
        zero = bytes(SECTOR_SIZE)
        return b"".join(self._data.get(i, zero) for i in range(lba, lba + count))

    def write_sectors(self, lba: int, data: bytes) -> None:
        count = _sectors_of(data)
        _check(lba, count, self._sectors)
        for i in range(count):
            self._data[lba + i] = bytes(data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE])

    def flush(self) -> None:
        self.flushes += 1

    def written(self) -> dict[int, bytes]:
        """A copy of the sectors ever written (LBA -> 512 bytes), for tests."""
        return dict(self._data)
