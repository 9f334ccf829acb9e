"""Bus-master IDE: the DMA engine of the IDE function, walking the guest's PRD table.

Models: the bus-master register block of a PCI IDE controller (BAR4, 16 I/O offsets: primary
channel at +0..+7, secondary at +8..+15) for the primary channel: Command (Start, direction),
Status (Active, Error, Interrupt write-1-to-clear, drive DMA-capable bits, Simplex), and the
Physical Region Descriptor (PRD) table pointer. At Start, with a DMA command pending on the ATA
channel, it walks the PRD table in guest-physical memory and moves the whole transfer at once.
Writes are gathered into a private buffer, published once to the storage observer (through
``AtaChannel.dma_write_data``) and committed or refused as a whole (BitVisor ``ata_bm.c``). Reads
go disk -> private buffer -> observer -> scattered into guest memory with ``GuestMemory.write``
(whose listeners drop stale translated code).

Follows: Programming Interface for Bus Master IDE Controller (SFF-8038i rev 1.0): register
layout, PRD format (32-bit physical base, 16-bit byte count with 0 meaning 64 KiB, end-of-table
bit 31 of the second dword) and the Interrupt/Active end states; Intel PIIX3 datasheet for
reset values.

Leaves out:
- Interrupts are not delivered (no interrupt controller): the Interrupt bit is set as the spec
  says and the guest polls Status.
- The secondary channel: offsets +8..+15 read 0 and ignore writes (no secondary ATA channel).
- Timing: the transfer happens inside the OUT that sets Start (or the ATA command that arrives
  while Start is set), so Active is never seen set during a transfer.
- 64 KiB-boundary crossing rules of PRD regions (accepted), odd bytes: a PRD entry with an odd
  address or an odd byte count is invalid (Error bit), not silently rounded.

End states (SFF-8038i table "Interrupt/Active"):
- PRD table exactly as long as the transfer: Interrupt = 1, Active = 0;
- PRD table longer than the transfer: Interrupt = 1, Active = 1 (the driver clears Start);
- PRD table shorter (end-of-table before the transfer is covered): Interrupt = 0, Active = 0,
  Error = 0. A real device would hang with DRQ set; hv-emu ends the ATA command with ERR/ABRT so
  a polling driver is not stuck. Disk reads scatter the part that fits; disk writes commit nothing;
- bad PRD (entry or region outside RAM, odd address or count, more than ``MAX_PRD_ENTRIES``
  entries without covering the transfer), direction bit not matching the command, bus mastering
  disabled in the PCI command register: Error = 1, Active = 0, Interrupt = 0, ATA ERR/ABRT,
  nothing committed and nothing scattered.

Guest controls: the three registers, the PRD table and its regions, when Start is set.

Threats (threat -> mitigation):
- PRD table or regions outside RAM -> every entry and region is checked with
  ``GuestMemory.contains`` before any byte moves; Error bit, no partial commit;
- endless or looping PRD table -> the walk stops once the transfer is covered or after
  ``MAX_PRD_ENTRIES`` (8192) entries; work and memory are bounded by the transfer length (at most
  65536 sectors = 32 MiB, already checked against the disk by the ATA channel);
- changing guest memory after inspection -> the data is copied once into a private buffer and
  only that copy (or the verdict's) is committed;
- Start without a pending DMA command -> Active is set and nothing moves until a DMA command
  arrives; clearing Start ends it;
- direction bit lying about the command -> Error bit and ATA ERR/ABRT.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

from hv_emu.devices.storage.ata import AtaChannel
from hv_emu.errors import GuestFault
from hv_emu.memory.guest import GuestMemory

# ------------------------------------------------------------------ register offsets (primary)
BM_COMMAND = 0
BM_STATUS = 2
BM_PRD = 4  # 4 bytes, dword aligned
BM_CHANNEL_LEN = 8
BM_LEN = 16  # both channels

# Command
CMD_START = 0x01
CMD_READ = 0x08  # 1: the bus master writes memory (an ATA read); 0: it reads memory

# Status
STAT_ACTIVE = 0x01  # read-only
STAT_ERROR = 0x02  # write 1 to clear
STAT_INTERRUPT = 0x04  # write 1 to clear
STAT_DRIVE0_DMA = 0x20  # read-write, set by firmware
STAT_DRIVE1_DMA = 0x40
STAT_SIMPLEX = 0x80  # read-only: 0, both channels may master at once
STAT_W1C = STAT_ERROR | STAT_INTERRUPT
STAT_RW = STAT_DRIVE0_DMA | STAT_DRIVE1_DMA

PRD_ENTRY = struct.Struct("<IHH")  # base, byte count (0 = 64 KiB), flags (bit 15: end of table)
PRD_EOT = 0x8000
PRD_MAX_BYTES = 0x10000
MAX_PRD_ENTRIES = 8192


@dataclass(frozen=True)
class BusMasterState:
    command: int = 0
    status: int = STAT_DRIVE0_DMA  # as a BIOS leaves it: drive 0 is DMA capable
    prd: int = 0


@dataclass(frozen=True)
class PrdWalk:
    """The regions a PRD table gives for a transfer (trimmed to its length)."""

    regions: tuple[tuple[int, int], ...]  # (guest-physical address, bytes)
    covered: int  # bytes of the transfer the table covers
    longer: bool  # the table has room left after the transfer
    error: str = ""  # non-empty: the table is unusable (Error bit)


def walk_prd(
    mem: GuestMemory, table: int, nbytes: int, max_entries: int = MAX_PRD_ENTRIES
) -> PrdWalk:
    """Walk the PRD table at ``table`` for a transfer of ``nbytes``. Pure: reads guest memory once
    per entry (a private copy) and checks every region against RAM; moves no data."""
    regions: list[tuple[int, int]] = []
    covered = 0
    for i in range(max_entries):
        entry_pa = table + i * PRD_ENTRY.size
        if not mem.contains(entry_pa, PRD_ENTRY.size):
            return PrdWalk((), covered, False, f"PRD entry {i} at {entry_pa:#x} outside RAM")
        base, count, flags = PRD_ENTRY.unpack(mem.read(entry_pa, PRD_ENTRY.size))
        size = count or PRD_MAX_BYTES
        if base & 1 or size & 1:
            return PrdWalk((), covered, False, f"PRD entry {i}: odd address or byte count")
        take = min(size, nbytes - covered)
        if take and not mem.contains(base, take):
            return PrdWalk((), covered, False, f"PRD region {base:#x}+{take:#x} outside RAM")
        if take:
            regions.append((base, take))
            covered += take
        eot = bool(flags & PRD_EOT)
        if covered == nbytes:
            return PrdWalk(tuple(regions), covered, longer=not eot or take < size)
        if eot:
            return PrdWalk(tuple(regions), covered, longer=False)  # shorter than the transfer
    return PrdWalk((), covered, False, f"no end of table within {max_entries} PRD entries")


class BusMaster:
    """A ``PortDevice`` over the 16 bus-master offsets, driving DMA for ``channel``.

    ``enabled`` reports the PCI command register's Bus Master Enable (``PciConfigSpace.
    bus_master_enabled``); when it returns False, Start ends a pending command with the Error bit.
    """

    def __init__(
        self,
        channel: AtaChannel,
        mem: GuestMemory,
        enabled: Callable[[], bool] | None = None,
        max_prd_entries: int = MAX_PRD_ENTRIES,
    ) -> None:
        self.channel = channel
        self.mem = mem
        self._enabled = enabled
        self.max_prd_entries = max_prd_entries
        self.st = BusMasterState()
        self.last_error = ""  # why the last transfer failed, for the event log
        channel.attach_dma(self)

    def reset(self) -> None:
        self.st = BusMasterState()
        self.last_error = ""

    def snapshot(self) -> BusMasterState:
        return self.st

    def load_snapshot(self, state: BusMasterState) -> None:
        self.st = state

    # ------------------------------------------------------------------ port access, bytewise
    def io_read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= self._read_byte(offset + i) << (8 * i)
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def _read_byte(self, offset: int) -> int:
        if offset == BM_COMMAND:
            return self.st.command
        if offset == BM_STATUS:
            return self.st.status
        if BM_PRD <= offset < BM_PRD + 4:
            return (self.st.prd >> (8 * (offset - BM_PRD))) & 0xFF
        return 0  # reserved bytes and the absent secondary channel

    def _write_byte(self, offset: int, value: int) -> None:
        st = self.st
        if offset == BM_COMMAND:
            self._write_command(value)
        elif offset == BM_STATUS:
            status = (st.status & ~STAT_RW & ~(value & STAT_W1C)) | (value & STAT_RW)
            self.st = replace(st, status=status)
        elif BM_PRD <= offset < BM_PRD + 4:
            shift = 8 * (offset - BM_PRD)
            prd = (st.prd & ~(0xFF << shift) | value << shift) & 0xFFFFFFFC  # dword aligned
            self.st = replace(st, prd=prd)

    def _write_command(self, value: int) -> None:
        st = self.st
        active = bool(st.status & STAT_ACTIVE)
        # The direction bit must not change while the engine is active (SFF-8038i); keep it.
        direction = st.command & CMD_READ if active else value & CMD_READ
        self.st = replace(st, command=direction | (value & CMD_START))
        if value & CMD_START and not st.command & CMD_START:
            # The driver sets Start: the engine goes active and serves a pending DMA command
            # now, or the next one the ATA channel signals.
            self.st = replace(self.st, status=self.st.status | STAT_ACTIVE)
            self.dma_ready()
        elif not value & CMD_START:
            # The driver clears Start (after completion, or to abort): the engine stops.
            self.st = replace(self.st, status=self.st.status & ~STAT_ACTIVE)

    # ------------------------------------------------------------------ the transfer
    def dma_ready(self) -> None:
        """Called by the ATA channel when a DMA command is waiting, and by Start."""
        if not (self.st.command & CMD_START and self.st.status & STAT_ACTIVE):
            return
        req = self.channel.dma_request()
        if req is None:
            return
        if self._enabled is not None and not self._enabled():
            self._fail("bus mastering disabled in the PCI command register")
            return
        if bool(self.st.command & CMD_READ) != req.to_memory:
            self._fail("bus-master direction does not match the ATA command")
            return
        walk = walk_prd(self.mem, self.st.prd, req.nbytes, self.max_prd_entries)
        if walk.error:
            self._fail(walk.error)
            return
        try:
            if req.to_memory:
                ok = self._disk_to_memory(walk)
            else:
                ok = self._memory_to_disk(walk, req.nbytes)
        except GuestFault as e:  # defensive: the walk checked every region already
            self._fail(str(e))
            return
        if walk.covered < req.nbytes:
            # PRD table shorter than the transfer: Interrupt 0, Active 0, Error 0.
            self.last_error = "PRD table shorter than the transfer"
            self._set_status(active=False, interrupt=False)
        elif ok:
            self._set_status(active=walk.longer, interrupt=True)
        else:
            self._set_status(active=False, interrupt=True)  # refused by the policy

    def _disk_to_memory(self, walk: PrdWalk) -> bool:
        data = self.channel.dma_read_data()
        if data is None:
            return False  # the disk read failed: the channel already ended with ERR
        pos = 0
        for base, n in walk.regions:
            self.mem.write(base, data[pos : pos + n])
            pos += n
        self.channel.dma_finish(ok=walk.covered == len(data))
        return walk.covered == len(data)

    def _memory_to_disk(self, walk: PrdWalk, nbytes: int) -> bool:
        if walk.covered < nbytes:
            self.channel.dma_finish(ok=False)  # no partial commit
            return False
        data = b"".join(self.mem.read(base, n) for base, n in walk.regions)  # private copy, once
        return self.channel.dma_write_data(data)

    def _fail(self, reason: str) -> None:
        self.last_error = reason
        self.channel.dma_finish(ok=False)
        st = self.st
        status = (st.status | STAT_ERROR) & ~STAT_ACTIVE & ~STAT_INTERRUPT
        self.st = replace(st, status=status)

    def _set_status(self, active: bool, interrupt: bool) -> None:
        status = self.st.status & ~(STAT_ACTIVE | STAT_INTERRUPT)
        status |= (STAT_ACTIVE if active else 0) | (STAT_INTERRUPT if interrupt else 0)
        self.st = replace(self.st, status=status)
