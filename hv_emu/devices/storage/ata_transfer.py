"""The data half of the ATA channel: DRQ blocks of PIO, the device half of DMA, inspection.

Models: what moves a command's sectors once ``ata.py`` has decoded it from the task file: the
private buffer of one PIO DRQ block (filled from the disk for a read, from the data port for a
write), the device side of bus-master DMA that ``busmaster.py`` drives (the whole transfer read
or gathered at once), every write handed to the storage observer (the inspection policy) before
the disk sees it and only the verdict's bytes committed, and how a command ends (completion,
ERR/ABRT, the LBA registers on the failing block, INTRQ). ``AtaChannel`` (``ata.py``) is this
class plus the register interface, the command table and resets.

Follows: ATA8-APT (PIO data-in and data-out protocols, the DMA protocol's device side),
BitVisor ``drivers/ata/ata_core.c`` (a hook per completed block, before the disk sees it).

Leaves out: timing (every transfer completes synchronously), partial DMA transfers, device 1.

Guest controls: the data words, through which port views and how many at once (never past the
buffer: ``ata.py`` checks the room), and which commands start a transfer; the observer gets an
immutable copy of each block, so data changed after inspection never reaches the disk.
"""

from __future__ import annotations

from hv_emu.devices.irq import Line
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ata_registers import AtaState, DmaRequest, Phase
from hv_emu.devices.storage.disk import Disk
from hv_emu.devices.storage.observer import (
    StorageObserver,
    StorageRead,
    StorageWrite,
    Transport,
    resolve,
)


class AtaTransfer:
    """The transfer state machine of device 0; ``AtaChannel`` sets the attributes below."""

    disk: Disk
    observer: StorageObserver
    st: AtaState
    host_error: OSError | None
    irq: Line

    @property
    def interrupt_pending(self) -> bool:
        """INTRQ as the wire carries it: a request, not masked by nIEN."""
        return self.st.irq and not self.st.control & r.DC_NIEN

    def _sync_irq(self) -> None:
        self.irq.set(self.interrupt_pending)

    def _slave(self) -> bool:
        return bool(self.st.device & r.DEV_DEV)

    # ------------------------------------------------------------------ PIO data phase
    def _block_sectors(self) -> int:
        cmd = r.COMMANDS[self.st.command]
        return min(self.st.multiple if cmd.multiple else 1, self.st.remaining)

    def _load_read_block(self) -> None:
        st = self.st
        data = self._disk_read(st.lba, self._block_sectors())
        if data is None:
            return
        self.observer.on_read(StorageRead(st.lba, data, "pio", st.command))
        st.phase, st.buffer, st.pos = Phase.PIO_IN, bytearray(data), 0
        st.status, st.irq = r.ST_IDLE | r.ST_DRQ, True

    def _open_write_block(self) -> None:
        st = self.st
        st.phase, st.pos = Phase.PIO_OUT, 0
        st.buffer = bytearray(self._block_sectors() * r.SECTOR_SIZE)
        st.status = r.ST_IDLE | r.ST_DRQ

    def _data_in(self) -> int:
        st = self.st
        if st.phase is not Phase.PIO_IN or self._slave():
            return 0xFFFF
        word = st.buffer[st.pos] | st.buffer[st.pos + 1] << 8
        st.pos += 2
        if st.pos == len(st.buffer):  # the driver has read the whole DRQ block
            sectors = max(1, len(st.buffer) // r.SECTOR_SIZE)
            st.lba, st.remaining = st.lba + sectors, st.remaining - sectors
            if st.remaining > 0:
                self._load_read_block()
            else:
                self._complete(irq=False)
            self._sync_irq()
        return word

    def _data_out(self, word: int) -> None:
        st = self.st
        if st.phase is not Phase.PIO_OUT or self._slave():
            return
        st.buffer[st.pos], st.buffer[st.pos + 1] = word & 0xFF, word >> 8
        st.pos += 2
        if st.pos == len(st.buffer):
            self._write_block_done()

    def _write_block_done(self) -> None:
        st = self.st
        # A whole DRQ block is in the private buffer: inspect it once, then commit or refuse.
        sectors = len(st.buffer) // r.SECTOR_SIZE
        if not self._commit(st.lba, bytes(st.buffer), "pio"):
            self._sync_irq()  # refused: ERR, and the completion interrupt
            return
        st.lba, st.remaining = st.lba + sectors, st.remaining - sectors
        if st.remaining > 0:
            self._open_write_block()
            st.irq = True
        else:
            self._complete()
        self._sync_irq()

    def _commit(self, lba: int, data: bytes, transport: Transport) -> bool:
        """Publish a write, obey the verdict; on refusal end the command with ERR/ABRT."""
        verdict = self.observer.on_write(StorageWrite(lba, data, transport, self.st.command))
        accepted = resolve(verdict, data)
        if accepted is None:
            self._set_lba_regs(lba)
            self._abort()
            return False
        try:
            self.disk.write_sectors(lba, accepted)
        except OSError as e:  # the host's disk failed (full, gone): a write fault to the guest
            self.host_error = e
            self._set_lba_regs(lba)
            self._abort()
            return False
        return True

    def _disk_read(self, lba: int, count: int) -> bytes | None:
        """Read sectors; a host I/O error ends the command with ERR, Error = UNC|ABRT."""
        try:
            return self.disk.read_sectors(lba, count)
        except OSError as e:
            self.host_error = e
            self._set_lba_regs(lba)
            self._abort(r.ER_UNC | r.ER_ABRT)
            return None

    # ------------------------------------------------------------------ DMA (for the bus master)
    def dma_request(self) -> DmaRequest | None:
        st = self.st
        if st.phase is not Phase.DMA:
            return None
        return DmaRequest(st.lba, st.remaining, r.COMMANDS[st.command].op is r.Op.READ, st.command)

    def dma_read_data(self) -> bytes | None:
        """Disk -> private buffer -> observer; the bus master scatters it, then ``dma_finish``.
        ``None``: nothing pending, or the disk read failed and the command already ended."""
        st = self.st
        if st.phase is not Phase.DMA:
            return None
        data = self._disk_read(st.lba, st.remaining)
        if data is None:
            return None
        self.observer.on_read(StorageRead(st.lba, data, "dma", st.command))
        return data

    def dma_write_data(self, data: bytes) -> bool:
        """The gathered transfer: inspect once, commit or refuse, end the command."""
        st = self.st
        if st.phase is not Phase.DMA or len(data) != st.remaining * r.SECTOR_SIZE:
            self.dma_finish(ok=False)
            return False
        if self._commit(st.lba, data, "dma"):
            self._complete()
            return True
        return False

    def dma_finish(self, ok: bool) -> None:
        """End a pending DMA command: success, or ERR/ABRT (bus-master error, short PRD)."""
        if self.st.phase is Phase.DMA:
            if ok:
                self._complete()
            else:
                self._abort()
            self._sync_irq()

    # ------------------------------------------------------------------ endings
    def _drop_transfer(self) -> None:
        st = self.st
        st.phase, st.buffer, st.pos, st.remaining = Phase.IDLE, bytearray(), 0, 0

    def _complete(self, irq: bool = True) -> None:
        self._drop_transfer()
        self.st.status = r.ST_IDLE
        self.st.irq = self.st.irq or irq

    def _abort(self, error: int = r.ER_ABRT) -> None:
        self._drop_transfer()
        self.st.status, self.st.error, self.st.irq = r.ST_IDLE | r.ST_ERR, error, True

    def _set_lba_regs(self, lba: int) -> None:
        cur, prev = self.st.cur, self.st.prev
        cur[r.REG_LBA_LOW], cur[r.REG_LBA_MID], cur[r.REG_LBA_HIGH] = (
            (lba >> s) & 0xFF for s in (0, 8, 16)
        )
        prev[r.REG_LBA_LOW], prev[r.REG_LBA_MID], prev[r.REG_LBA_HIGH] = (
            (lba >> s) & 0xFF for s in (24, 32, 40)
        )
