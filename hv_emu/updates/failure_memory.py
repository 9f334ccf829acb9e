"""The receiver's memory of manifests that failed: 128-bit fingerprints in a fixed, compact table.

Models: the set a receiver consults before it spends a signature check on a MANIFEST it has
already refused (``known_bad_manifest``: a hash and a lookup instead of a verification). Each
failure is kept as the first ``BAD_KEY_SIZE`` bytes of the datagram's SHA-256 in a ring of
``capacity`` entries (two 64-bit halves and a "used" byte: 17 bytes an entry), found through an
open-addressing index of 4-byte ring references (linear probing, at most three quarters full).
Everything is allocated once, at its full size (``footprint``), at the first failure: 4.4 MB for
the default 196,608 entries, where an ``OrderedDict`` of ``bytes`` held 32,768 in 4.7 MB (144
bytes each).
A full ring evicts by the CLOCK rule (second chance): the hand passes over an entry looked up
since it last passed, clearing its mark, and evicts the first unmarked one, so the oldest
failure goes first and one replayed often stays remembered, as with least-recently-used.

Follows: docs/PROTOCOL.md ("Admission": the failure memory and its arithmetic); linear probing
with deletion by backward shift (Knuth, TAOCP vol. 3, 6.4, Algorithm R); CLOCK page replacement.

Leaves out: growing (the capacity is the configuration's); forgetting by age (only by room).

Network controls: the fingerprints, through the bytes of the manifests it sends, which must
fail a signature check to be remembered at all. Slots come from Python's per-process keyed
``hash`` of the key, so a sender cannot aim fingerprints at one run of the index; every probe
stops at an empty slot (a quarter of them always are), and an eviction passes each entry at
most twice.
"""

from __future__ import annotations

from array import array

#: Bytes of a manifest's SHA-256 kept (a 128-bit key: nobody finds a second preimage of a
#: genuine manifest's key to get it refused).
BAD_KEY_SIZE = 16
#: The ring's bytes an entry: two 8-byte halves of the key and the CLOCK mark.
_ENTRY = 17
_REF = array("I").itemsize  # 4: a ring reference (+ 1) in the index, 0 for an empty slot
#: The containers' and the object's own headers (1,113 bytes measured with ``tracemalloc``,
#: CPython 3.11, 64-bit), rounded up.
_HEADERS = 2048


def _slots_for(capacity: int) -> int:
    """Index slots for ``capacity`` entries: a power of two, at most three quarters used."""
    slots = 8
    while slots * 3 < capacity * 4:
        slots *= 2
    return slots


class BadManifests:
    """Fingerprints (SHA-256) of manifests that failed; a full memory forgets by CLOCK."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"failure memory of {capacity} entries")
        self.capacity = capacity
        slots = _slots_for(capacity)
        self._mask = slots - 1
        # Allocated whole at the first failure (a receiver that never meets one holds nothing).
        self._index = array("I")  # ring position + 1; 0: empty
        self._high, self._low = array("Q"), array("Q")
        self._used = bytearray()
        self._count = 0
        self._hand = 0  # CLOCK's hand: the oldest entry once the ring is full

    @staticmethod
    def footprint(capacity: int) -> int:
        """Bytes a memory of ``capacity`` entries holds (allocated at once, whatever arrives)."""
        return _REF * _slots_for(capacity) + _ENTRY * capacity + _HEADERS

    def memory(self) -> int:
        """Bytes held: nothing before the first failure, ``footprint`` from then on."""
        return self.footprint(self.capacity) if self._used else 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, fingerprint: object) -> bool:
        """A hit counts as a use: a failure replayed often stays remembered."""
        if not isinstance(fingerprint, bytes) or len(fingerprint) < BAD_KEY_SIZE or not self._used:
            return False
        _slot, at = self._find(fingerprint[:BAD_KEY_SIZE])
        if at < 0:
            return False
        self._used[at] = 1
        return True

    def add(self, fingerprint: bytes) -> None:
        """Remember ``fingerprint`` (at least ``BAD_KEY_SIZE`` bytes), evicting if full."""
        key = fingerprint[:BAD_KEY_SIZE]
        if len(key) < BAD_KEY_SIZE:
            raise ValueError(f"a fingerprint of {len(key)} bytes")
        if not self._used:
            self._index = array("I", [0]) * (self._mask + 1)  # sized exactly: no slack
            self._high = array("Q", [0]) * self.capacity
            self._low = array("Q", [0]) * self.capacity
            self._used = bytearray(self.capacity)
        slot, at = self._find(key)
        if at >= 0:
            self._used[at] = 1
            return
        if self._count < self.capacity:
            at = self._count
            self._count += 1
        else:
            at = self._evict()
            slot, _ = self._find(key)  # the eviction may have shifted the probe run
        self._high[at] = int.from_bytes(key[:8], "big")
        self._low[at] = int.from_bytes(key[8:], "big")
        self._used[at] = 0
        self._index[slot] = at + 1

    # ------------------------------------------------------------------ the index
    def _find(self, key: bytes) -> tuple[int, int]:
        """(slot, ring position) of ``key``; (the empty slot its probe ended at, -1) if absent."""
        high, low = int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big")
        index, mask = self._index, self._mask
        slot = hash(key) & mask
        while ref := index[slot]:
            if self._low[ref - 1] == low and self._high[ref - 1] == high:
                return slot, ref - 1
            slot = (slot + 1) & mask
        return slot, -1

    def _key(self, at: int) -> bytes:
        return self._high[at].to_bytes(8, "big") + self._low[at].to_bytes(8, "big")

    def _evict(self) -> int:
        """Free the ring position CLOCK's hand settles on (the index forgets it) and return it."""
        while True:
            at = self._hand
            self._hand = (at + 1) % self.capacity
            if self._used[at]:
                self._used[at] = 0  # a second chance
                continue
            slot, found = self._find(self._key(at))
            assert found == at, "the index lost a ring entry"
            self._delete(slot)
            return at

    def _delete(self, hole: int) -> None:
        """Empty ``hole`` and shift back the entries after it whose probe run crosses it."""
        index, mask = self._index, self._mask
        index[hole] = 0
        slot = (hole + 1) & mask
        while ref := index[slot]:
            home = hash(self._key(ref - 1)) & mask
            # The entry may move into the hole unless its home lies cyclically in (hole, slot].
            stays = hole < home <= slot if hole < slot else (home > hole or home <= slot)
            if not stays:
                index[hole], index[slot] = ref, 0
                hole = slot
            slot = (slot + 1) & mask
