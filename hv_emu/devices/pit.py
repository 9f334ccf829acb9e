"""The 8254 programmable interval timer and the PC's port 0x61 (speaker gate and output).

Models: the three 16-bit counters of the PC's PIT on a 1.193182 MHz input clock, counting on
guest time (``clock.py``): the control word (counter select, access LSB/MSB/word, mode,
BCD flag kept), the counter-latch command and the read-back command (count and status
latches), reads and writes of the count in the programmed access mode, modes 0 (interrupt on
terminal count), 2 (rate generator) and 3 (square wave), with modes 1, 4 and 5 counted as mode
0 is. Counter 0's output drives IRQ0 (an edge per period in modes 2 and 3, one at terminal
count in mode 0, sent on the ``Line`` the machine connects). Counter 2's gate is bit 0 of port
0x61 and its output reads back as bit 5 there, enough for the calibration loops of SeaBIOS and
Linux; bit 4 toggles on every read (the refresh bit). Offsets 0-3 are the counter and control
ports (0x40-0x43, ``layout.py``).

Follows: Intel 8254 data sheet (control word, read-back, modes); QEMU ``hw/timer/i8254.c`` and
``i8254_common.c`` (``pit_get_count``, ``pit_get_out``, latch and read/write state machines:
the same answers as QEMU) and ``hw/audio/pcspk.c`` (port 0x61).

Leaves out: counter 1 (DRAM refresh: counts, drives nothing), BCD counting (the flag is kept
and reported, the count is binary), the gate of counter 0 and 1 (always high), a gate held low
pausing mode 0, the speaker's sound. Unlike QEMU's reset state, no counter counts until the
guest (or the firmware) writes a count: a guest that never programs the PIT gets no IRQ0.

Guest controls: every port write and read. The state is a few integers per counter; the next
deadline is computed, never iterated to, so a count of 1 or a clock far ahead costs the same.
"""

from __future__ import annotations

from collections.abc import Callable

from hv_emu.devices.clock import GuestClock
from hv_emu.devices.irq import Line

PIT_HZ = 1_193_182
_NS = 1_000_000_000
# Access modes (control word bits 5:4) and the read/write byte states.
_LSB, _MSB, _WORD0, _WORD1 = 1, 2, 3, 4


def _ticks(ns: int) -> int:
    return ns * PIT_HZ // _NS


def _ns(ticks: int) -> int:
    return -(-ticks * _NS // PIT_HZ)  # the first nanosecond at which ``ticks`` have passed


class Counter:
    """One 8254 counter."""

    def __init__(self, clock: GuestClock, gate: bool) -> None:
        self.clock = clock
        self.gate = gate
        self.mode = 3
        self.bcd = False
        self.rw_mode = _WORD0
        self.read_state = _WORD0
        self.write_state = _WORD0
        self.write_latch = 0
        self.count = 0x10000  # the reload value N (0 written = 65536)
        self.loaded_at: int | None = None  # guest ns at which counting started; None: idle
        self.latched: int | None = None
        self.latch_state = _WORD0
        self.status: int | None = None

    # ------------------------------------------------------------------ time
    def elapsed(self, now: int) -> int:
        return 0 if self.loaded_at is None else _ticks(now - self.loaded_at)

    def value(self, now: int) -> int:
        """The count as the guest reads it now (QEMU ``pit_get_count``)."""
        d, n = self.elapsed(now), self.count
        if self.mode == 2:
            return n - d % n
        if self.mode == 3:
            return (n - (2 * d) % n) & 0xFFFF
        return (n - d) & 0xFFFF

    def out(self, now: int) -> bool:
        """The OUT pin (QEMU ``pit_get_out``)."""
        if self.loaded_at is None:
            return self.mode != 0
        d, n = self.elapsed(now), self.count
        if self.mode == 2:
            return d % n != 0 or d == 0
        if self.mode == 3:
            return d % n < (n + 1) >> 1
        return d >= n

    def next_edge(self, after: int) -> int | None:
        """The first guest ns > ``after`` at which OUT rises (an IRQ edge), or ``None``."""
        if self.loaded_at is None:
            return None
        d, n = self.elapsed(after), self.count
        if self.mode in (2, 3):
            ticks = (d // n + 1) * n
        elif d < n:
            ticks = n
        else:
            return None
        return max(self.loaded_at + _ns(ticks), after + 1)

    def load(self, value: int) -> None:
        self.count = value or 0x10000
        self.loaded_at = self.clock.now()

    # ------------------------------------------------------------------ ports
    def control(self, access: int, mode: int, bcd: bool) -> None:
        self.rw_mode = self.read_state = self.write_state = access
        self.mode = mode if mode < 6 else mode - 4  # 110/111 are modes 2/3
        self.bcd = bcd

    def latch_count(self) -> None:
        if self.latched is None:  # a second latch before the first is read is ignored
            self.latched = self.value(self.clock.now())
            self.latch_state = self.rw_mode

    def latch_status(self) -> None:
        if self.status is None:
            out = self.out(self.clock.now())
            self.status = (out << 7) | (self.rw_mode << 4) | (self.mode << 1) | self.bcd

    def write(self, value: int) -> None:
        state = self.write_state
        if state == _LSB:
            self.load(value)
        elif state == _MSB:
            self.load(value << 8)
        elif state == _WORD0:
            self.write_latch = value
            self.write_state = _WORD1
        else:
            self.load(self.write_latch | (value << 8))
            self.write_state = _WORD0

    def read(self) -> int:
        if self.status is not None:
            status, self.status = self.status, None
            return status
        if self.latched is not None:
            value = self.latched
            if self.latch_state == _MSB:
                self.latched = None
                return (value >> 8) & 0xFF
            if self.latch_state == _WORD0:
                self.latch_state = _WORD1
                return value & 0xFF
            self.latched = None
            return (value >> 8) & 0xFF if self.latch_state == _WORD1 else value & 0xFF
        value = self.value(self.clock.now())
        state = self.read_state
        if state == _MSB:
            return (value >> 8) & 0xFF
        if state == _WORD0:
            self.read_state = _WORD1
            return value & 0xFF
        if state == _WORD1:
            self.read_state = _WORD0
            return (value >> 8) & 0xFF
        return value & 0xFF

    def set_gate(self, level: bool) -> None:
        if level and not self.gate and self.mode in (1, 2, 3, 5) and self.loaded_at is not None:
            self.loaded_at = self.clock.now()  # a rising gate restarts counting
        self.gate = level


class Pit8254:
    """The PIT: a ``PortDevice`` of four ports (counters 0-2, control), IRQ0 on ``irq``."""

    def __init__(self, clock: GuestClock) -> None:
        self.clock = clock
        self.counters = [Counter(clock, True), Counter(clock, True), Counter(clock, False)]
        #: Counter 0's output, as an interrupt request line (the machine connects it to IRQ0).
        self.irq = Line()
        self._fired_until = 0  # guest ns up to which counter 0's edges have been sent
        self.edges = 0  # IRQ0 edges sent so far (statistics)
        #: Counter 0 has been given a count since the machine was built: a timer counted on
        #: guest time (a run report draws such a run on the clock, ``debug/recorder.py``).
        self.armed = False
        #: Called when counter 0 gets a new count (its deadlines change): the machine has the
        #: vCPU look at the timers again.
        self.on_rearm: Callable[[], None] | None = None

    def io_read(self, offset: int, size: int) -> int:
        self.clock.touch()
        if offset == 3:
            return 0  # the control port is write-only (QEMU reads 0)
        return self.counters[offset].read()

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.clock.touch()
        value &= 0xFF
        if offset < 3:
            counter = self.counters[offset]
            counter.write(value)
            if offset == 0 and counter.write_state != _WORD1:  # a whole count was written
                self._fired_until = self.clock.now()
                self.armed = True
                if self.on_rearm is not None:
                    self.on_rearm()
            return
        select = value >> 6
        if select == 3:  # read-back
            for n in range(3):
                if value & (2 << n):
                    if not value & 0x20:
                        self.counters[n].latch_count()
                    if not value & 0x10:
                        self.counters[n].latch_status()
            return
        counter = self.counters[select]
        access = (value >> 4) & 3
        if access == 0:
            counter.latch_count()
        else:
            counter.control(access, (value >> 1) & 7, bool(value & 1))

    # ------------------------------------------------------------------ IRQ0 on guest time
    def next_deadline(self) -> int | None:
        """The guest ns of counter 0's next IRQ edge, or ``None`` when it sends none."""
        return self.counters[0].next_edge(self._fired_until)

    def run_until(self, now: int) -> None:
        """Send the IRQ0 edges due by ``now`` (several missed periods make one edge: the PIC
        latches one request, as on hardware when interrupts were held off)."""
        due = self.next_deadline()
        if due is None or due > now:
            return
        self._fired_until = now
        self.edges += 1
        self.irq.pulse()


class SystemControlPort:
    """Port 0x61 as the PIT sees it: bit 0 counter 2's gate, bit 1 speaker data (kept), bit 4
    the refresh toggle, bit 5 counter 2's output."""

    def __init__(self, pit: Pit8254) -> None:
        self.pit = pit
        self.speaker = False
        self._refresh = 0

    def io_read(self, offset: int, size: int) -> int:
        pit = self.pit
        pit.clock.touch()
        counter = pit.counters[2]
        self._refresh ^= 0x10
        out = counter.out(pit.clock.now())
        return int(counter.gate) | (self.speaker << 1) | self._refresh | (out << 5)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.pit.clock.touch()
        self.pit.counters[2].set_gate(bool(value & 1))
        self.speaker = bool(value & 2)
