"""The batch reader (``net/recvmmsg.py``) against real loopback sockets, with ``recvmmsg`` and with
its ``recvfrom`` fallback: every datagram whole (longer than a slot's first buffer too), its
length and source, at most ``slots`` a read, nothing when nothing waits, a pending ICMP error
counted; and ``UdpBackend.read_batch`` filters and counts as ``recv_frames`` does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from guest_tool.assemble import assemble
from hv_emu.net import recvmmsg
from hv_emu.net.backends import UdpBackend
from hv_emu.net.recvmmsg import SLOT, BatchReader
from tests.rigs.processes import ROOT


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield rx, tx
    rx.close()
    tx.close()


def _sent(rx: socket.socket, tx: socket.socket, sizes: list[int]) -> list[bytes]:
    data = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    for d in data:
        tx.sendto(d, rx.getsockname())
    time.sleep(0.05)  # loopback delivers at once; a moment for a loaded machine
    return data


@pytest.mark.parametrize("fallback", [False, True])
def test_a_read_takes_every_waiting_datagram_whole(
    pair: tuple[socket.socket, socket.socket], fallback: bool
) -> None:
    rx, tx = pair
    reader = BatchReader(rx, 8, force_fallback=fallback)
    assert reader.vectored is (not fallback and recvmmsg._RECVMMSG is not None)
    sent = _sent(rx, tx, [0, 1, 60, SLOT - 1, SLOT, SLOT + 1, 9000, 65507])
    batch = reader.read()
    assert batch.count == len(sent) and batch.position == 0 and batch.keep[: batch.count].all()
    assert [batch.frame(i) for i in range(batch.count)] == sent
    assert batch.lengths[: batch.count].tolist() == [len(d) for d in sent]
    assert {batch.source(i) for i in range(batch.count)} == {tx.getsockname()}
    assert not reader.truncated.any()
    assert reader.read().count == 0  # nothing waits: an empty batch, never a block


@pytest.mark.skipif(recvmmsg._RECVMMSG is None, reason="libc has no recvmmsg")
def test_the_next_read_gives_back_what_long_datagrams_touched(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A sender that lands long datagrams in every slot in turn could keep the whole overflow
    mapping resident: the next read releases the pages the last batch touched (they read as
    zeros again, as only released anonymous pages do)."""
    rx, tx = pair
    reader = BatchReader(rx, 4)
    sent = _sent(rx, tx, [10, 9000, 20, 65507])
    batch = reader.read()
    assert [batch.frame(i) for i in range(batch.count)] == sent
    overflow = batch._overflow
    assert overflow is not None
    stride = recvmmsg.OVERFLOW_STRIDE
    assert any(overflow[stride : stride + 9000 - SLOT])  # row 1's rest, in place
    assert reader.read().count == 0
    for row in (1, 3):
        assert not any(overflow[row * stride : (row + 1) * stride])


@pytest.mark.parametrize("fallback", [False, True])
def test_a_read_takes_at_most_its_slots(
    pair: tuple[socket.socket, socket.socket], fallback: bool
) -> None:
    rx, tx = pair
    reader = BatchReader(rx, 16, force_fallback=fallback)
    sent = _sent(rx, tx, [100 + i for i in range(40)])
    got: list[bytes] = []
    counts = []
    for _ in range(4):
        batch = reader.read()
        counts.append(batch.count)
        got += [batch.frame(i) for i in range(batch.count)]
    assert counts == [16, 16, 8, 0]
    assert got == sent


@pytest.mark.parametrize("fallback", [False, True])
def test_a_pending_icmp_error_is_counted_and_skipped(
    pair: tuple[socket.socket, socket.socket], fallback: bool
) -> None:
    rx, _ = pair
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    gone = closed.getsockname()
    closed.close()
    rx.connect(gone)  # only a connected UDP socket is told of ICMP port unreachable
    rx.send(b"to nobody")
    time.sleep(0.05)
    reader = BatchReader(rx, 4, force_fallback=fallback)
    assert reader.read().count == 0
    assert reader.icmp_errors == 1


def test_read_batch_filters_and_counts_as_recv_frames(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The first source becomes the peer; others are ``rx_foreign``; each batch row kept or not
    as ``recv_frames`` would take it."""
    _, tx = pair
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    batched, looped = UdpBackend(("127.0.0.1", 0)), UdpBackend(("127.0.0.1", 0))
    try:
        for backend in (batched, looped):
            for i in range(10):
                (tx if i % 3 == 0 else other if i % 3 == 1 else tx).sendto(
                    bytes([i]) * 80, backend.local_address)
        time.sleep(0.05)
        batch = batched.read_batch()
        kept = [batch.frame(i) for i in np.flatnonzero(batch.keep[: batch.count]).tolist()]
        assert kept == looped.recv_frames(64)
        assert batched.stats == looped.stats
        assert batched.stats["rx_foreign"] == 3 and batched.peer == tx.getsockname()
    finally:
        other.close()
        batched.close()
        looped.close()


@pytest.mark.parametrize("net", [False, True])
def test_numpy_loads_only_for_a_run_with_a_network(tmp_path: Path, net: bool) -> None:
    """Every ``hv-emu run`` imports the machine; only one with ``--net`` pays for numpy (about
    40-70 ms of imports), which the batch path alone uses."""
    guest = tmp_path / "halt.bin"
    guest.write_bytes(assemble("hlt", mode=64, address=0x100000))
    argv = [sys.executable, "-X", "importtime", "-m", "hv_emu", "run", str(guest), "--quiet"]
    if net:
        argv += ["--net", "udp:127.0.0.1:0"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)  # fmt: skip
    names = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:")}  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hv_emu.machine" in names  # the measurement itself works
    assert ("numpy" in names) == net
