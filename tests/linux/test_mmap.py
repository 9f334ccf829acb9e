"""The mmap arena's books (hv_emu/linux/mmap.py), against a set of pages (Hypothesis)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.linux.mmap import PAGE, MemoryMap
from hv_emu.linux.numbers import Errno
from hv_emu.linux.refusals import SyscallError

START, PAGES = 0x7F00_0000_0000, 64
END = START + PAGES * PAGE


def test_find_takes_the_lowest_gap_and_release_makes_room_again() -> None:
    books = MemoryMap(START, END)
    a = books.find(2 * PAGE)
    books.take(a, 2 * PAGE)
    b = books.find(PAGE)
    books.take(b, PAGE)
    assert (a, b) == (START, START + 2 * PAGE)
    books.release(a, PAGE)
    assert books.find(PAGE) == START and books.find(2 * PAGE) == START + 3 * PAGE
    assert books.ranges == [(START + PAGE, START + 3 * PAGE)]
    books.take(START, PAGE)  # touching ranges merge
    assert books.ranges == [(START, START + 3 * PAGE)]


def test_refusals() -> None:
    books = MemoryMap(START, END)
    with pytest.raises(SyscallError) as refused:
        books.find(PAGES * PAGE + PAGE)
    assert refused.value.errno == Errno.ENOMEM
    with pytest.raises(SyscallError):
        books.take(START - PAGE, 2 * PAGE)  # outside the arena
    books.release(0, 1 << 47)  # outside the arena too: nothing happens
    assert books.ranges == [] and not books.overlaps(START, PAGE)


OPS = st.lists(st.tuples(st.sampled_from(["find", "take", "release"]),
                         st.integers(-4, PAGES + 4), st.integers(1, 12)), max_size=40)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_the_books_agree_with_a_set_of_pages(ops: list[tuple[str, int, int]]) -> None:
    books, used = MemoryMap(START, END), set[int]()
    for op, page, count in ops:
        start, size = START + page * PAGE, count * PAGE
        pages = set(range(page, page + count))
        inside = page >= 0 and page + count <= PAGES
        assert books.overlaps(start, size) == bool(pages & used)
        if op == "find":
            try:
                at = books.find(size)
            except SyscallError:
                assert not any(set(range(p, p + count)).isdisjoint(used)
                               for p in range(PAGES - count + 1))  # fmt: skip
                continue
            first = (at - START) // PAGE
            assert set(range(first, first + count)).isdisjoint(used) and first + count <= PAGES
            assert all(not set(range(p, p + count)).isdisjoint(used) for p in range(first))
        elif op == "take":
            if not inside:
                with pytest.raises(SyscallError):
                    books.take(start, size)
                continue
            books.take(start, size)
            used |= pages
        else:
            books.release(start, size)
            used -= pages
        assert books.used == len(used) * PAGE
        ranges = books.ranges
        assert all(e1 < s2 for (_, e1), (s2, _) in itertools.pairwise(ranges))
        assert {(a - START) // PAGE + i for a, e in ranges for i in range((e - a) // PAGE)} == used
