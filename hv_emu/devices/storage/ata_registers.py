"""ATA register map, status/error bits, the command table and the IDENTIFY DEVICE block.

Models: the numbers of an ATA (non-packet) hard disk on a parallel ATA channel: the command-block
and control-block register offsets, the bits of Status, Error, Device and Device Control, the
commands hv-emu implements (as data: opcode -> name, operation, data protocol, LBA48, MULTIPLE), and
the 512-byte IDENTIFY DEVICE data a driver reads to learn model, serial, capacity and features,
and the types of the channel's state (``AtaState``, a plain record for snapshots) and of its DMA
hand-off to the bus master. Behaviour lives in ``ata.py``; this module holds no state itself.

Follows: ATA/ATAPI-8 ACS (T13/1699-D): 7.x command descriptions, table 7.16 (IDENTIFY DEVICE data),
ATA8-APT for the register block. Opcodes cross-checked with BitVisor ``drivers/ata/ata_cmd.c``.

Leaves out: packet (ATAPI) commands, queued commands (TCQ; NCQ is decoded by the AHCI port,
``ahci_command.py``, which only adds the IDENTIFY words 75-76 here), SMART, security, HPA (SET MAX),
power-management timers, 28-bit CHS beyond the translation needed by old drivers.

Guest controls: nothing here; the guest picks which of these commands it issues.

Threats: none of its own (constants and pure functions). Unknown opcodes are simply not in
``COMMANDS``; ``ata.py`` aborts them.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Protocol

SECTOR_SIZE = 512

# ------------------------------------------------------------------ command block (8 offsets)
REG_DATA = 0  # 16-bit PIO data
REG_ERROR = 1  # read
REG_FEATURES = 1  # write
REG_COUNT = 2  # sector count
REG_LBA_LOW = 3  # LBA 7:0 (CHS: sector number)
REG_LBA_MID = 4  # LBA 15:8 (CHS: cylinder low)
REG_LBA_HIGH = 5  # LBA 23:16 (CHS: cylinder high)
REG_DEVICE = 6  # LBA 27:24 / head, LBA mode, device select
REG_STATUS = 7  # read: status (reading it acknowledges INTRQ)
REG_COMMAND = 7  # write: command
COMMAND_BLOCK_LEN = 8
#: Registers that are two-deep FIFOs for LBA48 ("HOB": written twice, high-order byte first).
HOB_REGS = (REG_FEATURES, REG_COUNT, REG_LBA_LOW, REG_LBA_MID, REG_LBA_HIGH)

# ------------------------------------------------------------------ control block (1 offset)
REG_ALT_STATUS = 0  # read: status without acknowledging INTRQ
REG_DEVICE_CONTROL = 0  # write
CONTROL_BLOCK_LEN = 1

# ------------------------------------------------------------------ Status
ST_ERR = 0x01  # error: see the Error register
ST_DRQ = 0x08  # data request: the data port is ready for a word
ST_DSC = 0x10  # device seek complete (obsolete, still set by real drives)
ST_DF = 0x20  # device fault
ST_DRDY = 0x40  # device ready: accepts commands
ST_BSY = 0x80  # busy: every other bit is invalid
ST_IDLE = ST_DRDY | ST_DSC

# ------------------------------------------------------------------ Error
ER_AMNF = 0x01
ER_ABRT = 0x04  # command aborted
ER_IDNF = 0x10  # ID not found: address outside the user-accessible range
ER_UNC = 0x40
#: Diagnostic code left in the Error register after reset: device 0 passed, no device 1.
DIAG_PASSED = 0x01

# ------------------------------------------------------------------ Device
DEV_HEAD_MASK = 0x0F  # LBA 27:24 or CHS head
DEV_DEV = 0x10  # 0 = device 0 (master), 1 = device 1 (slave)
DEV_LBA = 0x40  # LBA addressing (else CHS)
DEV_OBSOLETE = 0xA0  # bits 7 and 5: set by old drivers, ignored

# ------------------------------------------------------------------ Device Control
DC_NIEN = 0x02  # mask INTRQ
DC_SRST = 0x04  # software reset while set
DC_HOB = 0x80  # read the previous ("high-order") contents of the HOB registers

#: Largest DRQ block for READ/WRITE MULTIPLE (IDENTIFY word 47).
MAX_MULTIPLE = 16

# ------------------------------------------------------------------ SET FEATURES subcommands
SF_ENABLE_WRITE_CACHE = 0x02
SF_SET_TRANSFER_MODE = 0x03
SF_DISABLE_REVERT = 0x66
SF_DISABLE_WRITE_CACHE = 0x82
SF_DISABLE_LOOKAHEAD = 0x55
SF_ENABLE_LOOKAHEAD = 0xAA
SF_ENABLE_REVERT = 0xCC
#: Transfer-mode values (count register of SET FEATURES 03h): mode class | mode number.
XFER_PIO_DEFAULT = 0x00
XFER_PIO_DEFAULT_NO_IORDY = 0x01
XFER_PIO = 0x08  # PIO flow-control mode n, n <= 4
XFER_MWDMA = 0x20  # multiword DMA mode n, n <= 2
XFER_UDMA = 0x40  # Ultra DMA mode n, n <= 5
MAX_PIO, MAX_MWDMA, MAX_UDMA = 4, 2, 5


class Op(enum.Enum):
    """What a command does (the state machine dispatches on it)."""

    READ = "read"
    WRITE = "write"
    IDENTIFY = "identify"
    VERIFY = "verify"
    FLUSH = "flush"
    SET_FEATURES = "set-features"
    SET_MULTIPLE = "set-multiple"
    INIT_PARAMS = "init-params"
    POWER = "power"
    CHECK_POWER = "check-power"


class Proto(enum.Enum):
    """The data protocol of a command (ATA8-APT)."""

    NON_DATA = "non-data"
    PIO_IN = "pio-in"
    PIO_OUT = "pio-out"
    DMA = "dma"


@dataclass(frozen=True)
class AtaCommand:
    opcode: int
    name: str
    op: Op
    proto: Proto
    lba48: bool = False
    multiple: bool = False


_R, _W = Op.READ, Op.WRITE
_ND, _PI, _PO, _DMA = Proto.NON_DATA, Proto.PIO_IN, Proto.PIO_OUT, Proto.DMA

#: The commands hv-emu implements; every other opcode ends with ERR/ABRT.
COMMANDS: dict[int, AtaCommand] = {
    c.opcode: c
    for c in (
        AtaCommand(0x20, "READ SECTORS", _R, _PI),
        AtaCommand(0x21, "READ SECTORS (no retry)", _R, _PI),
        AtaCommand(0x24, "READ SECTORS EXT", _R, _PI, lba48=True),
        AtaCommand(0x25, "READ DMA EXT", _R, _DMA, lba48=True),
        AtaCommand(0x29, "READ MULTIPLE EXT", _R, _PI, lba48=True, multiple=True),
        AtaCommand(0x30, "WRITE SECTORS", _W, _PO),
        AtaCommand(0x31, "WRITE SECTORS (no retry)", _W, _PO),
        AtaCommand(0x34, "WRITE SECTORS EXT", _W, _PO, lba48=True),
        AtaCommand(0x35, "WRITE DMA EXT", _W, _DMA, lba48=True),
        AtaCommand(0x39, "WRITE MULTIPLE EXT", _W, _PO, lba48=True, multiple=True),
        AtaCommand(0x3D, "WRITE DMA FUA EXT", _W, _DMA, lba48=True),
        AtaCommand(0x40, "READ VERIFY SECTORS", Op.VERIFY, _ND),
        AtaCommand(0x41, "READ VERIFY SECTORS (no retry)", Op.VERIFY, _ND),
        AtaCommand(0x42, "READ VERIFY SECTORS EXT", Op.VERIFY, _ND, lba48=True),
        AtaCommand(0x91, "INITIALIZE DEVICE PARAMETERS", Op.INIT_PARAMS, _ND),
        AtaCommand(0xC4, "READ MULTIPLE", _R, _PI, multiple=True),
        AtaCommand(0xC5, "WRITE MULTIPLE", _W, _PO, multiple=True),
        AtaCommand(0xC6, "SET MULTIPLE MODE", Op.SET_MULTIPLE, _ND),
        AtaCommand(0xC8, "READ DMA", _R, _DMA),
        AtaCommand(0xC9, "READ DMA (no retry)", _R, _DMA),
        AtaCommand(0xCA, "WRITE DMA", _W, _DMA),
        AtaCommand(0xCB, "WRITE DMA (no retry)", _W, _DMA),
        AtaCommand(0xE0, "STANDBY IMMEDIATE", Op.POWER, _ND),
        AtaCommand(0xE1, "IDLE IMMEDIATE", Op.POWER, _ND),
        AtaCommand(0xE2, "STANDBY", Op.POWER, _ND),
        AtaCommand(0xE3, "IDLE", Op.POWER, _ND),
        AtaCommand(0xE5, "CHECK POWER MODE", Op.CHECK_POWER, _ND),
        AtaCommand(0xE7, "FLUSH CACHE", Op.FLUSH, _ND),
        AtaCommand(0xEA, "FLUSH CACHE EXT", Op.FLUSH, _ND, lba48=True),
        AtaCommand(0xEC, "IDENTIFY DEVICE", Op.IDENTIFY, _PI),
        AtaCommand(0xEF, "SET FEATURES", Op.SET_FEATURES, _ND),
    )
}

# ------------------------------------------------------------------ CHS translation
DEFAULT_HEADS = 16
DEFAULT_SECTORS_PER_TRACK = 63
MAX_CYLINDERS = 16383
LBA28_MAX = 0x0FFFFFFF


def decode_address(
    cur: list[int], prev: list[int], device: int, lba48: bool, heads: int, spt: int
) -> tuple[int, int] | None:
    """(LBA, sector count) from the task file: ``cur``/``prev`` are the current and previous
    (HOB) values of offsets 1-5. Count 0 means 256 (LBA28/CHS) or 65536 (LBA48). ``None`` for a
    CHS address outside the geometry."""
    if lba48:
        lba = cur[REG_LBA_LOW] | cur[REG_LBA_MID] << 8 | cur[REG_LBA_HIGH] << 16
        lba |= prev[REG_LBA_LOW] << 24 | prev[REG_LBA_MID] << 32 | prev[REG_LBA_HIGH] << 40
        return lba, (prev[REG_COUNT] << 8 | cur[REG_COUNT]) or 65536
    count = cur[REG_COUNT] or 256
    if device & DEV_LBA:
        lba = (device & DEV_HEAD_MASK) << 24
        return lba | cur[REG_LBA_HIGH] << 16 | cur[REG_LBA_MID] << 8 | cur[REG_LBA_LOW], count
    cyl = cur[REG_LBA_HIGH] << 8 | cur[REG_LBA_MID]
    head, sector = device & DEV_HEAD_MASK, cur[REG_LBA_LOW]
    if sector == 0 or sector > spt or head >= heads:
        return None
    return (cyl * heads + head) * spt + sector - 1, count


def transfer_mode(count: int) -> tuple[str, int] | None:
    """The (class, mode) a SET FEATURES 03h count selects: ("pio"|"mwdma"|"udma", n), or None."""
    kind, mode = count & 0xF8, count & 0x07
    if count in (XFER_PIO_DEFAULT, XFER_PIO_DEFAULT_NO_IORDY):
        return "pio", 0
    limits = {XFER_PIO: ("pio", MAX_PIO), XFER_MWDMA: ("mwdma", MAX_MWDMA),
              XFER_UDMA: ("udma", MAX_UDMA)}  # fmt: skip
    if kind in limits and mode <= limits[kind][1]:
        return limits[kind][0], mode
    return None


def default_cylinders(sector_count: int) -> int:
    return max(1, min(sector_count // (DEFAULT_HEADS * DEFAULT_SECTORS_PER_TRACK), MAX_CYLINDERS))


@dataclass(frozen=True)
class IdentifyParams:
    """The device-state inputs to the IDENTIFY DEVICE block."""

    sector_count: int
    model: str = "HV-EMU HARDDISK"
    serial: str = "HVEMU0000000001"
    firmware: str = "1.0"
    multiple: int = 0  # current multiple count (0 = disabled)
    write_cache: bool = True
    lookahead: bool = True
    mwdma_mode: int = -1  # selected multiword DMA mode, -1 = none
    udma_mode: int = -1  # selected Ultra DMA mode, -1 = none
    heads: int = DEFAULT_HEADS
    sectors_per_track: int = DEFAULT_SECTORS_PER_TRACK
    #: NCQ queue depth of a SATA disk behind AHCI (words 75-76); 0 for the parallel ATA disk.
    ncq_depth: int = 0


def ata_string(text: str, nbytes: int) -> bytes:
    """An IDENTIFY string: ASCII, space-padded, each word holding its first character in the high
    byte (so the bytes of every pair are swapped in memory)."""
    raw = text.encode("ascii", "replace")[:nbytes].ljust(nbytes, b" ")
    out = bytearray(nbytes)
    out[0::2], out[1::2] = raw[1::2], raw[0::2]
    return bytes(out)


def build_identify(p: IdentifyParams) -> bytes:
    """The 256-word IDENTIFY DEVICE block (ACS-2 table 7.16 numbering), with its checksum."""
    w = [0] * 256
    cyls = default_cylinders(p.sector_count)
    lba28 = min(p.sector_count, LBA28_MAX)
    w[0] = 0x0040  # ATA device, fixed (not removable)
    w[1], w[3], w[6] = cyls, DEFAULT_HEADS, DEFAULT_SECTORS_PER_TRACK  # default CHS
    w[47] = 0x8000 | MAX_MULTIPLE  # READ/WRITE MULTIPLE: up to 16 sectors per DRQ block
    w[49] = 0x0300  # bit 9: LBA supported, bit 8: DMA supported
    w[50] = 0x4000
    w[53] = 0x0007  # words 54-58, 64-70 and 88 are valid
    cur_cyls = max(1, min(p.sector_count // (p.heads * p.sectors_per_track), 0xFFFF))
    w[54], w[55], w[56] = cur_cyls, p.heads, p.sectors_per_track  # current CHS translation
    cur_cap = min(cur_cyls * p.heads * p.sectors_per_track, 0xFFFFFFFF)
    w[57], w[58] = cur_cap & 0xFFFF, cur_cap >> 16
    w[59] = (0x0100 | p.multiple) if p.multiple else 0  # bit 8: multiple setting valid
    w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16  # LBA28 capacity
    w[63] = 0x0007 | ((1 << (p.mwdma_mode + 8)) if p.mwdma_mode >= 0 else 0)  # MWDMA 0-2
    w[64] = 0x0003  # PIO modes 3 and 4
    w[65] = w[66] = w[67] = w[68] = 120  # minimum cycle times (ns)
    w[80] = 0x01F0  # major version: ATA/ATAPI-4 to ATA8-ACS
    w[82] = 0x4000 | 0x0040 | 0x0020  # supported: NOP bit 14, look-ahead, write cache
    w[83] = 0x4000 | 0x2000 | 0x1000 | 0x0400  # FLUSH CACHE EXT, FLUSH CACHE, 48-bit address
    w[84] = 0x4000
    w[85] = 0x4000 | (0x0040 if p.lookahead else 0) | (0x0020 if p.write_cache else 0)
    w[86] = 0x2000 | 0x1000 | 0x0400  # enabled: FLUSH EXT, FLUSH, 48-bit address
    w[87] = 0x4000
    w[88] = 0x003F | ((1 << (p.udma_mode + 8)) if p.udma_mode >= 0 else 0)  # UDMA 0-5
    w[93] = 0x6000 | 0x0009  # device 0 passed diagnostics (PATA), 80-conductor cable
    if p.ncq_depth:
        w[75] = p.ncq_depth - 1  # queue depth - 1
        w[76] = 0x0100 | 0x0002  # SATA capabilities: NCQ, Gen1 signalling
        w[93] = 0  # no PATA cable on a SATA link
    cap48 = p.sector_count
    w[100], w[101], w[102], w[103] = ((cap48 >> s) & 0xFFFF for s in (0, 16, 32, 48))
    w[106] = 0x4000  # one 512-byte logical sector per physical sector
    block = bytearray(struct.pack("<256H", *w))
    block[20:40] = ata_string(p.serial, 20)  # words 10-19
    block[46:54] = ata_string(p.firmware, 8)  # words 23-26
    block[54:94] = ata_string(p.model, 40)  # words 27-46
    block[510] = 0xA5  # word 255: integrity signature, checksum in the high byte
    block[511] = (-sum(block[:511])) & 0xFF
    return bytes(block)


# ------------------------------------------------------------------ the channel's state record
class Phase(enum.Enum):
    IDLE = "idle"
    PIO_IN = "pio-in"  # the guest reads a DRQ block from the data port
    PIO_OUT = "pio-out"  # the guest writes a DRQ block to the data port
    DMA = "dma"  # waiting for the bus master
    RESET = "reset"  # SRST asserted: BSY


@dataclass(frozen=True)
class DmaRequest:
    """A DMA command waiting for the bus master."""

    lba: int
    count: int  # sectors
    to_memory: bool  # True for a disk read (the bus master writes guest memory)
    command: int

    @property
    def nbytes(self) -> int:
        return self.count * SECTOR_SIZE


class DmaListener(Protocol):
    def dma_ready(self) -> None: ...


@dataclass
class AtaState:
    """Everything a snapshot needs (the disk and the observer are not state)."""

    cur: list[int] = field(default_factory=lambda: [0] * 6)  # offsets 1-5 (index 0 unused)
    prev: list[int] = field(default_factory=lambda: [0] * 6)  # previous writes (HOB)
    device: int = 0
    status: int = ST_IDLE
    error: int = DIAG_PASSED
    control: int = 0
    irq: bool = False
    multiple: int = 0
    heads: int = DEFAULT_HEADS
    sectors_per_track: int = DEFAULT_SECTORS_PER_TRACK
    write_cache: bool = True
    lookahead: bool = True
    mwdma_mode: int = -1
    udma_mode: int = -1
    phase: Phase = Phase.IDLE
    command: int = 0
    lba: int = 0  # first sector of the current DRQ block / DMA transfer
    remaining: int = 0  # sectors left in the command, including the current block
    buffer: bytearray = field(default_factory=bytearray)  # the current DRQ block
    pos: int = 0  # bytes of ``buffer`` already moved


def set_features(st: AtaState, feature: int, count: int) -> bool:
    """Apply SET FEATURES (``feature`` subcommand, ``count`` argument) to ``st``; False = abort."""
    if feature == SF_SET_TRANSFER_MODE:
        mode = transfer_mode(count)
        if mode is not None and mode[0] != "pio":
            st.mwdma_mode = mode[1] if mode[0] == "mwdma" else -1
            st.udma_mode = mode[1] if mode[0] == "udma" else -1
        return mode is not None
    if feature in (SF_ENABLE_WRITE_CACHE, SF_DISABLE_WRITE_CACHE):
        st.write_cache = feature == SF_ENABLE_WRITE_CACHE
        return True
    if feature in (SF_ENABLE_LOOKAHEAD, SF_DISABLE_LOOKAHEAD):
        st.lookahead = feature == SF_ENABLE_LOOKAHEAD
        return True
    return feature in (SF_ENABLE_REVERT, SF_DISABLE_REVERT)
