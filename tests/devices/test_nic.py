"""The guest NIC as a device: its registers, transmit and receive paths, bounds and link state,
and a hostile guest's random port I/O (Hypothesis) that never raises and never breaks a bound."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.devices.nic import (
    ETH_HEADER,
    MAX_RX_FRAME,
    MAX_TX_FRAME,
    MIN_FRAME,
    NIC_ID,
    Command,
    Nic,
    Reg,
    Status,
)

MAC = bytes.fromhex("525400123456")


def make_nic(capacity: int = 4) -> tuple[Nic, list[bytes]]:
    sent: list[bytes] = []
    return Nic(MAC, sent.append, rx_capacity=capacity), sent


def write_frame(nic: Nic, frame: bytes, size: int = 1) -> None:
    """What a driver does: the frame through the data port, ``size`` bytes at a time."""
    whole = len(frame) - len(frame) % size
    for i in range(0, whole, size):
        nic.io_write(Reg.DATA, size, int.from_bytes(frame[i : i + size], "little"))
    for byte in frame[whole:]:  # the tail a byte at a time (the bus only has sizes 1, 2, 4)
        nic.io_write(Reg.DATA, 1, byte)


def read_frame(nic: Nic) -> bytes:
    length = nic.io_read(Reg.RX_LEN, 2)
    data = b"".join(nic.io_read(Reg.DATA, 1).to_bytes(1, "little") for _ in range(length))
    nic.io_write(Reg.STATUS, 1, Command.RX_NEXT)
    return data


def status(nic: Nic) -> Status:
    return Status(nic.io_read(Reg.STATUS, 1))


def test_identity_mac_and_power_on_status() -> None:
    nic, _ = make_nic()
    assert nic.io_read(Reg.ID, 4) == NIC_ID
    assert bytes(nic.io_read(Reg.MAC + i, 1) for i in range(6)) == MAC
    assert status(nic) == Status.LINK_UP
    assert nic.io_read(Reg.RX_LEN, 2) == 0


def test_transmit_pads_to_the_minimum_and_empties_the_buffer() -> None:
    nic, sent = make_nic()
    frame = b"\xff" * 6 + MAC + b"\x88\xb5" + b"hello"
    write_frame(nic, frame, size=4)
    assert nic.io_read(Reg.TX_LEN, 2) == len(frame)
    nic.io_write(Reg.STATUS, 1, Command.TRANSMIT)
    assert sent == [frame + bytes(MIN_FRAME - len(frame))]
    assert nic.io_read(Reg.TX_LEN, 2) == 0
    assert not status(nic) & Status.TX_ERROR


def test_full_size_frame_goes_out_whole() -> None:
    nic, sent = make_nic()
    frame = bytes(range(256)) * 5 + bytes(MAX_TX_FRAME - 1280)
    write_frame(nic, frame, size=2)
    nic.io_write(Reg.STATUS, 1, Command.TRANSMIT)
    assert sent == [frame]


def test_runt_and_overflow_are_refused_with_tx_error() -> None:
    nic, sent = make_nic()
    write_frame(nic, b"short")
    nic.io_write(Reg.STATUS, 1, Command.TRANSMIT)
    assert status(nic) & Status.TX_ERROR and nic.counters["tx_runt"] == 1
    write_frame(nic, bytes(MAX_TX_FRAME + 3))
    assert nic.io_read(Reg.TX_LEN, 2) == MAX_TX_FRAME  # the excess never entered the buffer
    nic.io_write(Reg.STATUS, 1, Command.TRANSMIT)
    assert nic.counters["tx_overflow"] == 1 and sent == []
    write_frame(nic, bytes(ETH_HEADER))  # the next good frame clears the error
    nic.io_write(Reg.STATUS, 1, Command.TRANSMIT)
    assert not status(nic) & Status.TX_ERROR and len(sent) == 1


def test_receive_in_order_with_zeros_past_the_end() -> None:
    nic, _ = make_nic()
    first, second = bytes(range(20)), b"\x01" * 64
    assert nic.deliver(first) and nic.deliver(second)
    assert status(nic) & Status.RX_READY
    assert nic.io_read(Reg.RX_LEN, 2) == 20
    assert nic.io_read(Reg.DATA, 4) == int.from_bytes(first[:4], "little")
    for _ in range(4):
        nic.io_read(Reg.DATA, 4)
    assert nic.io_read(Reg.DATA, 4) == 0  # past the end: zeros, never the next frame
    nic.io_write(Reg.STATUS, 1, Command.RX_NEXT)
    assert read_frame(nic) == second
    assert not status(nic) & Status.RX_READY
    nic.io_write(Reg.STATUS, 1, Command.RX_NEXT)
    assert nic.counters["rx_next_empty"] == 1


def test_full_queue_drops_and_counts() -> None:
    nic, _ = make_nic(capacity=2)
    results = [nic.deliver(bytes([n]) * 60) for n in range(5)]
    assert results == [True, True, False, False, False]
    assert nic.io_read(Reg.RX_DROPS, 4) == 3 and nic.counters["rx_queue_full"] == 3
    assert read_frame(nic) == bytes([0]) * 60  # the oldest frames were kept


def test_wrong_sized_frames_from_the_wire_are_dropped() -> None:
    nic, _ = make_nic()
    assert not nic.deliver(bytes(MAX_RX_FRAME + 1))
    assert not nic.deliver(bytes(ETH_HEADER - 1))
    assert nic.deliver(bytes(MAX_RX_FRAME))
    assert nic.counters["rx_bad_length"] == 2 and nic.rx_pending == 1


def test_link_down_flushes_the_queue_and_refuses_frames() -> None:
    nic, _ = make_nic()
    nic.deliver(bytes(60))
    nic.set_link(False)
    assert status(nic) == Status(0) and nic.rx_pending == 0
    assert not nic.deliver(bytes(60))
    assert nic.counters["rx_flushed"] == 1 and nic.counters["rx_link_down"] == 1


def test_reset_command_and_snapshot_round_trip() -> None:
    nic, _ = make_nic()
    write_frame(nic, b"abc")
    nic.deliver(bytes(range(60)))
    nic.io_read(Reg.DATA, 4)
    saved = nic.snapshot()
    nic.io_write(Reg.STATUS, 1, Command.RESET)
    assert nic.io_read(Reg.TX_LEN, 2) == 0
    assert nic.io_read(Reg.DATA, 1) == 0  # the cursor went back to the frame's start
    nic.load_snapshot(saved)
    assert nic.io_read(Reg.TX_LEN, 2) == 3 and nic.io_read(Reg.DATA, 1) == 4


def test_unknown_registers_read_ones_and_ignore_writes() -> None:
    nic, sent = make_nic()
    assert nic.io_read(0x1C, 1) == 0xFF and nic.io_read(0x0E, 2) == 0xFFFF
    nic.io_write(Reg.MAC, 1, 0)
    nic.io_write(Reg.STATUS, 1, 0x80)
    assert nic.mac == MAC and sent == []
    assert nic.counters["write_ignored"] == 1 and nic.counters["command_unknown"] == 1


def test_a_receiving_thread_and_the_guest_never_lose_a_frame() -> None:
    """The I/O thread delivers while the vCPU thread reads: every frame arrives once, in order
    (with the queue never full, no drops)."""
    nic, _ = make_nic(capacity=1000)
    frames = [n.to_bytes(2, "big") * 30 for n in range(500)]

    def feed() -> None:
        for frame in frames:
            assert nic.deliver(frame)

    feeder = threading.Thread(target=feed)
    feeder.start()
    got: list[bytes] = []
    while len(got) < len(frames):
        if status(nic) & Status.RX_READY:
            got.append(read_frame(nic))
    feeder.join()
    assert got == frames


ACCESS = st.tuples(
    st.booleans(),
    st.integers(0, 0x1F),
    st.sampled_from((1, 2, 4)),
    st.integers(0, 0xFFFFFFFF),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ACCESS, max_size=120), st.lists(st.binary(max_size=1600), max_size=8))
def test_hostile_port_io_never_raises_and_keeps_every_bound(
    accesses: list[tuple[bool, int, int, int]], wire: list[bytes]
) -> None:
    nic, sent = make_nic(capacity=3)
    for frame in wire:
        nic.deliver(frame)
    for is_write, offset, size, value in accesses:
        if is_write:
            nic.io_write(offset, size, value & ((1 << (8 * size)) - 1))
        else:
            assert 0 <= nic.io_read(offset, size) < 1 << (8 * size)
        assert nic.io_read(Reg.TX_LEN, 2) <= MAX_TX_FRAME
        assert nic.rx_pending <= 3
    assert all(MIN_FRAME <= len(frame) <= MAX_TX_FRAME for frame in sent)
