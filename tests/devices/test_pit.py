"""The 8254 on virtual guest time: modes 0, 2 and 3, latch and read-back, access modes, IRQ0
edges, and counter 2 behind port 0x61 as calibration loops use it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.devices.clock import IO_NS, GuestClock
from hv_emu.devices.pit import PIT_HZ, Pit8254, SystemControlPort

CONTROL = 3


def ns_for(ticks: int) -> int:
    return ticks * 1_000_000_000 // PIT_HZ + 1


def program(pit: Pit8254, counter: int, mode: int, count: int) -> None:
    pit.io_write(CONTROL, 1, (counter << 6) | (3 << 4) | (mode << 1))
    pit.io_write(counter, 1, count & 0xFF)
    pit.io_write(counter, 1, count >> 8)


def read_latched(pit: Pit8254, counter: int) -> int:
    pit.io_write(CONTROL, 1, counter << 6)  # counter latch command
    low = pit.io_read(counter, 1)
    return low | pit.io_read(counter, 1) << 8


def test_nothing_counts_until_a_count_is_written() -> None:
    pit = Pit8254(GuestClock())
    assert pit.next_deadline() is None
    pit.clock.advance(10**9)
    pit.run_until(pit.clock.now())
    assert pit.edges == 0


def test_armed_says_counter_0_was_given_a_whole_count_and_stays_set() -> None:
    """What a run report keys its time axis on (debug/recorder.py): counter 2 (the speaker's)
    and half a count do not arm; a whole count to counter 0 does, for the rest of the run."""
    pit = Pit8254(GuestClock())
    program(pit, 2, 3, 0x1000)
    assert not pit.armed
    pit.io_write(CONTROL, 1, (3 << 4) | (2 << 1))  # counter 0, LSB then MSB, mode 2
    pit.io_write(0, 1, 0x00)
    assert not pit.armed  # the LSB alone: no count yet
    pit.io_write(0, 1, 0x10)
    assert pit.armed and pit.next_deadline() is not None
    pit.io_write(CONTROL, 1, (3 << 4) | (0 << 1))  # a new control word stops counter 0
    assert pit.armed


def test_mode_2_counts_down_and_sends_one_edge_per_period() -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    edges: list[bool] = []
    pit.irq.connect(edges.append)
    program(pit, 0, 2, 1193)  # 1 kHz
    start = clock.now()
    clock.skip_to(start + ns_for(100))
    assert read_latched(pit, 0) in range(1193 - 101, 1193 - 99)
    deadline = pit.next_deadline()
    assert deadline is not None
    assert ns_for(1193) - 2 <= deadline - start <= ns_for(1193) + 1
    for _ in range(5):
        due = pit.next_deadline()
        assert due is not None
        clock.skip_to(due)
        pit.run_until(clock.now())
    assert pit.edges == 5
    assert edges.count(True) == 5 and edges.count(False) == 5
    assert 5 * 1193 <= (clock.now() - start) * PIT_HZ // 10**9 <= 5 * 1193 + 10


def test_mode_3_reads_decrement_by_two_and_out_is_a_square_wave() -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    program(pit, 0, 3, 1000)
    start = clock.now()
    clock.skip_to(start + ns_for(100))
    assert 1000 - 2 * 103 <= read_latched(pit, 0) <= 1000 - 2 * 100
    counter = pit.counters[0]
    assert counter.out(start + ns_for(499))
    assert not counter.out(start + ns_for(501))


def test_mode_0_fires_once_and_out_stays_high() -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    program(pit, 0, 0, 500)
    due = pit.next_deadline()
    assert due is not None
    clock.skip_to(due)
    pit.run_until(clock.now())
    assert pit.edges == 1 and pit.next_deadline() is None
    assert pit.counters[0].out(clock.now())
    assert read_latched(pit, 0) > 0xF000  # the count wraps on after zero


def test_lsb_only_msb_only_and_the_second_latch_is_ignored() -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    pit.io_write(CONTROL, 1, 0b00_01_010_0)  # counter 0, LSB only, mode 2
    pit.io_write(0, 1, 0x80)
    assert pit.counters[0].count == 0x80
    pit.io_write(CONTROL, 1, 0b00_10_010_0)  # MSB only
    pit.io_write(0, 1, 0x12)
    assert pit.counters[0].count == 0x1200
    pit.io_write(CONTROL, 1, 0x00)
    first = pit.counters[0].latched
    clock.advance(10**6)
    pit.io_write(CONTROL, 1, 0x00)  # ignored: the first latch is unread
    assert pit.counters[0].latched == first
    assert pit.io_read(0, 1) == (first or 0) >> 8  # MSB-only access reads the high byte


def test_read_back_latches_status_then_count() -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    program(pit, 2, 0, 0x0800)
    pit.io_write(CONTROL, 1, 0b11_00_100_0)  # read-back: count and status of counter 2
    status = pit.io_read(2, 1)
    assert status & 0x3F == (3 << 4) | (0 << 1)
    assert not status & 0x80  # OUT low until terminal count in mode 0
    low, high = pit.io_read(2, 1), pit.io_read(2, 1)
    assert 0x0800 - 5 <= low | high << 8 <= 0x0800


def test_port_61_gates_counter_2_and_shows_its_output_for_a_calibration_loop() -> None:
    """SeaBIOS's calibration: gate on, counter 2 mode 0 with 0x800, spin on bit 5."""
    clock = GuestClock()
    pit = Pit8254(clock)
    port = SystemControlPort(pit)
    port.io_write(0, 1, (port.io_read(0, 1) & ~2) | 1)
    pit.io_write(CONTROL, 1, 0xB0)
    pit.io_write(2, 1, 0x00)
    pit.io_write(2, 1, 0x08)
    polls = 0
    while not port.io_read(0, 1) & 0x20:
        polls += 1
        assert polls < 10_000
    # Each poll is one I/O cycle of guest time: 0x800 ticks at 1.193 MHz is about 1716 µs.
    assert 0x800 * 10**9 // PIT_HZ // IO_NS - 5 <= polls <= 0x800 * 10**9 // PIT_HZ // IO_NS + 5
    refresh = {port.io_read(0, 1) & 0x10 for _ in range(2)}
    assert refresh == {0, 0x10}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 255), st.booleans(),
                          st.integers(0, 10**8)), max_size=50))  # fmt: skip
def test_any_sequence_reads_bytes_and_deadlines_move_forward(
    ops: list[tuple[int, int, bool, int]],
) -> None:
    clock = GuestClock()
    pit = Pit8254(clock)
    for offset, value, read, wait in ops:
        if read:
            assert 0 <= pit.io_read(offset, 1) <= 0xFF
        else:
            pit.io_write(offset, 1, value)
        clock.advance(wait)
        due = pit.next_deadline()
        if due is not None:
            assert due > 0
            pit.run_until(clock.now())
            after = pit.next_deadline()
            assert after is None or after > clock.now() or after >= due
