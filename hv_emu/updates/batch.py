"""The update receiver's batch triage: a whole batch of update datagrams judged by array operations.

Models: steps 1-10 and 23 of ``docs/PROTOCOL.md`` "Check order" (the common header's stateless
checks, ``stale``, ``no_session``) for every datagram of a batch at once, on the numpy view of the
batch's first 32 payload bytes (``net/recvmmsg.py``, ``net/triage.py``). Each datagram gets a
code: the index of the counter it is dropped under (``REASONS``, in the check order: ``np.select``
picks the first check that fails, as ``packets.parse_packet`` raises the first), or ``SURVIVOR``
for what the per-datagram front path must judge (a MANIFEST that is not stale, a HASHPAGE or
SYMBOL of a live session). ``count`` adds the drops to the receiver's counters (``datagrams`` and
one counter per reason, one ``bincount`` for the batch), exactly what ``front.take_payload``
would have added for each of them; survivors go to ``take_payload`` one by one, which checks
them again from the start (so a survivor judged on an older state is judged right).

Follows: ``docs/PROTOCOL.md`` ("Common header", "Check order", step 0 and steps 1-10, 23);
``front.py`` and ``packets.parse_packet`` (the same checks, in the same order);
``tests/updates/test_batch_triage.py`` holds the codes to ``take_payload``'s counters on
arbitrary and mutated headers.

Leaves out: every check after step 10 but ``no_session``: those need a hash, the session's
pages or the candidate pool, and stay with the front path. The state a batch was judged on is
``state()`` (the installed version's successor and the live sessions' keys): while a survivor
changes it, the caller judges the rest of the batch again (``net/triage.py``).

Network controls: every byte of the headers. It cannot drop a datagram ``take_payload`` would take,
nor count it under another reason: the codes are its checks in its order (tested), and whatever
is not certain is a survivor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from hv_emu.updates.packets import HEADER_LEN, MAGIC, MAX_DATAGRAM, PROTO_VERSION, PacketType

if TYPE_CHECKING:
    from hv_emu.updates.receiver import UpdateReceiver

#: The counters a batch drops under, in the check order (a code is an index here).
REASONS = ("truncated", "oversize", "bad_magic", "bad_version", "bad_type", "bad_flags",
           "bad_reserved", "length_mismatch", "index_oob", "stale", "no_session")  # fmt: skip
#: The code of a datagram the front path judges one by one.
SURVIVOR = -1
#: The common header as a numpy record (``packets.HEADER_FIELDS``, big-endian, 32 bytes).
HEADER_DTYPE = np.dtype([
    ("magic", ">u4"), ("version", "u1"), ("type", "u1"), ("flags", ">u2"), ("uid", ">u4"),
    ("dbv", ">u8"), ("index", ">u4"), ("count", ">u4"), ("plen", ">u2"), ("reserved", ">u2"),
])  # fmt: skip
_MAGIC = int.from_bytes(MAGIC, "big")
_STALE, _NO_SESSION = REASONS.index("stale"), REASONS.index("no_session")
_U64_END = 1 << 64

Codes = npt.NDArray[np.int8]


class UpdateTriage:
    """``rx``'s batch triage (see the module docstring): ``codes``, ``count``, ``state``."""

    def __init__(self, rx: UpdateReceiver) -> None:
        self.rx = rx

    def state(self) -> tuple[int, tuple[tuple[int, int], ...]]:
        """What the stateful codes (``stale``, ``no_session``) depend on."""
        return self.rx.service.acceptable_versions.start, tuple(self.rx.sessions)

    def codes(self, headers: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64]) -> Codes:
        """One code per payload: ``headers`` holds each payload's first 32 bytes (k x 32,
        contiguous; bytes past a short payload's end are ignored), ``lengths`` its length."""
        h = headers.view(HEADER_DTYPE).reshape(len(lengths))
        start = self.rx.service.acceptable_versions.start
        stale = h["dbv"] < start if start < _U64_END else np.ones(len(h), np.bool_)
        live = np.zeros(len(h), np.bool_)
        for uid, dbv in self.rx.sessions:
            if dbv < _U64_END:
                live |= (h["uid"] == uid) & (h["dbv"] == dbv)
        manifest = h["type"] == PacketType.MANIFEST.value
        conditions = [
            lengths < HEADER_LEN, lengths > MAX_DATAGRAM, h["magic"] != _MAGIC,
            h["version"] != PROTO_VERSION,
            (h["type"] < PacketType.MANIFEST.value) | (h["type"] > PacketType.SYMBOL.value),
            h["flags"] != 0, h["reserved"] != 0, h["plen"].astype(np.int64) + HEADER_LEN != lengths,
            h["index"] >= h["count"], stale, ~manifest & ~live,
        ]  # fmt: skip
        choices = list(range(len(REASONS)))
        codes: Codes = np.select(conditions, choices, SURVIVOR).astype(np.int8)
        return codes

    def count(self, codes: Codes) -> None:
        """Count the drops among ``codes`` (survivors are not counted here) as ``take_payload``
        counts each: ``datagrams`` and the reason."""
        dropped = codes[codes >= 0]
        if not len(dropped):
            return
        counters = self.rx.counters
        counters["datagrams"] += len(dropped)
        for code, n in enumerate(np.bincount(dropped, minlength=len(REASONS)).tolist()):
            if n:
                counters[REASONS[code]] += n
