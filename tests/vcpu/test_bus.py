"""The port bus: ranges, overlaps, offsets, sizes and the all-ones answer for unknown ports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hv_emu.bus import PortIoBus
from hv_emu.errors import ConfigError


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def io_read(self, offset: int, size: int) -> int:
        self.log.append(("in", offset, size, 0))
        return 0x12345678

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("out", offset, size, value))


def test_devices_see_offsets_and_reads_are_masked_to_the_size() -> None:
    bus, dev = PortIoBus(), Recorder()
    bus.register(0x1F0, 8, dev, "ata")
    assert bus.read(0x1F7, 1) == 0x78
    assert bus.read(0x1F0, 2) == 0x5678
    bus.write(0x1F2, 1, 0x1FF)
    assert dev.log == [("in", 7, 1, 0), ("in", 0, 2, 0), ("out", 2, 1, 0xFF)]


def test_unknown_ports_read_all_ones_and_are_counted() -> None:
    bus = PortIoBus()
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0x80, 2) == 0xFFFF
    assert bus.read(0x80, 4) == 0xFFFFFFFF
    bus.write(0x80, 1, 0)
    assert bus.unknown[("in", 0x80)] == 3
    assert bus.unknown[("out", 0x80)] == 1


@pytest.mark.parametrize(("base", "length"), [(0x1F0, 1), (0x1F7, 2), (0x1E0, 0x20), (0x1F3, 1)])
def test_overlapping_ranges_are_refused(base: int, length: int) -> None:
    bus = PortIoBus()
    bus.register(0x1F0, 8, Recorder(), "ata")
    with pytest.raises(ConfigError, match="overlaps"):
        bus.register(base, length, Recorder(), "other")


def test_adjacent_ranges_are_fine_and_ranges_outside_the_port_space_are_not() -> None:
    bus = PortIoBus()
    bus.register(0x1F0, 8, Recorder(), "ata")
    bus.register(0x1F8, 1, Recorder(), "next")
    bus.register(0x1EF, 1, Recorder(), "before")
    assert [r.name for r in bus.ranges] == ["before", "ata", "next"]
    with pytest.raises(ConfigError):
        bus.register(0xFFFF, 2, Recorder(), "wraps")
    with pytest.raises(ConfigError):
        bus.register(0x100, 0, Recorder(), "empty")


def test_bad_access_size_is_a_bug_not_a_guest_action() -> None:
    with pytest.raises(ValueError):
        PortIoBus().read(0x80, 3)


@given(st.lists(st.tuples(st.integers(0, 0xFFF0), st.integers(1, 16)), max_size=30),
       st.integers(0, 0xFFFF))
def test_find_agrees_with_a_linear_search(ranges: list[tuple[int, int]], port: int) -> None:
    bus = PortIoBus()
    accepted: list[tuple[int, int]] = []
    for i, (base, length) in enumerate(ranges):
        try:
            bus.register(base, length, Recorder(), f"d{i}")
        except ConfigError:
            assert any(base < b + n and b < base + length for b, n in accepted)
        else:
            accepted.append((base, length))
    owner = bus.find(port)
    expected = [b for b, n in accepted if b <= port < b + n]
    assert (owner.base if owner else None) == (expected[0] if expected else None)


def test_unknown_counts_cover_ports_past_the_port_space_too() -> None:
    bus = PortIoBus()
    bus.read(0x10000, 1)
    bus.write(-1, 2, 0)
    bus.read(0xFFFF, 4)
    assert bus.unknown == {("in", 0x10000): 1, ("out", -1): 1, ("in", 0xFFFF): 1}
