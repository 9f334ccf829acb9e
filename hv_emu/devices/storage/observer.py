"""The storage hook: what a disk device tells an inspection policy, and what the policy answers.

Models: BitVisor's ``storage_handle_sectors`` hook (drivers call it for every sector they
move), made into an observer contract in the style of vm-superio's ``SerialEvents``: the device
publishes an event and knows nothing of who listens. Unlike BitVisor's hook (whose result every
caller ignores), a write event returns a ``Verdict`` the device obeys: commit the data, commit
other data of the same length (e.g. zero-filled), or refuse the write (the guest sees ERR/ABRT).

Follows: BitVisor ``include/storage.h`` and ``drivers/ata/ata_core.c`` / ``ata_bm.c`` for *when* the
hook runs: PIO writes once per completed DRQ block (one 512-byte sector for WRITE SECTORS, the
multiple count for WRITE MULTIPLE) before it reaches the disk; DMA writes once per command with the
whole transfer gathered into a private buffer at the bus-master Start; reads after the data left the
disk and before the guest sees it.

Leaves out: read verdicts (a read observer may only watch), encryption-style in-place rewriting of
reads, per-device key ranges.

Guest controls: the LBA, the sector count and the data of every event. The data is always a private
copy (``bytes``) taken once from guest memory or the PIO buffer, so the guest cannot change it after
the observer looked at it (no double fetch).

Threats (threat -> mitigation):
- the guest changes data between inspection and commit (TOCTOU) -> events carry an immutable
  private copy; the device commits that copy or the verdict's data, never guest memory;
- the policy returns modified data of another length -> ``resolve`` refuses it (fail closed);
- a policy that forgets to answer -> ``on_write`` must return a ``Verdict``;
  ``NullStorageObserver`` is the explicit commit-all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal, Protocol

SECTOR_SIZE = 512

#: How the data moved between guest and device.
Transport = Literal["pio", "dma"]


@dataclass(frozen=True)
class StorageWrite:
    """The guest wants ``data`` written at ``lba`` (published before anything reaches the disk)."""

    lba: int
    data: bytes  # private copy, a multiple of 512 bytes
    transport: Transport
    command: int  # ATA opcode, e.g. 0x30 WRITE SECTORS or 0xCA WRITE DMA

    @property
    def sector_count(self) -> int:
        return len(self.data) // SECTOR_SIZE


@dataclass(frozen=True)
class StorageRead:
    """``data`` was read from ``lba`` (published after the disk read, before the guest sees it)."""

    lba: int
    data: bytes
    transport: Transport
    command: int

    @property
    def sector_count(self) -> int:
        return len(self.data) // SECTOR_SIZE


class Action(enum.Enum):
    COMMIT = "commit"
    COMMIT_MODIFIED = "commit-modified"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Verdict:
    """The policy's answer to a ``StorageWrite``. Build with the class methods."""

    action: Action
    data: bytes | None = None  # only for COMMIT_MODIFIED: same length as the write
    reason: str = ""

    @classmethod
    def commit(cls) -> Verdict:
        return cls(Action.COMMIT)

    @classmethod
    def commit_modified(cls, data: bytes, reason: str = "") -> Verdict:
        return cls(Action.COMMIT_MODIFIED, bytes(data), reason)

    @classmethod
    def refuse(cls, reason: str = "") -> Verdict:
        return cls(Action.REFUSE, None, reason)


COMMIT = Verdict.commit()
REFUSE = Verdict.refuse()


def resolve(verdict: Verdict, data: bytes) -> bytes | None:
    """What the device commits for ``verdict`` on ``data``: the bytes to write, or ``None`` to
    refuse. Modified data of the wrong length (or missing) is refused: fail closed."""
    if verdict.action is Action.COMMIT:
        return data
    if verdict.action is Action.COMMIT_MODIFIED:
        if verdict.data is not None and len(verdict.data) == len(data):
            return verdict.data
        return None
    return None


class StorageObserver(Protocol):
    """What a storage device calls; an inspection policy implements it."""

    def on_write(self, w: StorageWrite) -> Verdict: ...

    def on_read(self, r: StorageRead) -> None: ...


class NullStorageObserver:
    """Commits every write and ignores every read (vm-superio's no-op default)."""

    def on_write(self, w: StorageWrite) -> Verdict:
        return COMMIT

    def on_read(self, r: StorageRead) -> None:
        return None
