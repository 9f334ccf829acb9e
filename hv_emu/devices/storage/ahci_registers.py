"""AHCI numbers and structures: register offsets and bits, command headers, FISes, PRD entries.

Models: what an AHCI 1.x host bus adapter and a driver agree on, as data and pure functions: the
generic host control and per-port register offsets and bits, the values QEMU q35's ICH9 AHCI
reports (CAP, PI, VS, the reset values of a port), the 32-byte command header, the Register H2D
FIS a command table starts with (decoded into an ``AtaCommandFis``), the 16-byte PRD entry, and
the device-to-host FISes the HBA writes into the received-FIS area (D2H Register, PIO Setup, Set
Device Bits). Behaviour lives in ``ahci_port.py`` and ``ahci.py``; nothing here holds state.

Follows: Serial ATA AHCI 1.3.1 (3.1 host registers, 3.3 port registers, 4.2.1 received-FIS
layout, 4.2.2 command header, 4.2.3 command table and PRD); SATA 3.x FIS layouts; QEMU
``hw/ide/ahci.c``/``ahci_internal.h`` for the values a q35 guest reads (docs/STORAGE.md, AHCI).

Leaves out: port multipliers (the PMP field is ignored), FIS-based switching, enclosure
management, command completion coalescing, ATAPI (the A bit and ACMD), the DMA Setup FIS.

Guest controls: nothing here; every decoder takes the guest's bytes as a private copy and checks
nothing but layout (the port checks addresses against RAM).

Threats: none of its own (constants and pure functions over fixed-size byte strings).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ------------------------------------------------------------------ generic host control
HOST_CAP = 0x00
HOST_GHC = 0x04
HOST_IS = 0x08
HOST_PI = 0x0C
HOST_VS = 0x10
HOST_CAP2 = 0x24
PORT_REGS_START = 0x100
PORT_STRIDE = 0x80
#: The window a guest maps (QEMU's BAR5 size: 4 KiB, whole pages for the vCPU).
ABAR_SIZE = 0x1000

NUM_PORTS = 6  # ICH9: six ports, as QEMU q35
NUM_SLOTS = 32
CAP_S64A = 1 << 31
CAP_SNCQ = 1 << 30
CAP_SAM = 1 << 18
CAP_ISS_GEN1 = 1 << 20
#: CAP as QEMU reports it: 6 ports, 32 slots, Gen1, NCQ, AHCI-only, 64-bit (0xC0141F05).
CAP_VALUE = (NUM_PORTS - 1) | (NUM_SLOTS - 1) << 8 | CAP_ISS_GEN1 | CAP_SNCQ | CAP_SAM | CAP_S64A
PI_VALUE = (1 << NUM_PORTS) - 1
VS_VALUE = 0x00010000  # AHCI 1.0, as QEMU (so drivers do not read CAP2)

GHC_HR = 1 << 0
GHC_IE = 1 << 1
GHC_AE = 1 << 31

# ------------------------------------------------------------------ port registers
PX_CLB, PX_CLBU, PX_FB, PX_FBU = 0x00, 0x04, 0x08, 0x0C
PX_IS, PX_IE, PX_CMD = 0x10, 0x14, 0x18
PX_TFD, PX_SIG, PX_SSTS, PX_SCTL, PX_SERR = 0x20, 0x24, 0x28, 0x2C, 0x30
PX_SACT, PX_CI = 0x34, 0x38

CMD_ST = 1 << 0
CMD_SUD = 1 << 1
CMD_POD = 1 << 2
CMD_CLO = 1 << 3
CMD_FRE = 1 << 4
CMD_FR = 1 << 14
CMD_CR = 1 << 15
CMD_ICC_MASK = 0xF << 28
#: Bits the HBA owns (CCS, FR, CR, ...): QEMU's PORT_CMD_RO_MASK.
CMD_RO_MASK = 0x007DFFE0

IS_DHRS = 1 << 0  # D2H Register FIS received
IS_PSS = 1 << 1  # PIO Setup FIS received
IS_DSS = 1 << 2
IS_SDBS = 1 << 3  # Set Device Bits FIS received
IS_DPS = 1 << 5  # a PRD with the I bit completed
IS_HBDS = 1 << 28  # host bus data error (a PRD region outside RAM)
IS_HBFS = 1 << 29  # host bus fatal error (a command list or table outside RAM)
IS_TFES = 1 << 30  # task file error
IE_MASK = 0xFDC000FF  # the PxIE bits QEMU keeps

SERR_E = 1 << 11  # internal error (the HBA could not reach system memory)

SSTS_DEVICE = 0x113  # DET 3 (device, PHY up), SPD 1 (Gen1), IPM 1 (active)
SIG_DISK = 0x00000101
SIG_NONE = 0xFFFFFFFF
TFD_RESET = 0x7F  # until the first D2H FIS

# ------------------------------------------------------------------ memory structures
HEADER_SIZE = 32
HEADER = struct.Struct("<HHIQ")  # flags, PRDTL, PRDBC, CTBA
HDR_CFL_MASK = 0x1F
HDR_WRITE = 1 << 6
CTBA_MASK = ~0x7F & (2**64 - 1)
CLB_MASK = ~0x3FF & 0xFFFFFFFF
FB_MASK = ~0xFF & 0xFFFFFFFF
CFIS_SIZE = 64
PRDT_OFFSET = 0x80
PRD = struct.Struct("<QII")  # DBA, reserved, DBC (bits 21:0 = bytes - 1) | I (bit 31)
PRD_DBC_MASK = 0x3FFFFF
PRD_IRQ = 1 << 31

RFIS_DSFIS, RFIS_PSFIS, RFIS_RFIS, RFIS_SDBFIS = 0x00, 0x20, 0x40, 0x58
RFIS_SIZE = 0x100

FIS_REG_H2D = 0x27
FIS_REG_D2H = 0x34
FIS_PIO_SETUP = 0x5F
FIS_SDB = 0xA1
H2D_C = 0x80  # byte 1: command (1) or device control (0)
CONTROL_SRST = 0x04

# NCQ (READ/WRITE FPDMA QUEUED)
ATA_READ_FPDMA = 0x60
ATA_WRITE_FPDMA = 0x61


@dataclass(frozen=True)
class CommandHeader:
    """One slot of the command list, decoded."""

    cfl: int  # command FIS length, dwords
    write: bool  # W: host -> device
    prdtl: int  # PRD entries (0..65535)
    ctba: int  # command table base (128-byte aligned)


def decode_header(raw: bytes) -> CommandHeader:
    flags, prdtl, _prdbc, ctba = HEADER.unpack_from(raw)
    return CommandHeader(flags & HDR_CFL_MASK, bool(flags & HDR_WRITE), prdtl, ctba & CTBA_MASK)


@dataclass(frozen=True)
class AtaCommandFis:
    """A Register H2D FIS (the first 20 bytes of a command table), decoded."""

    fis_type: int
    is_command: bool  # C bit: a command (True) or a device-control update (False)
    command: int
    features: int  # 16 bits: features 7:0 | features 15:8 << 8
    lba48: int  # bytes 4-6, 8-10
    device: int
    count: int  # 16 bits: count 7:0 | count 15:8 << 8
    control: int

    @property
    def lba28(self) -> int:
        return (self.lba48 & 0xFFFFFF) | (self.device & 0x0F) << 24

    @property
    def ncq_tag(self) -> int:
        return (self.count & 0xFF) >> 3

    @property
    def ncq_count(self) -> int:
        return self.features or 0x10000


def decode_h2d(raw: bytes) -> AtaCommandFis:
    b = raw[:20].ljust(20, b"\0")
    lba = b[4] | b[5] << 8 | b[6] << 16 | b[8] << 24 | b[9] << 32 | b[10] << 40
    return AtaCommandFis(b[0], bool(b[1] & H2D_C), b[2], b[3] | b[11] << 8, lba, b[7],
                         b[12] | b[13] << 8, b[15])  # fmt: skip


@dataclass(frozen=True)
class PrdEntry:
    address: int
    nbytes: int
    interrupt: bool


def decode_prd(raw: bytes) -> PrdEntry:
    dba, _reserved, dbc = PRD.unpack_from(raw)
    return PrdEntry(dba, (dbc & PRD_DBC_MASK) + 1, bool(dbc & PRD_IRQ))


def d2h_fis(status: int, error: int, lba: int = 0, device: int = 0, count: int = 0) -> bytes:
    """A D2H Register FIS with the I bit set (20 bytes)."""
    fis = bytearray(20)
    fis[0], fis[1], fis[2], fis[3] = FIS_REG_D2H, 0x40, status, error
    fis[4], fis[5], fis[6], fis[7] = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF, device
    fis[8], fis[9], fis[10] = lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF
    fis[12], fis[13] = count & 0xFF, count >> 8 & 0xFF
    return bytes(fis)


def pio_setup_fis(status: int, nbytes: int, to_host: bool) -> bytes:
    """A PIO Setup FIS (20 bytes): I bit, direction, the transfer count of the DRQ block."""
    fis = bytearray(20)
    fis[0], fis[1], fis[2] = FIS_PIO_SETUP, 0x40 | (0x20 if to_host else 0), status
    fis[15] = status  # E_Status: the status after the transfer
    fis[16], fis[17] = nbytes & 0xFF, nbytes >> 8 & 0xFF
    return bytes(fis)


def sdb_fis(status: int, error: int, finished_tags: int) -> bytes:
    """A Set Device Bits FIS (8 bytes) with the I bit: the NCQ tags it completes."""
    return struct.pack("<BBBBI", FIS_SDB, 0x40, status & 0x77, error, finished_tags)


#: PxTFD after the signature FIS: error 1 (diagnostics passed), status DSC|DF, the bits QEMU's
#: port reset leaves (``ahci_reset_port``: ``SEEK_STAT | WRERR_STAT``); DRDY comes with the
#: first command's completion.
SIGNATURE_STATUS, SIGNATURE_ERROR = 0x30, 0x01


def signature_fis() -> bytes:
    """The D2H FIS a disk sends after reset: the status above, error 1, count 1, LBA 1."""
    return d2h_fis(SIGNATURE_STATUS, SIGNATURE_ERROR, lba=1, count=1)
