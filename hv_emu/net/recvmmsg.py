"""Batched datagram reads: ``recvmmsg(2)`` into preallocated slots, read as numpy arrays.

Models: the receive ring of a paravirtual NIC back end (vhost-net's batches, DPDK's ``rx_burst``):
one system call fills up to ``slots`` preallocated buffers with waiting datagrams, their lengths
and source addresses, so the I/O thread pays the call once per batch and can judge a whole batch
with array operations (``net/triage.py``, ``updates/batch.py``) instead of a Python loop per
datagram. A ``FrameBatch`` is one such batch: ``frames`` (``slots`` x ``SLOT`` bytes, the first
``SLOT`` bytes of each datagram), ``lengths``, ``sources`` (``sockaddr_in``, 16 bytes each), a
``keep`` mask (datagrams the backend's peer filter let in) and a ``position``: the rows before it
have been handled (a batch is consumed in order, possibly over several turns of the I/O thread).
A datagram longer than ``SLOT`` is not cut: each slot has a second buffer for the rest (an
anonymous mapping, touched only by such datagrams), and ``frame(i)`` joins the two. The next
read gives the touched pages back (``madvise(MADV_DONTNEED)``), so however a sender places its
long datagrams, at most one batch's worth of them is resident (the mapping itself is 64 MiB of
address space).

Follows: recvmmsg(2) and recvmsg(2) (Linux: ``struct mmsghdr`` = ``struct msghdr`` + ``msg_len``;
``MSG_DONTWAIT``; an error after some datagrams were received is reported by the next call; a
pending ICMP error fails the call with ``ECONNREFUSED``, as ``recvfrom`` does), ``ctypes`` for the
call (it releases the GIL while the kernel copies).

Leaves out: ``msg_control`` (no timestamps), the ``timeout`` argument (non-blocking reads only),
IPv6 sources. Where libc has no ``recvmmsg`` (or ``force_fallback``), the same batch is filled by
a ``recvfrom`` loop: the same arrays, one call per datagram.

Network controls: every byte, length and source address of what is read; the count is bounded by
``slots``, each datagram by 64 KiB (a longer one is flagged ``MSG_TRUNC`` and counted oversize by
the backend). Nothing is allocated per datagram except the bytes of the rows handed on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import socket

import numpy as np
import numpy.typing as npt

#: Bytes of a slot's first buffer: every frame of the update port fits (1,514 bytes at most).
SLOT = 2048
#: Bytes of a slot in all: one more than the largest UDP payload over IPv4 can be.
DATAGRAM_ROOM = 65536
#: A slot's share of the overflow mapping: whole pages, so each can be given back alone.
OVERFLOW_STRIDE = DATAGRAM_ROOM
#: Datagrams one read takes at most.
SLOTS = 1024
#: The socket's receive buffer the reader asks for (``SO_RCVBUF``; Linux caps the request at
#: ``net.core.rmem_max`` and doubles it: 8 MiB where that is 4 MiB, as here, 416 KiB at the usual
#: 208 KiB): under a flood one read then takes a batch of hundreds (with Linux's default buffer it
#: held about 90), so the batch's fixed cost (some 60 array operations, about 150 µs) is spread
#: over that many datagrams, and a moment's delay of the I/O thread drops nothing. Measured
#: against a 2 MiB request: docs/PERFORMANCE.md, "Issue 11: batches".
RCVBUF = 4 << 20
#: recv flags (Linux values, ``socket`` names both).
MSG_DONTWAIT = socket.MSG_DONTWAIT
MSG_TRUNC = socket.MSG_TRUNC
#: How many pending ICMP errors one read skips before it gives up for this turn.
ICMP_RETRIES = 8

U8 = npt.NDArray[np.uint8]
Lengths = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]  # fmt: skip


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc_recvmmsg() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        fn = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


_RECVMMSG = _libc_recvmmsg()


class FrameBatch:
    """Up to ``slots`` datagrams as arrays (see the module docstring); ``count`` are valid."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self.frames: U8 = np.zeros((slots, SLOT), np.uint8)
        #: ``frames`` as one flat buffer: row i is [i * SLOT, (i + 1) * SLOT).
        self.flat = self.frames.data.cast("B")
        self.sources: U8 = np.zeros((slots, 16), np.uint8)
        self.lengths: Lengths = np.zeros(slots, np.int64)
        self.keep: Mask = np.zeros(slots, np.bool_)
        self.count = 0
        self.position = 0
        self._rest: dict[int, bytes] = {}  # rows longer than SLOT filled by the fallback
        self._overflow: mmap.mmap | None = None

    @property
    def done(self) -> bool:
        """Every row handled."""
        return self.position >= self.count

    def frame(self, i: int) -> bytes:
        """Row ``i``'s whole datagram."""
        n = int(self.lengths[i])
        at = i * SLOT
        head = self.flat[at : at + min(n, SLOT)].tobytes()
        if n <= SLOT:
            return head
        rest = self._rest.get(i)
        if rest is None:
            assert self._overflow is not None  # set whenever recvmmsg filled the batch
            at = i * OVERFLOW_STRIDE
            rest = self._overflow[at : at + n - SLOT]
        return head + rest

    def source(self, i: int) -> tuple[str, int]:
        """Row ``i``'s source address (``sockaddr_in``: port and address big-endian)."""
        raw = self.sources[i].tobytes()
        return socket.inet_ntoa(raw[4:8]), int.from_bytes(raw[2:4], "big")

    def fill(self, frames: list[bytes], sources: list[tuple[str, int]]) -> None:
        """Put ``frames`` (from ``sources``) in the batch as a read would (tests, the fallback)."""
        if len(frames) > self.slots or len(frames) != len(sources):
            raise ValueError("more frames than slots, or not one source per frame")
        self._rest.clear()
        for i, (data, (host, port)) in enumerate(zip(frames, sources, strict=True)):
            self._put(i, data, host, port)
        self.count, self.position = len(frames), 0
        self.keep[: self.count] = True

    def _put(self, i: int, data: bytes, host: str, port: int) -> None:
        n = len(data)
        self.frames[i, : min(n, SLOT)] = np.frombuffer(data[:SLOT], np.uint8)
        self.lengths[i] = n
        if n > SLOT:
            self._rest[i] = data[SLOT:]
        addr = socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big")
        self.sources[i, :8] = np.frombuffer(addr + socket.inet_aton(host), np.uint8)


class BatchReader:
    """Fills a ``FrameBatch`` from a non-blocking UDP socket: ``recvmmsg`` when libc has it,
    else (or with ``force_fallback``) a ``recvfrom`` loop. ``stats`` counts ``rx_icmp_error``."""

    def __init__(self, sock: socket.socket, slots: int = SLOTS, *,
                 force_fallback: bool = False) -> None:  # fmt: skip
        self._sock = sock
        with contextlib.suppress(OSError):  # a smaller buffer only makes smaller batches
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < RCVBUF:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.batch = FrameBatch(slots)
        self.icmp_errors = 0
        self.vectored = _RECVMMSG is not None and not force_fallback
        if self.vectored:
            self._setup()

    def _setup(self) -> None:
        b = self.batch
        room = DATAGRAM_ROOM - SLOT
        # Private, so that pages given back are freed (a shared mapping keeps them in shmem).
        b._overflow = mmap.mmap(-1, b.slots * OVERFLOW_STRIDE,
                                flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # fmt: skip
        over = ctypes.addressof(ctypes.c_char.from_buffer(b._overflow))
        self._iov = (_Iovec * (2 * b.slots))()
        self._msgs = (_Mmsghdr * b.slots)()
        frames, sources = b.frames.ctypes.data, b.sources.ctypes.data
        for i in range(b.slots):
            self._iov[2 * i] = _Iovec(frames + i * SLOT, SLOT)
            self._iov[2 * i + 1] = _Iovec(over + i * OVERFLOW_STRIDE, room)
            hdr = self._msgs[i].msg_hdr
            hdr.msg_name, hdr.msg_namelen = sources + i * 16, 16
            hdr.msg_iov, hdr.msg_iovlen = ctypes.addressof(self._iov[2 * i]), 2
        size = ctypes.sizeof(_Mmsghdr)
        at = _Mmsghdr.msg_len.offset
        raw = np.frombuffer(memoryview(self._msgs).cast("B"), np.uint8)
        self._msg_len = np.ndarray((b.slots,), np.uint32, raw, at, (size,))
        self._flags = np.ndarray((b.slots,), np.int32, raw,
                                 _Msghdr.msg_flags.offset, (size,))  # fmt: skip
        self._namelen = np.ndarray((b.slots,), np.uint32, raw,
                                   _Msghdr.msg_namelen.offset, (size,))  # fmt: skip
        self._truncated: Mask = np.zeros(b.slots, np.bool_)

    def read(self) -> FrameBatch:
        """The datagrams waiting now (never blocks): the batch, ``count`` of them, position 0,
        ``keep`` all True (the backend's filter narrows it). ``truncated`` marks rows longer
        than ``DATAGRAM_ROOM``."""
        b = self.batch
        b._rest.clear()
        self._give_back()
        n = self._read_vectored() if self.vectored else self._read_looped()
        b.count, b.position = n, 0
        b.keep[:n] = True
        return b

    def _give_back(self) -> None:
        """Release the overflow pages the last batch's long datagrams touched (they read as
        zeros until touched again), so a sender cannot keep the whole mapping resident."""
        b = self.batch
        if b._overflow is None or not b.count:
            return
        for i in np.flatnonzero(b.lengths[: b.count] > SLOT).tolist():
            b._overflow.madvise(mmap.MADV_DONTNEED, i * OVERFLOW_STRIDE, OVERFLOW_STRIDE)

    @property
    def truncated(self) -> Mask:
        """Rows of the last read cut at ``DATAGRAM_ROOM`` (``MSG_TRUNC``)."""
        return self._truncated[: self.batch.count]

    def _read_vectored(self) -> int:
        assert _RECVMMSG is not None
        b = self.batch
        for _ in range(ICMP_RETRIES):
            self._namelen[:] = 16
            n = _RECVMMSG(self._sock.fileno(), ctypes.addressof(self._msgs), b.slots,
                          MSG_DONTWAIT, None)  # fmt: skip
            if n >= 0:
                b.lengths[:n] = self._msg_len[:n]
                self._truncated[:n] = (self._flags[:n] & MSG_TRUNC) != 0
                return int(n)
            err = ctypes.get_errno()
            if err == errno.ECONNREFUSED:  # an ICMP error from an earlier send
                self.icmp_errors += 1
                continue
            if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return 0

    def _read_looped(self) -> int:
        b = self.batch
        self._truncated = np.zeros(b.slots, np.bool_)
        n = retries = 0
        while n < b.slots:
            try:
                data, (host, port) = self._sock.recvfrom(DATAGRAM_ROOM)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                self.icmp_errors += 1
                retries += 1
                if retries >= ICMP_RETRIES:
                    break
                continue
            self._truncated[n] = len(data) >= DATAGRAM_ROOM
            b._put(n, data, host, port)
            n += 1
        return n
