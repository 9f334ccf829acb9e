"""The failure memory (``updates/failure_memory.py``) against a plain model of the same CLOCK
rule: same members after any sequence of adds and lookups, at loads that force long probe runs
and wrap-around, so the index's backward-shift deletion is exercised; and its footprint."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.updates.failure_memory import BAD_KEY_SIZE, BadManifests


class ClockModel:
    """The eviction rule alone, in lists: a ring in insertion order, a mark per entry, a hand."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.ring, self.used, self.hand = capacity, [], [], 0

    def lookup(self, key: bytes) -> bool:
        if key not in self.ring:
            return False
        self.used[self.ring.index(key)] = True
        return True

    def add(self, key: bytes) -> None:
        if self.lookup(key):
            return
        if len(self.ring) < self.capacity:
            self.ring.append(key)
            self.used.append(False)
            return
        while self.used[self.hand]:
            self.used[self.hand] = False
            self.hand = (self.hand + 1) % self.capacity
        self.ring[self.hand], self.used[self.hand] = key, False
        self.hand = (self.hand + 1) % self.capacity


KEYS = [bytes([i]) * BAD_KEY_SIZE + bytes(16) for i in range(40)]


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.lists(st.tuples(st.booleans(), st.integers(0, 39)), max_size=200))
def test_the_memory_keeps_exactly_what_the_clock_rule_keeps(
    capacity: int, operations: list[tuple[bool, int]]
) -> None:
    memory, model = BadManifests(capacity), ClockModel(capacity)
    for is_add, which in operations:
        key = KEYS[which]
        if is_add:
            memory.add(key)
            model.add(key[:BAD_KEY_SIZE])
        else:
            assert (key in memory) == model.lookup(key[:BAD_KEY_SIZE])
    assert len(memory) == len(model.ring)
    members = {k for k in KEYS if any(k[:BAD_KEY_SIZE] == m for m in model.ring)}
    for key in KEYS:  # read the marks out of both before comparing: lookups set them alike
        assert (key in memory) == (key in members)


def test_a_large_memory_forgets_the_oldest_and_keeps_what_is_replayed() -> None:
    rng = random.Random(7)
    memory = BadManifests(50_000)
    keys = [rng.randbytes(32) for _ in range(60_000)]
    for key in keys[:50_000]:
        memory.add(key)
    assert all(key in memory for key in keys[:1000])  # replayed: marked
    for key in keys[50_000:]:
        memory.add(key)  # 10,000 evictions: the unmarked oldest go first
    assert all(key in memory for key in keys[:1000])
    assert not any(key in memory for key in keys[1000:11_000])
    assert all(key in memory for key in keys[11_000:])
    assert len(memory) == 50_000


def test_bad_input_is_refused_or_absent() -> None:
    memory = BadManifests(4)
    assert memory.memory() == 0 and KEYS[0] not in memory  # nothing held before a failure
    memory.add(KEYS[0])
    assert memory.memory() == BadManifests.footprint(4) and KEYS[0] in memory
    assert b"short" not in memory and 42 not in memory
    with pytest.raises(ValueError):
        memory.add(b"short")
    with pytest.raises(ValueError):
        BadManifests(0)


def test_the_default_holds_six_times_the_old_entries_in_less_room() -> None:
    """196,608 entries in 4.4 MB, where the ``OrderedDict`` held 32,768 in 4.7 MB."""
    assert BadManifests.footprint(196_608) == 4 * 262_144 + 17 * 196_608 + 2048 < 32_768 * 144
