"""Build the disk guests of ``asm/``: write a payload at an LBA (PIO or DMA), and IDENTIFY.

Models: the user's way to reproduce a detection: ``guest-tool build --write FILE --lba N --via
pio|dma`` makes a flat image that writes FILE's bytes to the disk through the driver in
``asm/include/ata.s``, reads them back and says how many bytes differ (the hypervisor's zero-fill
shows up there). The payload is appended after the code (``asm/programs/diskwrite64.s``, label
``blobs``); the PRD table and the read-back buffer lie in the RAM after it.

Follows: ``asm/include/ata.s`` (the driver), ``hv_emu.layout`` (the ports, generated in front of
every program by ``guest_tool.programs``), ATA8-ACS for the addressing limits (LBA28: addresses
below 2^28, at most 256 sectors a command; LBA48: below 2^48, at most 65536) and SFF-8038i for PRD
entries (even sizes up to 64 KiB).

Leaves out: 16- and 32-bit versions (the driver is 64-bit), file systems (the payload lands at a
raw LBA), interrupts (the driver polls).

The user controls the payload (appended verbatim, zero-padded to whole sectors), the LBA, the
transport and the split into commands and PRD entries; all are checked here, before assembly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from guest_tool.programs import assemble_program, build_program
from hv_emu.devices.storage.busmaster import MAX_PRD_ENTRIES
from hv_emu.devices.storage.observer import SECTOR_SIZE
from hv_emu.errors import ConfigError, HostError
from hv_emu.usage import plural

Via = Literal["pio", "dma"]
VIAS: tuple[Via, ...] = ("pio", "dma")
LBA28_LIMIT = 1 << 28
LBA48_LIMIT = 1 << 48
#: Sectors one command may move: LBA28 (count 0 = 256) and LBA48 (count 0 = 65536).
MAX_PER_COMMAND = {False: 256, True: 65536}
#: The largest PRD entry (a byte count of 0 means 64 KiB).
MAX_PRD_BYTES = 0x10000
#: Where the PRD table and the read-back buffer start after the payload.
PAGE = 4096


def build_identify_program() -> bytes:
    """``asm/programs/identify64.s``: IDENTIFY DEVICE, then print model, capacity, LBA48 and DMA
    (``build_program("identify")``)."""
    return build_program("identify")


@dataclass(frozen=True)
class DiskWrite:
    """What ``build_disk_write_program`` made: the image and how the payload was laid out."""

    image: bytes
    lba: int
    sectors: int
    per_command: int
    lba48: bool

    @property
    def commands(self) -> int:
        return -(-self.sectors // self.per_command)


def build_disk_write_program(
    payload: bytes,
    lba: int,
    via: Via,
    *,
    per_command: int | None = None,
    prd_bytes: int = MAX_PRD_BYTES,
    lba48: bool | None = None,
    readback: bool = True,
) -> DiskWrite:
    """The ``diskwrite`` guest for ``payload`` (zero-padded to whole sectors) at ``lba``.

    ``per_command`` sectors go in each ATA command (default: as many as one command allows);
    ``lba48`` picks the EXT commands (default: only when the last sector needs them);
    ``prd_bytes`` caps each PRD entry (DMA only).
    """
    if via not in VIAS:
        raise ConfigError(f"--via must be pio or dma, not {via!r}")
    if not payload:
        raise ConfigError("the payload is empty: nothing to write")
    sectors = -(-len(payload) // SECTOR_SIZE)
    if lba < 0 or lba + sectors > LBA48_LIMIT:
        raise ConfigError(f"LBA {lba} + {plural(sectors, 'sector')} is outside 48-bit addressing")
    needs48 = lba + sectors > LBA28_LIMIT
    if lba48 is None:
        lba48 = needs48
    elif needs48 and not lba48:
        raise ConfigError(f"LBA {lba} + {plural(sectors, 'sector')} needs 48-bit (EXT) commands")
    limit = MAX_PER_COMMAND[lba48]
    per_command = min(sectors, limit) if per_command is None else per_command
    if not 1 <= per_command <= limit:
        raise ConfigError(f"sectors per command must be 1..{limit}, not {per_command}")
    if prd_bytes % 2 or not 2 <= prd_bytes <= MAX_PRD_BYTES:
        raise ConfigError(f"a PRD entry must be an even size of 2..{MAX_PRD_BYTES} bytes")
    command_bytes = min(per_command, sectors) * SECTOR_SIZE
    # Entries of one command: one per prd_bytes, plus one per 64 KiB boundary crossed.
    entries = -(-command_bytes // prd_bytes) + command_bytes // MAX_PRD_BYTES + 1
    if via == "dma" and entries > MAX_PRD_ENTRIES:
        raise ConfigError(
            f"{plural(per_command, 'sector')} per command in PRD entries of {prd_bytes} bytes need "
            f"{entries} entries; the bus master walks at most {MAX_PRD_ENTRIES}"
        )
    padded = payload.ljust(sectors * SECTOR_SIZE, b"\0")
    prd_offset = _align(len(padded), PAGE)
    equates = {
        "LBA": lba,
        "SECTORS": sectors,
        "PER_COMMAND": per_command,
        "VIA_DMA": int(via == "dma"),
        "LBA48": int(lba48),
        "READBACK": int(readback),
        "PRD_BYTES": prd_bytes,
        "PRD_OFFSET": prd_offset,
        "READBACK_OFFSET": prd_offset + _align(entries * 8, PAGE),
    }
    code = assemble_program("diskwrite", equates=equates)
    if len(code) % 16:
        raise HostError("asm/programs/diskwrite64.s must end with `.p2align 4` and `blobs:`")
    return DiskWrite(code + padded, lba, sectors, per_command, lba48)


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to
