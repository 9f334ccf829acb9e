"""The primary ATA channel: one hard disk (device 0) behind the command and control blocks.

Models: a parallel-ATA hard disk in compatibility mode as a driver sees it through its task-file
registers: Status sequencing (BSY during software reset, DRDY, DRQ per data block, ERR with the
Error register), the alternate status, nIEN and SRST in Device Control, LBA28, LBA48 (HOB
registers written twice, read back with Device Control HOB) and CHS, PIO data through the 16-bit
data port (``rep insw`` arrives word by word; ``rep outsw`` word by word, or the rest of a DRQ
block at once through ``command_write_block``), and the device half of bus-master DMA:
a DMA command leaves the channel waiting for ``BusMaster`` (``busmaster.py``), which moves the data.
The register interface and the commands are here; the data half (DRQ blocks, DMA, inspection,
how a command ends) is ``ata_transfer.py``, the base class.

Follows: ATA/ATAPI-8 ACS (commands, IDENTIFY), ATA8-APT (register block, protocols, reset
signature), BitVisor ``drivers/ata/ata_core.c`` for where inspection happens (private buffer, hook
per completed block before the disk sees it). The command table is data in ``ata_registers.py``.

Leaves out:
- INTRQ (``interrupt_pending``: set at each DRQ block of a read and after each block of a write,
  at completion, cleared by reading Status, masked by nIEN) drives the ``irq`` line, which the
  machine connects to IRQ14 of the PIC; a driver may still poll Status with nIEN set.
- Device 1: absent. With DEV=1 selected, Status and Alternate Status read 0 (no device), the Error
  register reads 0, the data port floats (0xFFFF) and commands are ignored; the other registers
  read back their shadow values, as on a one-drive cable.
- Timing: commands complete synchronously, so BSY is only seen while SRST is asserted.
- 8-bit data-port accesses (not part of the PIO protocol): reads give 0xFF and do not advance,
  writes are dropped. 32-bit accesses move two words, low word first.
- Packet, queued, SMART and security commands (ERR/ABRT like any unknown opcode).

Guest controls: every register value, the order of accesses, the command opcode, LBA and count,
the PIO data, and when it resets the device.

Threats (threat -> mitigation):
- unknown or unsupported opcode -> ERR, Error = ABRT, nothing else changes;
- LBA or LBA+count beyond the disk, CHS outside the geometry -> ERR, Error = IDNF|ABRT, checked
  at command time before any data moves;
- count 0 (256 / 65536 sectors) to force huge buffers -> the PIO buffer is one DRQ block
  (<= 16 sectors); a DMA transfer is bounded by the disk check (at most 32 MiB);
- READ/WRITE MULTIPLE without SET MULTIPLE, bad multiple count -> ERR/ABRT;
- changing PIO data after inspection -> the observer gets an immutable copy, only the verdict's
  bytes are committed;
- data-port access outside a data phase -> reads float (0xFFFF), writes are dropped;
- new command or SRST in the middle of a transfer -> the transfer is dropped, partial blocks are
  never committed;
- write refused by the inspection policy -> ERR/ABRT, the LBA registers point at the refused
  block, nothing of it reaches the disk.
- a host I/O error (disk full, image gone) or a read-only image -> ERR (UNC|ABRT for reads, ABRT
  otherwise), the error kept in ``host_error``; never an exception into the vCPU.
"""

from __future__ import annotations

import copy

from hv_emu.devices.irq import Line
from hv_emu.devices.port import BlockPortView, PortView
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ata_registers import AtaState, DmaListener, DmaRequest, Phase
from hv_emu.devices.storage.ata_transfer import AtaTransfer
from hv_emu.devices.storage.disk import Disk
from hv_emu.devices.storage.observer import (
    NullStorageObserver,
    StorageObserver,
)
from hv_emu.memory.guest import GuestMemory

__all__ = ["AtaChannel", "AtaState", "DmaListener", "DmaRequest", "Phase", "PortView"]


class AtaChannel(AtaTransfer):
    """Device 0 of an ATA channel. Register ``command_block`` (8 offsets) and ``control_block``
    (1 offset) on the port bus; give the channel to a ``BusMaster`` for DMA."""

    def __init__(
        self,
        disk: Disk,
        observer: StorageObserver | None = None,
        mem: GuestMemory | None = None,
        *,
        model: str = "HV-EMU HARDDISK",
        serial: str = "HVEMU0000000001",
        firmware: str = "1.0",
    ) -> None:
        self.disk = disk
        self.observer: StorageObserver = observer or NullStorageObserver()
        self.mem = mem  # guest RAM, for the bus master; PIO does not need it
        self.model, self.serial, self.firmware = model, serial, firmware
        self.command_block = BlockPortView(self.command_read, self.command_write,
                                           self.command_write_room, self.command_write_block,
                                           self.command_read_room, self.command_read_block)
        self.control_block = PortView(self.control_read, self.control_write)
        self._dma: DmaListener | None = None
        #: The last host I/O error the guest saw as ERR (for the event log); never raised.
        self.host_error: OSError | None = None
        self.st = AtaState()
        #: INTRQ: the machine connects it to the interrupt controller (IRQ14 on a PC).
        self.irq = Line()
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Power-on (hardware) reset: defaults, device 0 selected, reset signature."""
        self.st = AtaState()
        self._signature()

    def snapshot(self) -> AtaState:
        return copy.deepcopy(self.st)

    def load_snapshot(self, state: AtaState) -> None:
        self.st = copy.deepcopy(state)

    def attach_dma(self, listener: DmaListener) -> None:
        """The bus master asks to hear when a DMA command is waiting for it."""
        self._dma = listener

    # ------------------------------------------------------------------ register access
    def command_read(self, offset: int, size: int) -> int:
        if offset == r.REG_DATA:
            if size == 1:
                return 0xFF
            value = self._data_in()
            return value | (self._data_in() << 16) if size == 4 else value
        value = 0
        for i in range(size):  # wider accesses to byte registers: one register per byte
            value |= self._read_reg(offset + i) << (8 * i)
        self._sync_irq()  # reading Status lowers INTRQ
        return value

    def command_write(self, offset: int, size: int, value: int) -> None:
        if offset == r.REG_DATA:
            if size >= 2:
                self._data_out(value & 0xFFFF)
            if size == 4:
                self._data_out(value >> 16)
            return
        for i in range(size):
            self._write_reg(offset + i, (value >> (8 * i)) & 0xFF)
        self._sync_irq()  # a command may complete at once

    def command_write_room(self, offset: int, size: int) -> int:
        """How many OUTs of ``size`` to ``offset`` the channel takes at once: the rest of the
        current PIO DRQ block for 16- and 32-bit data-port writes, else 0 (one by one)."""
        st = self.st
        if offset != r.REG_DATA or size == 1 or st.phase is not Phase.PIO_OUT or self._slave():
            return 0
        return (len(st.buffer) - st.pos) // size

    def command_write_block(self, offset: int, size: int, data: bytes) -> None:
        """Data-port OUTs taken at once (at most ``command_write_room``): the same as writing
        the words one by one, low word of a dword first, which is their order in ``data``."""
        st = self.st
        if not data or len(data) > len(st.buffer) - st.pos or self.command_write_room(offset,
                                                                                     size) == 0:
            raise ValueError("a data block beyond the room the channel gave")  # a host bug
        st.buffer[st.pos : st.pos + len(data)] = data
        st.pos += len(data)
        if st.pos == len(st.buffer):
            self._write_block_done()

    def command_read_room(self, offset: int, size: int) -> int:
        """How many INs of ``size`` from ``offset`` the channel gives at once: the rest of the
        current PIO DRQ block for 16- and 32-bit data-port reads, else 0 (one by one)."""
        st = self.st
        if offset != r.REG_DATA or size == 1 or st.phase is not Phase.PIO_IN or self._slave():
            return 0
        return (len(st.buffer) - st.pos) // size

    def command_read_block(self, offset: int, size: int, count: int) -> bytes:
        """``count`` data-port INs at once (at most ``command_read_room``): the same bytes and
        the same end of block as reading the words one by one."""
        st, n = self.st, count * size
        if count <= 0 or count > self.command_read_room(offset, size):
            raise ValueError("a data block beyond the room the channel gave")  # a host bug
        data = bytes(st.buffer[st.pos : st.pos + n])
        st.pos += n - 2
        self._data_in()  # the last word through the one path that ends a DRQ block
        return data

    def control_read(self, offset: int, size: int) -> int:
        """Alternate Status: Status without acknowledging INTRQ (drivers poll it)."""
        if offset != r.REG_ALT_STATUS:
            return 0xFF
        return 0 if self._slave() else self.st.status

    def control_write(self, offset: int, size: int, value: int) -> None:
        """Device Control: nIEN, SRST, HOB."""
        if offset != r.REG_DEVICE_CONTROL:
            return
        st, old = self.st, self.st.control
        st.control = value = value & 0xFF
        if value & r.DC_SRST and not old & r.DC_SRST:
            # The driver asserts SRST: the device drops whatever it was doing and goes busy.
            self._drop_transfer()
            st.phase, st.status = Phase.RESET, r.ST_BSY
        elif old & r.DC_SRST and not value & r.DC_SRST:
            # SRST released: diagnostics pass at once, the reset signature appears, DRDY.
            st.phase, st.status, st.error = Phase.IDLE, r.ST_IDLE, r.DIAG_PASSED
            self._signature()
        self._sync_irq()  # nIEN masks or unmasks a pending request

    def _read_reg(self, reg: int) -> int:
        st = self.st
        if reg >= r.COMMAND_BLOCK_LEN:
            return 0xFF
        if reg == r.REG_STATUS:
            if self._slave():
                return 0
            st.irq = False  # reading Status acknowledges the interrupt
            return st.status
        if reg == r.REG_ERROR:
            return 0 if self._slave() else st.error
        if reg == r.REG_DEVICE:
            return st.device
        return st.prev[reg] if st.control & r.DC_HOB else st.cur[reg]

    def _write_reg(self, reg: int, value: int) -> None:
        st = self.st
        if reg >= r.COMMAND_BLOCK_LEN or st.phase is Phase.RESET:
            return  # writes while BSY (SRST) are ignored
        st.control &= ~r.DC_HOB  # any command-block write clears HOB
        if reg == r.REG_DEVICE:
            st.device = value
        elif reg == r.REG_COMMAND:
            if not self._slave():
                self._execute(value)
        else:
            st.prev[reg], st.cur[reg] = st.cur[reg], value

    # ------------------------------------------------------------------ command execution
    def _execute(self, opcode: int) -> None:
        st = self.st
        self._drop_transfer()  # a new command ends any transfer in progress, uncommitted
        st.error, st.command = 0, opcode
        cmd = r.COMMANDS.get(opcode)
        if cmd is None:
            self._abort()
            return
        if cmd.op in (r.Op.READ, r.Op.WRITE, r.Op.VERIFY):
            addr = self._address(cmd.lba48)
            if addr is None:
                self._abort(r.ER_IDNF | r.ER_ABRT)
                return
            lba, count = addr
            if (cmd.multiple and not st.multiple) or (cmd.op is r.Op.WRITE and self.disk.read_only):
                self._abort()  # MULTIPLE before SET MULTIPLE MODE, or a write-protected image
                return
            if cmd.op is r.Op.VERIFY:
                self._complete()
                return
            st.lba, st.remaining = lba, count
            if cmd.proto is r.Proto.DMA:
                # The driver now programs the bus master (or already did) and sets Start.
                st.phase, st.status = Phase.DMA, r.ST_IDLE | r.ST_DRQ
                if self._dma is not None:
                    self._dma.dma_ready()
            elif cmd.proto is r.Proto.PIO_IN:
                self._load_read_block()
            else:
                # The driver waits for DRQ, then writes the first block with ``rep outsw``.
                self._open_write_block()
            return
        self._non_data(cmd)

    def _non_data(self, cmd: r.AtaCommand) -> None:
        st = self.st
        if cmd.op is r.Op.IDENTIFY:
            st.phase, st.remaining, st.lba = Phase.PIO_IN, 1, 0
            st.buffer, st.pos = bytearray(self._identify()), 0
            st.status, st.irq = r.ST_IDLE | r.ST_DRQ, True
        elif cmd.op is r.Op.FLUSH:
            try:
                self.disk.flush()
            except OSError as e:
                self.host_error = e
                self._abort()
                return
            self._complete()
        elif cmd.op is r.Op.SET_MULTIPLE:
            n = st.cur[r.REG_COUNT]
            if n > r.MAX_MULTIPLE or n & (n - 1):
                self._abort()
            else:
                st.multiple = n  # 0 disables multiple mode
                self._complete()
        elif cmd.op is r.Op.SET_FEATURES:
            if r.set_features(st, st.cur[r.REG_FEATURES], st.cur[r.REG_COUNT]):
                self._complete()
            else:
                self._abort()
        elif cmd.op is r.Op.INIT_PARAMS:
            if st.cur[r.REG_COUNT] == 0:
                self._abort()
            else:
                st.sectors_per_track = st.cur[r.REG_COUNT]
                st.heads = (st.device & r.DEV_HEAD_MASK) + 1
                self._complete()
        elif cmd.op is r.Op.CHECK_POWER:
            st.cur[r.REG_COUNT] = 0xFF  # active or idle
            self._complete()
        else:  # power-management commands: nothing to spin down
            self._complete()

    def _identify(self) -> bytes:
        st = self.st
        params = r.IdentifyParams(
            self.disk.sector_count, self.model, self.serial, self.firmware, st.multiple,
            st.write_cache, st.lookahead, st.mwdma_mode, st.udma_mode, st.heads,
            st.sectors_per_track,
        )  # fmt: skip
        return r.build_identify(params)

    def _address(self, lba48: bool) -> tuple[int, int] | None:
        """(LBA, count) read back from the task file at command time (as BitVisor does);
        ``None`` if outside the disk or the CHS geometry."""
        st = self.st
        addr = r.decode_address(st.cur, st.prev, st.device, lba48, st.heads, st.sectors_per_track)
        if addr is None or addr[0] + addr[1] > self.disk.sector_count:
            return None
        return addr

    def _signature(self) -> None:
        """ATA device signature after reset: count 1, LBA 1/0/0, device 0."""
        st = self.st
        st.cur[r.REG_COUNT], st.cur[r.REG_LBA_LOW] = 1, 1
        st.cur[r.REG_LBA_MID] = st.cur[r.REG_LBA_HIGH] = 0
        st.device = 0
