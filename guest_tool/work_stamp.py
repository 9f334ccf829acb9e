"""The publisher's work stamp on a MANIFEST, searched on every core.

Models: the one-time proof of work a publisher puts on its MANIFEST (``docs/PROTOCOL.md``,
"Verification budget" and "Work against work"): the last ``packets.WORK_SIZE`` bytes of the
datagram are a nonce, searched until the SHA-256 of the whole datagram starts with at least
``bits`` zero bits (``packets.work_of``), about 2^bits tries. ``stamp`` cuts the nonces into
chunks of ``CHUNK`` and, for ``PARALLEL_BITS`` or more, hands them to one worker process a core
(``cores``); the lowest nonce that carries the work wins, so the result is the one a single core
would find too. The stamp is checked again before it is returned.

Follows: ``docs/PROTOCOL.md`` (the stamp's place and meaning), Python's ``multiprocessing``
("spawn" start method: safe in a process with threads, no state shared but the bytes handed
over; like every spawn, it re-imports the caller's main module, so a script calling ``stamp``
at ``PARALLEL_BITS`` or more keeps its work under ``if __name__ == "__main__"``, as
``guest-tool`` and ``python -m guest_tool`` do).

Leaves out: GPUs and native code (a forger may have them: ``docs/PROTOCOL.md`` says what more
compute buys), resuming a search.

Network controls: nothing here; the user controls the datagram (already signed) and the bits.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os

from hv_emu.errors import ConfigError
from hv_emu.updates import packets

#: Nonces a worker tries per task: 2^16, about 40 ms of Python, small next to a 2^24 search.
CHUNK = 1 << 16
#: From this many bits on, ``stamp`` searches on every core; below, starting the workers costs
#: more than the search (2^18 tries are about 0.17 s on one core).
PARALLEL_BITS = 20
#: The nonces searched at most: 2^40 (the nonce field holds 2^64).
NONCE_LIMIT = 1 << 40


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def search_chunk(task: tuple[bytes, int, int]) -> int | None:
    """The lowest nonce of chunk ``index`` that gives ``body`` + nonce at least ``want`` zero
    bits, or None. ``task`` is (body, want, index); a worker process runs this."""
    body, want, index = task
    prefix = hashlib.sha256(body)
    for nonce in range(index * CHUNK, (index + 1) * CHUNK):
        h = prefix.copy()
        h.update(nonce.to_bytes(packets.WORK_SIZE, "big"))
        if packets.work_of(h.digest()) >= want:
            return nonce
    return None


def _search(body: bytes, want: int, workers: int) -> int:
    """The lowest nonce that carries ``want`` bits: chunk after chunk, on ``workers`` processes
    (rounds of ``workers`` x 4 chunks, read in order) when more than one."""
    chunks = NONCE_LIMIT // CHUNK
    if workers <= 1:
        for index in range(chunks):
            found = search_chunk((body, want, index))
            if found is not None:
                return found
        raise ConfigError("no work stamp found")  # pragma: no cover - 2^40 tries
    per_round = workers * 4
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for first in range(0, chunks, per_round):
            tasks = [(body, want, i) for i in range(first, min(first + per_round, chunks))]
            for found in pool.imap(search_chunk, tasks):
                if found is not None:
                    pool.terminate()
                    return found
    raise ConfigError("no work stamp found")  # pragma: no cover - 2^40 tries


def stamp(datagram: bytes, bits: int | None = None, *, workers: int | None = None) -> bytes:
    """``datagram`` (a MANIFEST whose last ``WORK_SIZE`` bytes are the work stamp) with a stamp
    that gives it at least ``bits`` (default ``packets.WORK_BITS``, the least a receiver admits)
    leading zero bits of SHA-256 (``packets.work_of``): about 2^bits tries, on ``workers``
    processes (default: every core from ``PARALLEL_BITS`` on, else one). ``ConfigError`` if the
    stamp found does not carry the work (checked again here)."""
    want = max(packets.WORK_BITS if bits is None else bits, packets.WORK_BITS)
    if workers is None:
        workers = cores() if want >= PARALLEL_BITS else 1
    body = datagram[:-packets.WORK_SIZE]
    stamped = body + _search(body, want, workers).to_bytes(packets.WORK_SIZE, "big")
    if packets.work_of(packets.digest(stamped)) < want:
        raise ConfigError("the work stamp found does not carry the work asked for")
    return stamped
