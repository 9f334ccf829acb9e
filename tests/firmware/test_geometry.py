"""The CHS geometry int 13h reports: QEMU's physical guess and SeaBIOS's logical translation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hv_emu.firmware import geometry
from hv_emu.firmware.geometry import Chs

MIB_SECTORS = 2048


def test_the_worked_examples_of_the_docs() -> None:
    assert geometry.physical(10 * MIB_SECTORS) == Chs(20, 16, 63)
    assert geometry.logical(10 * MIB_SECTORS) == Chs(20, 16, 63)
    assert geometry.physical(1 * MIB_SECTORS) == Chs(2, 16, 63)  # at least 2 cylinders
    assert geometry.physical(600 * MIB_SECTORS) == Chs(1219, 16, 63)
    assert geometry.logical(600 * MIB_SECTORS) == Chs(609, 32, 63)
    assert geometry.logical(20 * 1024 * MIB_SECTORS) == Chs(1024, 255, 63)


@given(st.integers(1, 2**40))
def test_the_logical_geometry_is_a_bios_geometry_inside_the_disk(total: int) -> None:
    geo = geometry.logical(total)
    assert geo.sectors == 63 and geo.heads in (16, 32, 64, 128, 255)
    assert 2 <= geo.cylinders <= 1024
    if total >= 2 * 16 * 63:
        assert geo.capacity <= total


@given(st.integers(0, 1100), st.integers(0, 300), st.integers(0, 70))
def test_chs_to_lba_is_the_standard_formula_or_none(c: int, h: int, s: int) -> None:
    geo = Chs(1024, 255, 63)
    lba = geo.lba(c, h, s)
    if c < 1024 and h < 255 and 1 <= s <= 63:
        assert lba == (c * 255 + h) * 63 + s - 1
    else:
        assert lba is None
