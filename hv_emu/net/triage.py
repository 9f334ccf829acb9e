"""The switch's batch path: a batch of frames from the wire decided by array operations, in order.

Models: step 0 of ``docs/PROTOCOL.md`` "Check order" for a whole ``FrameBatch``
(``recvmmsg.py``) at once. ``update_port_ends`` is ``intercept.update_port_end`` over every row
(the update port's common shape: untagged Ethernet II, IPv4 without options and not a fragment,
with a right header checksum, UDP to the update port at one of our addresses, every length
consistent); the update receiver's ``UpdateTriage`` (``updates/batch.py``) then codes each such
frame's payload: dropped under a counter, or a survivor. ``walk`` hands the batch on in order:
the rows the backend's filter refused are skipped (it counted them), a frame that is not of the
common shape goes to ``NetSwitch.from_wire`` unchanged (so guest traffic reaches the card
byte-identical and in order), a survivor to the switch's raw front path
(``take_update_payload``: the receiver's ``take_payload``, the UDP checksum last), and the drops
are counted once per coding with one ``bincount`` (the switch's ``from_wire.for_hypervisor`` and
the receiver's counters, as the front path counts each; none of them needed its UDP checksum,
which the front path asks only of what it takes). After a survivor changed what the codes hang
on (``UpdateTriage.state``) the rest of the batch is coded again; after it took a symbol, its
later copies become ``duplicate``. ``stop`` (the I/O thread's hand-off to the verifier) is asked
after each row handed on, and the walk leaves the rest for the next turn
(``FrameBatch.position``).

Follows: ``intercept.update_port_end`` (the same conditions; ``tests/net/test_batch_path.py``
holds the two, and the whole walk, to the per-frame path), RFC 791 (the header checksum: the
sum of its ten 16-bit words is 0 modulo 0xFFFF).

Leaves out: the capture tap (a switch with one takes the per-frame path) and frames longer than
a slot's first buffer (``recvmmsg.SLOT``; never the update port's common shape: they go to
``from_wire``).

Network controls: every byte of every frame and the batch's make-up. It cannot make a frame
skip a check ``from_wire`` makes, reorder frames to the guest, or change a counter: what is not
certain goes to the per-frame path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from hv_emu.net.headers import ETH_LEN, IPPROTO_UDP, IPV4_LEN, MIN_FRAME, PLAIN_VIHL
from hv_emu.net.recvmmsg import SLOT, FrameBatch

if TYPE_CHECKING:
    from hv_emu.net.switch import NetSwitch

#: Bytes before the UDP payload in the common frame; the payload header's length after them.
PLAIN_HEADERS = 42
#: The common frame's 42 bytes as a numpy record (Ethernet II, IPv4 without options, UDP).
FRAME_DTYPE = np.dtype([
    ("macs", "V12"), ("ethertype", ">u2"), ("vihl", "u1"), ("tos", "u1"), ("total", ">u2"),
    ("ident", ">u2"), ("ff", ">u2"), ("ttl", "u1"), ("proto", "u1"), ("ip_sum", ">u2"),
    ("src", ">u4"), ("dst", ">u4"), ("sport", ">u2"), ("dport", ">u2"), ("ulen", ">u2"),
    ("udp_sum", ">u2"),
])  # fmt: skip
#: ``total`` up to here: the IPv4 header's ten words, summed for its checksum.
_WORDS = np.dtype(">u2")

Codes = npt.NDArray[np.int8]
Ends = npt.NDArray[np.int64]


class UpdateBatch(Protocol):
    """What the walk needs from the update receiver (``updates/batch.py``): ``codes`` of the
    payloads (``head`` bytes of each as an array, the whole payloads for the hashes), ``count``
    of the drops, the ``state`` the codes hang on (what forces a new coding; the symbols taken),
    and the rows a taken symbol turns into ``duplicate`` (``duplicates``)."""

    head: int
    duplicate: int

    def state(self) -> tuple[object, int]: ...
    def codes(self, headers: npt.NDArray[np.uint8], lengths: npt.NDArray[np.int64],
              payloads: memoryview, starts: list[int]) -> Codes: ...  # fmt: skip
    def duplicates(self, rank: int) -> list[int]: ...
    def count(self, codes: Codes) -> None: ...


def update_port_ends(frames: npt.NDArray[np.uint8], lengths: Ends, ours: npt.NDArray[np.uint32],
                     port: int) -> Ends:  # fmt: skip
    """``intercept.update_port_end`` of each row (``frames``: k x ``SLOT`` bytes, ``lengths``
    each frame's length): the end of its IPv4 datagram, or 0 when it is not the common shape."""
    k = len(lengths)
    head = np.ascontiguousarray(frames[:k, :PLAIN_HEADERS])
    f = head.view(FRAME_DTYPE).reshape(k)
    total = f["total"].astype(np.int64)
    end = ETH_LEN + total
    words = head[:, ETH_LEN : ETH_LEN + IPV4_LEN].copy().view(_WORDS)
    residue = words.sum(axis=1, dtype=np.int64) % 0xFFFF
    ok = (
        (lengths >= PLAIN_HEADERS) & (lengths <= SLOT) & (f["ethertype"] == 0x0800)
        & (f["vihl"] == PLAIN_VIHL) & (f["proto"] == IPPROTO_UDP) & (f["dport"] == port)
        & np.isin(f["dst"], ours) & (f["ff"] & 0x3FFF == 0)
        & (f["ulen"].astype(np.int64) == total - IPV4_LEN) & (total >= IPV4_LEN + 8)
        & (end <= lengths) & (lengths <= np.maximum(MIN_FRAME, end)) & (residue == 0)
    )  # fmt: skip
    ends: Ends = np.where(ok, end, 0)
    return ends


#: A row's code when it is not the common shape (or was refused by the backend's filter).
PER_FRAME = -2
SKIPPED = -3


def code_rows(batch: FrameBatch, start: int, port: int, ours: npt.NDArray[np.uint32],
              updates: UpdateBatch) -> tuple[Codes, Ends, npt.NDArray[np.intp]]:  # fmt: skip
    """Codes of rows ``start`` ... ``count`` - 1 (``SKIPPED``, ``PER_FRAME``, or a code of
    ``updates``) and each row's datagram end, both indexed from ``start``, and the rows
    ``updates`` coded (a row's rank there is what ``duplicates`` names)."""
    n = batch.count
    ends = update_port_ends(batch.frames[start:n], batch.lengths[start:n], ours, port)
    codes: Codes = np.full(n - start, PER_FRAME, np.int8)
    kept = batch.keep[start:n]
    # Only rows the backend kept are coded: a filtered copy of a symbol must never be among the
    # later copies a taken symbol turns into duplicates (``UpdateBatch.duplicates``).
    shaped = np.flatnonzero((ends != 0) & kept)
    if len(shaped):
        rows = shaped + start
        headers = np.ascontiguousarray(
            batch.frames[rows, PLAIN_HEADERS : PLAIN_HEADERS + updates.head])
        starts = (rows * SLOT + PLAIN_HEADERS).tolist()
        codes[shaped] = updates.codes(headers, ends[shaped] - PLAIN_HEADERS, batch.flat, starts)
    codes[~kept] = SKIPPED
    return codes, ends, shaped


def walk(switch: NetSwitch, batch: FrameBatch, updates: UpdateBatch, ours: npt.NDArray[np.uint32],
         stop: Callable[[], bool]) -> None:  # fmt: skip
    """Hand rows ``batch.position`` ... on through ``switch`` in order (see the module
    docstring), until the batch is done or ``stop()`` says so after a row handed on. The drops
    are counted once per coding (nothing reads the counters while the walk holds the lock)."""
    port = switch.config.update_port
    while not batch.done:
        start = batch.position
        coded = updates.state()[0]  # before the coding: a change after it is seen below
        codes, ends, shaped = code_rows(batch, start, port, ours, updates)
        done = len(codes)  # rows of ``codes`` handled when this coding ends
        recode = stopped = False
        for i in np.flatnonzero(codes < 0).tolist():
            kind = int(codes[i])  # read now: ``duplicates`` may have changed it
            if kind == SKIPPED or kind >= 0:
                continue
            if kind == PER_FRAME:
                switch.from_wire(batch.frame(start + i))
            else:
                (before, symbols) = updates.state()
                if before != coded:  # changed since the coding (the vCPU's VMCALL installed)
                    done, recode = i, True  # this row and the rest are coded again
                    break
                switch.take_update_payload(batch.frame(start + i), int(ends[i]))
                (after, taken) = updates.state()
                recode = after != before  # what the rest's codes hang on changed
                if taken != symbols and not recode:  # a symbol taken: its later copies
                    rank = int(np.searchsorted(shaped, i))
                    codes[shaped[updates.duplicates(rank)]] = updates.duplicate
            stopped = stop()
            if recode or stopped:
                done = i + 1
                break
        _count(switch, updates, codes[:done])
        batch.position = start + done
        if stopped:
            return  # the rest is coded again on the next call


def _count(switch: NetSwitch, updates: UpdateBatch, codes: Codes) -> None:
    """Count the drops among ``codes`` (a coding's handled rows), as the receiver and the
    switch count each one frame by frame."""
    dropped = int(np.count_nonzero(codes >= 0))
    if dropped:
        updates.count(codes)
        switch.counters["from_wire.for_hypervisor"] += dropped
