"""The guest's network card: hv-emu's own small, polled, port-I/O Ethernet NIC ("hvnic").

Models: the guest side of a network card. The guest fills a transmit buffer through a data port
and says TRANSMIT; the frame goes to a callback (the hypervisor's switch). Frames from the wire are
put in a bounded receive queue (by the hypervisor's I/O thread); the guest sees the length of the
frame at the head, reads its bytes through the data port and says RX_NEXT to move on. No
descriptors in guest memory: the guest polls STATUS, as it polls the ATA status, or waits for the
``irq`` line, which is high while a received frame waits (RX_READY) and which the machine connects
to the PIC input ``layout.IRQ_NIC`` names.

Why a model of our own and not an NE2000 (DP8390): the NE2000's paged register file, its receive
ring in card memory with boundary/current pointers and its remote-DMA engine would double the
device and the driver and teach nothing about interception, which happens in the switch behind the
card. This card keeps the three things every NIC has (a transmit path, a receive queue that drops
when full, a link bit) and nothing else; docs/DEVICES.md documents it, ``asm/programs/nic64.s``
drives it.

Follows: Ethernet II frames without FCS (IEEE 802.3 clause 3; QEMU hands NICs frames the same way),
the 60-byte minimum with transmit padding as real NICs pad (e.g. the RTL8139's auto-pad), 1514
bytes of maximum untagged frame and 1518 received with an 802.1Q tag.

Leaves out: an interrupt mask register (mask the line at the PIC); the line follows RX_READY on
the vCPU's thread only (``sync_irq``: at the guest's port accesses and at each VM entry), so a
frame that arrives while the guest runs raises it at the next VM entry; PCI discovery (the card
sits at a fixed port base, as ISA cards did), multicast filtering and promiscuous mode (every
frame the switch forwards is queued), checksum offload, statistics registers beyond the drop
count, more than one frame in flight on transmit.

Guest controls: every register access (offset, size 1/2/4, value) and so the bytes and length of
each transmitted frame, and when it pops received frames. The network controls the received frames
(the switch has already taken the hypervisor's own). Thread safety: the receive queue is filled
from the I/O thread and read from the vCPU thread, so it is guarded by a lock; the transmit
callback is called with no lock held. Threats:

| Threat                                          | Mitigation                                     |
|-------------------------------------------------|------------------------------------------------|
| Guest writes more than a frame to TX_DATA       | bytes past 1514 counted, TRANSMIT refused      |
| Guest transmits a runt (< 14 bytes)             | refused with TX_ERROR, counted                 |
| Network floods the guest                        | queue of ``rx_capacity`` frames, drops counted |
| Oversized frame from the wire                   | dropped before queueing, counted               |
| Guest reads past the end of a frame             | reads zeros, never another frame's bytes       |
| Unknown offsets, odd sizes                      | reads all ones, writes ignored (counted)       |
| Frames queued before the link went down         | flushed when the link goes down                |
"""

from __future__ import annotations

import collections
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.devices.irq import Line

#: What a read of ID returns: "hNIC" in little-endian ASCII, so a driver can tell the card is there.
NIC_ID = 0x43494E68
#: The smallest frame on the wire without FCS; shorter transmits are padded with zeros to it.
MIN_FRAME = 60
#: An Ethernet II header: destination, source, EtherType.
ETH_HEADER = 14
#: The largest untagged frame without FCS (1500-byte payload): the transmit buffer's size.
MAX_TX_FRAME = 1514
#: The largest frame the card receives: untagged maximum plus an 802.1Q tag.
MAX_RX_FRAME = 1518
#: Frames the receive queue holds by default (about 48 KiB of full-size frames).
DEFAULT_RX_CAPACITY = 32
_ONES = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF}


class Reg(enum.IntEnum):
    """Register offsets from the card's port base (docs/DEVICES.md has the table)."""

    ID = 0x00  # R, 4 bytes: NIC_ID
    STATUS = 0x04  # R: Status bits / W: Command
    RX_LEN = 0x06  # R, 2 bytes: length of the frame at the head of the queue, 0 when empty
    DATA = 0x08  # R: next bytes of the head frame / W: append to the transmit buffer (1, 2, 4)
    TX_LEN = 0x0C  # R, 2 bytes: bytes in the transmit buffer
    MAC = 0x10  # R, 6 bytes: the card's MAC address (0x10..0x15)
    RX_DROPS = 0x18  # R, 4 bytes: frames dropped because the queue was full (wraps at 2**32)


class Status(enum.IntFlag):
    """STATUS bits."""

    RX_READY = 0x01  # a received frame is at the head of the queue
    LINK_UP = 0x02  # the link is up (the hypervisor takes it down on detection)
    TX_ERROR = 0x04  # the last TRANSMIT was refused (runt or overflow); cleared by the next one


class Command(enum.IntEnum):
    """Values written to STATUS (the command register); any other value is ignored and counted."""

    TRANSMIT = 0x01  # send the transmit buffer as one frame and empty it
    RX_NEXT = 0x02  # drop the frame at the head of the queue (the guest has read it)
    RESET = 0x04  # empty both buffers, clear TX_ERROR (the queue and link are kept)


FrameSink = Callable[[bytes], None]


@dataclass
class NicState:
    """Everything the guest can see of the card, for ``snapshot``/``load_snapshot``."""

    tx: bytearray
    tx_overflow: int
    tx_error: bool
    rx: list[bytes]
    rx_cursor: int
    rx_drops: int
    link_up: bool


class Nic:
    """A ``PortDevice``: the registers above, transmit to ``transmit``, receive by ``deliver``."""

    def __init__(
        self, mac: bytes, transmit: FrameSink, *, rx_capacity: int = DEFAULT_RX_CAPACITY
    ) -> None:
        if len(mac) != 6:
            raise ValueError(f"a MAC is 6 bytes, not {len(mac)}")
        if rx_capacity < 1:
            raise ValueError("the receive queue must hold at least one frame")
        self.mac = bytes(mac)
        self._transmit = transmit
        self.rx_capacity = rx_capacity
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()
        #: RX_READY as an interrupt request line (level; the machine connects it to the PIC).
        self.irq = Line()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Power-on: empty buffers, link up, counters kept (they belong to the hypervisor)."""
        with self._lock:
            self._tx = bytearray()
            self._tx_overflow = 0  # bytes the guest wrote past MAX_TX_FRAME since the last send
            self._tx_error = False
            self._rx: collections.deque[bytes] = collections.deque()
            self._rx_cursor = 0  # next byte of the head frame the guest will read
            self._rx_drops = 0
            self._link_up = True

    def snapshot(self) -> NicState:
        with self._lock:
            return NicState(
                bytearray(self._tx), self._tx_overflow, self._tx_error,
                list(self._rx), self._rx_cursor, self._rx_drops, self._link_up,
            )  # fmt: skip

    def load_snapshot(self, state: NicState) -> None:
        with self._lock:
            self._tx = bytearray(state.tx)
            self._tx_overflow = state.tx_overflow
            self._tx_error = state.tx_error
            self._rx = collections.deque(state.rx)
            self._rx_cursor = state.rx_cursor
            self._rx_drops = state.rx_drops
            self._link_up = state.link_up

    # ------------------------------------------------------------------ the host side
    def deliver(self, frame: bytes) -> bool:
        """Queue a frame from the wire for the guest (any thread); False if it was dropped."""
        with self._lock:  # the counters too: the vCPU thread updates them as well
            if len(frame) > MAX_RX_FRAME or len(frame) < ETH_HEADER:
                self.counters["rx_bad_length"] += 1
                return False
            if not self._link_up:
                self.counters["rx_link_down"] += 1
                return False
            if len(self._rx) >= self.rx_capacity:
                self._rx_drops = (self._rx_drops + 1) & 0xFFFFFFFF
                self.counters["rx_queue_full"] += 1
                return False
            self._rx.append(bytes(frame))
            self.counters["rx_queued"] += 1
        return True

    def set_link(self, up: bool) -> None:
        """Raise or drop the link. Dropping it flushes the receive queue: a guest cut off from
        the network must not read frames that arrived before the cut."""
        with self._lock:
            self._link_up = up
            if not up:
                self.counters["rx_flushed"] += len(self._rx)
                self._rx.clear()
                self._rx_cursor = 0

    @property
    def link_up(self) -> bool:
        return self._link_up

    def sync_irq(self) -> None:
        """Drive ``irq`` from RX_READY (call on the vCPU's thread only)."""
        self.irq.set(self.rx_pending > 0)

    @property
    def rx_pending(self) -> int:
        """Frames waiting in the receive queue."""
        with self._lock:
            return len(self._rx)

    # ------------------------------------------------------------------ port access
    def io_read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == Reg.DATA:
                return self._read_data(size)
            value = 0
            for i in range(size):
                value |= self._read_byte(offset + i) << (8 * i)
            return value

    def _read_data(self, size: int) -> int:
        """The next ``size`` bytes of the head frame, little-endian; zeros past its end."""
        if not self._rx:
            self.counters["rx_read_empty"] += 1
            return 0
        head = self._rx[0]
        chunk = head[self._rx_cursor : self._rx_cursor + size]
        self._rx_cursor = min(self._rx_cursor + size, len(head))
        return int.from_bytes(chunk, "little")

    def _read_byte(self, offset: int) -> int:
        """One byte of the register file (multi-byte registers are read byte by byte)."""
        head_len = len(self._rx[0]) if self._rx else 0
        registers = {
            Reg.ID: (NIC_ID, 4),
            Reg.STATUS: (self._status(), 2),
            Reg.RX_LEN: (head_len, 2),
            Reg.TX_LEN: (len(self._tx), 2),
            Reg.RX_DROPS: (self._rx_drops, 4),
        }
        for reg, (value, width) in registers.items():
            if reg <= offset < reg + width:
                return (value >> (8 * (offset - reg))) & 0xFF
        if Reg.MAC <= offset < Reg.MAC + 6:
            return self.mac[offset - Reg.MAC]
        self.counters["read_unknown"] += 1
        return 0xFF

    def _status(self) -> int:
        status = Status(0)
        if self._rx:
            status |= Status.RX_READY
        if self._link_up:
            status |= Status.LINK_UP
        if self._tx_error:
            status |= Status.TX_ERROR
        return int(status)

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= _ONES.get(size, 0)
        if offset == Reg.DATA:
            data = value.to_bytes(size, "little")
            with self._lock:
                if len(self._tx) + size <= MAX_TX_FRAME:
                    self._tx += data  # the common case, once per OUT of a frame: keep it short
                else:
                    self._append_tx(data)
        elif offset == Reg.STATUS:
            self._command(value & 0xFF)
            self.sync_irq()
        else:
            with self._lock:
                self.counters["write_ignored"] += 1

    def _append_tx(self, data: bytes) -> None:
        """The buffer is (nearly) full: keep what fits, count the rest as overflow."""
        room = MAX_TX_FRAME - len(self._tx)
        self._tx += data[:room]
        self._tx_overflow += max(len(data) - room, 0)

    def _command(self, command: int) -> None:
        frame = None
        with self._lock:
            if command == Command.TRANSMIT:
                frame = self._take_tx_frame()
            elif command == Command.RX_NEXT:
                if self._rx:
                    self._rx.popleft()
                    self._rx_cursor = 0
                else:
                    self.counters["rx_next_empty"] += 1
            elif command == Command.RESET:
                self._tx.clear()
                self._tx_overflow = 0
                self._tx_error = False
                self._rx_cursor = 0
            else:
                self.counters["command_unknown"] += 1
            if frame is not None:
                self.counters["tx_frames"] += 1
        if frame is not None:  # outside the lock: the switch may call back into deliver()
            self._transmit(frame)

    def _take_tx_frame(self) -> bytes | None:
        """The transmit buffer as a frame (padded to MIN_FRAME), or None with TX_ERROR set."""
        tx, overflow = bytes(self._tx), self._tx_overflow
        self._tx.clear()
        self._tx_overflow = 0
        self._tx_error = overflow > 0 or len(tx) < ETH_HEADER
        if overflow:
            self.counters["tx_overflow"] += 1
            return None
        if len(tx) < ETH_HEADER:
            self.counters["tx_runt"] += 1
            return None
        return tx.ljust(MIN_FRAME, b"\0")
