"""The update receiver's batch triage: a whole batch of update datagrams judged by array operations.

Models: the front path's checks (``front.py``: ``docs/PROTOCOL.md`` "Check order", steps 1-11
and 23-29) for every datagram of a batch at once, on the numpy view of each payload's first 36
bytes (``net/recvmmsg.py``, ``net/triage.py``): the common header's stateless checks,
``stale``, ``no_session``; a MANIFEST's work stamp (step 11); a SYMBOL of a live session's
count, duplicate bit, page, length and FEC Payload ID (steps 24-28, ``Session.take_symbol_at``'s
order) and its commitment (step 29). ``np.select`` picks the first check that fails, in the
table's order, as ``parse_packet`` raises the first; the two hashes are one SHA-256 each, in
one pass over the rows that reach them. Each datagram gets a code: the index of the counter it
is dropped under (``REASONS``), or ``SURVIVOR`` for what the front path must take one by one (a
HASHPAGE of a live session, a stamped MANIFEST, a SYMBOL whose commitment matched), which
checks it again from the start. ``count`` adds a batch's drops to the receiver's counters
(``datagrams`` and one counter per reason, one ``bincount``), exactly what ``take_payload``
adds for each of them.

Follows: ``docs/PROTOCOL.md`` ("Common header", "Check order", step 0 and its batch path);
``front.py``, ``prefilter.py`` (step 11), ``packets.parse_packet`` and
``Session.take_symbol_at`` (the same checks, in the same order); ``tests/net/
test_batch_path.py`` holds the batch to the per-frame path on arbitrary, mutated and mixed
batches.

Leaves out: a MANIFEST's checks after its work stamp and a HASHPAGE's after ``no_session`` (the
pool, the page stream: survivors, few). The codes hang on the receiver's state (``state``):
when a survivor changes it (an install, a session closing, a hash page becoming known) the
caller codes the rest of the batch again; when it takes a symbol, ``duplicates`` names the
later copies it turns into ``duplicate``.

Network controls: every byte of the datagrams. It cannot drop a datagram ``take_payload`` would
take, nor count it under another reason: the codes are its checks in its order (tested), and
whatever is not certain is a survivor.
"""

from __future__ import annotations

from hashlib import sha256
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from hv_emu.updates.packets import (
    FEC_PAYLOAD_ID_SIZE,
    HASH_SIZE,
    HASHES_PER_PAGE,
    HEADER_LEN,
    MAGIC,
    MAX_DATAGRAM,
    PROTO_VERSION,
    PacketType,
    has_work,
)

if TYPE_CHECKING:
    from hv_emu.updates.receiver import UpdateReceiver
    from hv_emu.updates.session import Session

#: The counters a batch drops under, in the check order (a code is an index here).
REASONS = ("truncated", "oversize", "bad_magic", "bad_version", "bad_type", "bad_flags",
           "bad_reserved", "length_mismatch", "index_oob", "stale", "no_session", "no_work",
           "count_mismatch", "duplicate", "no_page_yet", "bad_len", "bad_fec_id",
           "hash_mismatch")  # fmt: skip
#: The code of a datagram the front path judges one by one.
SURVIVOR = -1
#: Bytes of each payload ``codes`` reads: the common header and a SYMBOL's FEC Payload ID.
HEAD = HEADER_LEN + FEC_PAYLOAD_ID_SIZE
#: The common header as a numpy record (``packets.HEADER_FIELDS``, big-endian, 32 bytes), and
#: the FEC Payload ID after it.
HEADER_DTYPE = np.dtype([
    ("magic", ">u4"), ("version", "u1"), ("type", "u1"), ("flags", ">u2"), ("uid", ">u4"),
    ("dbv", ">u8"), ("index", ">u4"), ("count", ">u4"), ("plen", ">u2"), ("reserved", ">u2"),
    ("fec_id", ">u4"),
])  # fmt: skip
_MAGIC = int.from_bytes(MAGIC, "big")
_U64_END = 1 << 64
_SYMBOL, _MANIFEST = PacketType.SYMBOL.value, PacketType.MANIFEST.value
_CODE = {reason: code for code, reason in enumerate(REASONS)}
_NO_SESSION, _NO_WORK, _DUPLICATE = _CODE["no_session"], _CODE["no_work"], _CODE["duplicate"]
_HASH_MISMATCH = _CODE["hash_mismatch"]
#: Codes a SYMBOL's earlier copy, once taken, turns into ``duplicate`` (steps 26-29 come after
#: step 25; step 24, ``count_mismatch``, before it).
_BEHIND_DUPLICATE = [_CODE[r] for r in ("no_page_yet", "bad_len", "bad_fec_id", "hash_mismatch")]

Codes = npt.NDArray[np.int8]


class UpdateTriage:
    """``rx``'s batch triage (see the module docstring): ``codes``, ``duplicates``, ``count``,
    ``state``."""

    #: Bytes of each payload ``codes`` reads.
    head = HEAD
    #: The code ``duplicates`` turns rows into.
    duplicate = _DUPLICATE

    def __init__(self, rx: UpdateReceiver) -> None:
        self.rx = rx
        self._h: npt.NDArray[np.void] = np.zeros(0, HEADER_DTYPE)  # the last coding's headers
        self._codes: Codes = np.zeros(0, np.int8)  # and its codes

    def state(self) -> tuple[tuple[int, list[int]], int]:
        """What the codes depend on and a survivor can change: first, what forces the rest of a
        batch to be coded again: the installed version (an install makes more datagrams stale),
        the live sessions and the hash pages each still misses (a SYMBOL is ``no_page_yet``
        until its page is known; sessions open only in ``poll`` or ``finish_checks``, never
        while a batch is walked, and one closing changes the list); second, the symbols taken,
        after which ``duplicates`` says which rows changed."""
        sessions = self.rx.sessions.values()
        return ((self.rx.service.installed_version, [s.missing_pages for s in sessions]),
                sum(s.symbols for s in sessions))  # fmt: skip

    def codes(self, headers: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64],
              payloads: memoryview, starts: list[int]) -> Codes:  # fmt: skip
        """One code per payload: ``headers`` holds each payload's first ``HEAD`` bytes (k x
        ``HEAD``, contiguous; bytes past a short payload's end are ignored), ``lengths`` its
        length, ``payloads[starts[i] : starts[i] + lengths[i]]`` the whole payload (hashed
        for steps 11 and 29)."""
        h = headers.view(HEADER_DTYPE).reshape(len(lengths))
        start = self.rx.service.acceptable_versions.start
        stale = h["dbv"] < start if start < _U64_END else np.ones(len(h), np.bool_)
        ptype = h["type"]
        conditions = [
            lengths < HEADER_LEN, lengths > MAX_DATAGRAM, h["magic"] != _MAGIC,
            h["version"] != PROTO_VERSION, (ptype < _MANIFEST) | (ptype > _SYMBOL),
            h["flags"] != 0, h["reserved"] != 0,
            h["plen"].astype(np.int64) + HEADER_LEN != lengths, h["index"] >= h["count"], stale,
        ]  # fmt: skip
        codes: Codes = np.select(conditions, list(range(len(conditions))), SURVIVOR).astype(
            np.int8)
        live = codes == SURVIVOR
        size = lengths.tolist()
        rows = np.flatnonzero(live & (ptype == _MANIFEST)).tolist()
        if rows:  # step 11: the work stamp, one SHA-256 each (``packets.digest``)
            codes[rows] = [SURVIVOR if has_work(sha256(payloads[starts[r] : starts[r] + size[r]])
                                                .digest()) else _NO_WORK for r in rows]  # fmt: skip
        orphan = live & (ptype != _MANIFEST)
        for key, session in self.rx.sessions.items():
            mine = live & (h["uid"] == key[0]) & (h["dbv"] == key[1]) if key[1] < _U64_END else (
                np.zeros(len(h), np.bool_))  # fmt: skip
            orphan &= ~mine
            rows = np.flatnonzero(mine & (ptype == _SYMBOL)).tolist()
            if rows:
                codes[rows] = _symbol_codes(session, h[rows], lengths[rows] - HEADER_LEN,
                                            payloads, [starts[r] for r in rows])  # fmt: skip
        codes[orphan] = _NO_SESSION
        self._h, self._codes = h, codes
        return codes

    def duplicates(self, rank: int) -> list[int]:
        """After the survivor at ``rank`` of the last coding was taken as a symbol: the later
        rows of the same session and index whose codes it turns into ``duplicate`` (their own
        codes updated too)."""
        h, codes = self._h, self._codes
        mine = h[rank]
        same = np.flatnonzero((h["index"] == mine["index"]) & (h["uid"] == mine["uid"])
                              & (h["dbv"] == mine["dbv"]) & np.isin(codes, _BEHIND_DUPLICATE))
        rows = [r for r in same.tolist() if r > rank]  # fmt: skip
        codes[rows] = _DUPLICATE
        return rows

    def count(self, codes: Codes) -> None:
        """Count the drops among ``codes`` (the others are not counted here) as ``take_payload``
        counts each: ``datagrams`` and the reason."""
        dropped = codes[codes >= 0]
        if not len(dropped):
            return
        counters = self.rx.counters
        counters["datagrams"] += len(dropped)
        for code, n in enumerate(np.bincount(dropped, minlength=len(REASONS)).tolist()):
            if n:
                counters[REASONS[code]] += n


def _symbol_codes(session: Session, h: npt.NDArray[np.void], plen: npt.NDArray[np.int64],
                  payloads: memoryview, starts: list[int]) -> Codes:  # fmt: skip
    """Steps 24-29 of SYMBOLs for ``session`` (``Session.take_symbol_at``'s checks up to the
    hash, in its order), ``SURVIVOR`` for those that pass."""
    m = session.manifest
    index = h["index"].astype(np.int64)
    counted = h["count"] == m.symbol_count
    safe = np.where(counted, index, 0)  # every index below N: inside the bitmap and the pages
    have = np.frombuffer(session.have, np.uint8)
    duplicate = (have[safe >> 3] >> (safe & 7)) & 1 == 1
    known = np.array([p is not None for p in session.pages], np.bool_)
    fec_id = ((safe % m.block_count) << 24) | (safe // m.block_count)
    conditions = [~counted, duplicate, ~known[safe // HASHES_PER_PAGE],
                  plen != FEC_PAYLOAD_ID_SIZE + m.symbol_size,
                  h["fec_id"].astype(np.int64) != fec_id]  # fmt: skip
    first = _CODE["count_mismatch"]
    codes: Codes = np.select(conditions, list(range(first, first + len(conditions))),
                             SURVIVOR).astype(np.int8)  # fmt: skip
    rows = np.flatnonzero(codes == SURVIVOR).tolist()
    if rows:  # step 29: the commitment, one SHA-256 each (``packets.commitment``)
        n, pages, idx = FEC_PAYLOAD_ID_SIZE + m.symbol_size, session.pages, index.tolist()
        at = [(idx[r] % HASHES_PER_PAGE) * HASH_SIZE for r in rows]
        codes[rows] = [
            SURVIVOR if sha256(payloads[starts[r] + HEADER_LEN : starts[r] + HEADER_LEN + n])
            .digest()[:HASH_SIZE] == pages[idx[r] // HASHES_PER_PAGE][a : a + HASH_SIZE]
            else _HASH_MISMATCH for r, a in zip(rows, at, strict=True)
        ]  # fmt: skip
    return codes
