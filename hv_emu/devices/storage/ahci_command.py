"""One AHCI command slot, executed: header, command FIS, PRDT walk, data, inspection.

Models: what an AHCI HBA and its SATA disk do between the driver setting a PxCI bit and the
device's answer: fetch the 32-byte command header of the slot from the command list, fetch the
Register H2D FIS from the command table, run the ATA command it carries (IDENTIFY DEVICE, READ/
WRITE DMA (EXT), READ/WRITE SECTORS (EXT) with their data through the PRDT, FLUSH CACHE (EXT),
READ VERIFY, the non-data housekeeping commands, and NCQ's READ/WRITE FPDMA QUEUED), and report
an ``Outcome`` the port turns into PxTFD, PxIS, PxSERR and the FISes it writes. The transfer is
synchronous: the whole PRDT is walked and checked before a byte moves.

Writes reach the disk exactly as bus-master IDE's do (``busmaster.py``): the data of all PRD
regions is gathered once into a private buffer, published once to the storage observer (the
inspection) as one ``StorageWrite`` of transport ``"dma"``, and the verdict's bytes committed, or
nothing (a refusal ends the command with ERR/ABRT). Reads go disk -> observer -> guest memory.

Follows: Serial ATA AHCI 1.3.1 (5.5 command processing, 4.2.3 PRD byte counts); ATA8-ACS for the
commands (the table in ``ata_registers.py``, shared with the IDE channel), SATA 3.x 13.6 for NCQ
(sector count in FEATURES, tag in COUNT 7:3); QEMU ``hw/ide/ahci.c`` for what a q35 guest sees
(``docs/STORAGE.md``, AHCI).

Leaves out: ATAPI (the A bit), port multipliers (PMP), the header's W and P bits (the command
decides the direction), BIST and the R bit, commands beyond the shared table plus NCQ, partial
transfers (a PRDT shorter than the transfer moves nothing).

Guest controls: every byte of the command header, the command table, the FIS and the PRDT
(addresses, byte counts, interrupt bits, up to 65535 entries) and the data.

Threats (threat -> mitigation):
- a header, table or PRD entry outside RAM -> ``Outcome`` with PxIS.HBFS and TFES, nothing moved;
- a PRD region outside RAM -> HBDS and TFES, nothing moved;
- a huge or looping PRDT -> the walk reads at most PRDTL (<= 65535, a 16-bit field) entries and
  stops once the transfer (<= 65536 sectors, checked against the disk first) is covered;
- a PRDT shorter than the transfer -> ERR/ABRT, nothing committed, nothing scattered;
- LBA or count beyond the disk, a write to a read-only image -> ERR, IDNF|ABRT or ABRT;
- data changed after inspection -> one private copy is inspected and committed;
- a host I/O error -> ERR (UNC|ABRT for reads), kept in ``Outcome.reason``, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.disk import Disk
from hv_emu.devices.storage.observer import StorageObserver, StorageRead, StorageWrite, resolve
from hv_emu.memory.guest import GuestMemory

ST_OK = r.ST_IDLE  # DRDY | DSC
ST_ERROR = r.ST_IDLE | r.ST_ERR


@dataclass(frozen=True)
class Outcome:
    """What a slot's execution left for the port to report."""

    status: int = ST_OK
    error: int = 0
    nbytes: int = 0  # PRDBC: bytes moved
    irq: int = 0  # PxIS bits beyond the completion FIS's (DPS, HBDS, HBFS, TFES)
    serr: int = 0
    ncq_tag: int | None = None  # an NCQ command: completes with an SDB FIS for this tag
    pio: bool = False  # a PIO data command: a PIO Setup FIS precedes the D2H FIS
    control: int | None = None  # a device-control FIS (not a command): its control byte
    lba: int = 0
    reason: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.status & r.ST_ERR)


def _fail(error: int, reason: str, *, irq: int = 0, serr: int = 0, ncq: int | None = None,
          lba: int = 0) -> Outcome:  # fmt: skip
    return Outcome(ST_ERROR, error, 0, irq | a.IS_TFES, serr, ncq, False, None, lba, reason)


def _bus_error(reason: str, irq: int, ncq: int | None = None) -> Outcome:
    return _fail(r.ER_ABRT, reason, irq=irq, serr=a.SERR_E, ncq=ncq)


@dataclass(frozen=True)
class _Request:
    command: int
    lba: int
    count: int  # sectors (0 for non-data)
    write: bool
    pio: bool
    ncq: int | None


class SlotExecutor:
    """Runs command slots against ``disk`` and ``mem``, publishing to ``observer``."""

    def __init__(self, mem: GuestMemory, disk: Disk, observer: StorageObserver,
                 identify: Callable[[], bytes]) -> None:  # fmt: skip
        self.mem, self.disk, self.observer, self.identify = mem, disk, observer, identify
        self.host_error: OSError | None = None

    def run(self, header_pa: int) -> Outcome:
        """Execute the slot whose header is at ``header_pa``; write PRDBC back (not for NCQ)."""
        mem = self.mem
        if not mem.contains(header_pa, a.HEADER_SIZE):
            return _bus_error(f"command header at {header_pa:#x} outside RAM", a.IS_HBFS)
        header = a.decode_header(mem.read(header_pa, a.HEADER_SIZE))
        if not mem.contains(header.ctba, a.PRDT_OFFSET):
            return _bus_error(f"command table at {header.ctba:#x} outside RAM", a.IS_HBFS)
        fis = a.decode_h2d(mem.read(header.ctba, 20))
        outcome = self._execute(header, fis)
        if outcome.ncq_tag is None:  # NCQ leaves PRDBC alone (QEMU; libahci does not read it)
            mem.write(header_pa + 4, outcome.nbytes.to_bytes(4, "little"))
        return outcome

    # ------------------------------------------------------------------ decoding
    def _execute(self, header: a.CommandHeader, fis: a.AtaCommandFis) -> Outcome:
        if fis.fis_type != a.FIS_REG_H2D:
            return _fail(r.ER_ABRT, f"command FIS type {fis.fis_type:#04x} is not Register H2D")
        if not fis.is_command:
            return Outcome(control=fis.control)
        req = self._request(fis)
        if isinstance(req, Outcome):
            return req
        if req.count and req.lba + req.count > self.disk.sector_count:
            return _fail(r.ER_IDNF | r.ER_ABRT, "LBA beyond the disk", ncq=req.ncq, lba=req.lba)
        if req.write and self.disk.read_only:
            return _fail(r.ER_ABRT, "write to a read-only image", ncq=req.ncq, lba=req.lba)
        cmd = r.COMMANDS.get(req.command)
        if cmd is not None and cmd.op is r.Op.IDENTIFY:
            return self._to_memory(header, self.identify(), req)
        if cmd is not None and cmd.op is r.Op.FLUSH:
            try:
                self.disk.flush()
            except OSError as e:
                self.host_error = e
                return _fail(r.ER_ABRT, f"flush: {e}")
            return Outcome()
        if req.count == 0 or (cmd is not None and cmd.op is r.Op.VERIFY):
            return Outcome()  # non-data housekeeping, or a verify already range-checked
        if req.write:
            return self._from_memory(header, req)
        try:
            data = self.disk.read_sectors(req.lba, req.count)
        except OSError as e:
            self.host_error = e
            return _fail(r.ER_UNC | r.ER_ABRT, f"read: {e}", ncq=req.ncq, lba=req.lba)
        self.observer.on_read(StorageRead(req.lba, data, "dma", req.command))
        return self._to_memory(header, data, req)

    def _request(self, fis: a.AtaCommandFis) -> _Request | Outcome:
        op = fis.command
        if op in (a.ATA_READ_FPDMA, a.ATA_WRITE_FPDMA):
            return _Request(op, fis.lba48, fis.ncq_count, op == a.ATA_WRITE_FPDMA, False,
                            fis.ncq_tag)  # fmt: skip
        cmd = r.COMMANDS.get(op)
        if cmd is None:
            return _fail(r.ER_ABRT, f"unsupported command {op:#04x}")
        if cmd.op in (r.Op.READ, r.Op.WRITE, r.Op.VERIFY):
            if not fis.device & r.DEV_LBA and not cmd.lba48:
                return _fail(r.ER_ABRT, "CHS addressing on a SATA port")
            lba = fis.lba48 if cmd.lba48 else fis.lba28
            count = (fis.count or 0x10000) if cmd.lba48 else ((fis.count & 0xFF) or 0x100)
            pio = cmd.proto is not r.Proto.DMA
            return _Request(op, lba, count, cmd.op is r.Op.WRITE, pio, None)
        return _Request(op, 0, 0, False, cmd.op is r.Op.IDENTIFY, None)

    # ------------------------------------------------------------------ the PRDT
    def _walk(self, header: a.CommandHeader, nbytes: int,
              ncq: int | None) -> tuple[list[tuple[int, int]], int] | Outcome:  # fmt: skip
        """The (address, bytes) regions covering ``nbytes``, and the PxIS.DPS bit if an entry
        with the I bit was used; or the error ``Outcome``. Reads each entry once."""
        regions: list[tuple[int, int]] = []
        covered, irq = 0, 0
        base = header.ctba + a.PRDT_OFFSET
        for i in range(header.prdtl):  # PRDTL is 16 bits: at most 65535 entries
            if covered == nbytes:
                break
            entry_pa = base + i * a.PRD.size
            if not self.mem.contains(entry_pa, a.PRD.size):
                return _bus_error(f"PRD entry {i} at {entry_pa:#x} outside RAM", a.IS_HBFS, ncq)
            prd = a.decode_prd(self.mem.read(entry_pa, a.PRD.size))
            take = min(prd.nbytes, nbytes - covered)
            if not self.mem.contains(prd.address, take):
                return _bus_error(f"PRD region {prd.address:#x}+{take:#x} outside RAM",
                                  a.IS_HBDS, ncq)  # fmt: skip
            regions.append((prd.address, take))
            covered += take
            irq |= a.IS_DPS if prd.interrupt else 0
        if covered < nbytes:
            return _fail(r.ER_ABRT, "PRDT shorter than the transfer", ncq=ncq)
        return regions, irq

    def _to_memory(self, header: a.CommandHeader, data: bytes, req: _Request) -> Outcome:
        walk = self._walk(header, len(data), req.ncq)
        if isinstance(walk, Outcome):
            return walk
        regions, irq = walk
        pos = 0
        for address, n in regions:
            self.mem.write(address, data[pos : pos + n])
            pos += n
        return Outcome(nbytes=len(data), irq=irq, ncq_tag=req.ncq, pio=req.pio)

    def _from_memory(self, header: a.CommandHeader, req: _Request) -> Outcome:
        nbytes = req.count * r.SECTOR_SIZE
        walk = self._walk(header, nbytes, req.ncq)
        if isinstance(walk, Outcome):
            return walk
        regions, irq = walk
        data = b"".join(self.mem.read(address, n) for address, n in regions)  # private copy
        verdict = self.observer.on_write(StorageWrite(req.lba, data, "dma", req.command))
        accepted = resolve(verdict, data)
        if accepted is None:
            return _fail(r.ER_ABRT, f"write refused: {verdict.reason}", irq=irq, ncq=req.ncq,
                         lba=req.lba)  # fmt: skip
        try:
            self.disk.write_sectors(req.lba, accepted)
        except OSError as e:
            self.host_error = e
            return _fail(r.ER_ABRT, f"write: {e}", ncq=req.ncq, lba=req.lba)
        return Outcome(nbytes=nbytes, irq=irq, ncq_tag=req.ncq, pio=req.pio)
