"""Hostile guests: random port I/O at the storage devices never raises, and the disk only ever
changes by completed writes the storage observer accepted."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hv_emu import layout
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.observer import (
    COMMIT,
    REFUSE,
    StorageRead,
    StorageWrite,
    Verdict,
    resolve,
)
from tests.rigs.devices import ATA, BM, CTRL, Rig

SECTORS = 48
MEM = 64 * 1024
PORTS = (
    [ATA + i for i in range(8)]
    + [CTRL]
    + [BM + i for i in range(16)]
    + [layout.PORT_PCI_CONFIG_ADDRESS + i for i in range(4)]
    + [layout.PORT_PCI_CONFIG_DATA + i for i in range(4)]
)
OPCODES = [*sorted(r.COMMANDS), 0x00, 0x08, 0xA0, 0xA1, 0xFF]


class ModelObserver:
    """Answers with scripted verdicts and keeps the disk the guest *should* have."""

    def __init__(self, verdicts: list[int]) -> None:
        self.verdicts = verdicts or [0]
        self.i = 0
        self.model: dict[int, bytes] = {}

    def on_write(self, w: StorageWrite) -> Verdict:
        assert len(w.data) % 512 == 0 and w.data
        assert w.lba >= 0 and w.lba + len(w.data) // 512 <= SECTORS
        choice = self.verdicts[self.i % len(self.verdicts)]
        self.i += 1
        verdict = (
            COMMIT,
            REFUSE,
            Verdict.commit_modified(bytes(len(w.data))),
            Verdict.commit_modified(b"bad length"),
        )[choice]
        data = resolve(verdict, w.data)
        if data is not None:
            for k in range(len(data) // 512):
                self.model[w.lba + k] = data[k * 512 : (k + 1) * 512]
        return verdict

    def on_read(self, rd: StorageRead) -> None:
        assert rd.lba >= 0 and rd.lba + len(rd.data) // 512 <= SECTORS


sizes = st.sampled_from([1, 2, 4])
raw_out = st.tuples(st.just("out"), st.sampled_from(PORTS), sizes, st.integers(0, 0xFFFFFFFF))
raw_in = st.tuples(st.just("in"), st.sampled_from(PORTS), sizes, st.just(0))
command = st.tuples(
    st.just("cmd"),
    st.sampled_from(OPCODES),
    st.integers(0, SECTORS + 4),  # LBA, sometimes out of range
    st.integers(0, 20),  # count (0 = 256/65536)
)
burst = st.tuples(st.just("burst"), st.integers(1, 600), sizes, st.integers(0, 0xFFFF))
prd = st.tuples(
    st.just("prd"),
    st.integers(0, MEM // 8 + 4),  # table location in 8-byte units, sometimes outside RAM
    st.lists(
        st.tuples(st.integers(0, MEM + 4096), st.integers(0, 0xFFFF), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),  # direction: to memory
)
# Sequences a driver would issue, so random programs reach the data phases often.
pio_write = st.tuples(
    st.just("pio_write"),
    st.sampled_from([0x30, 0x34, 0xC5, 0x39, 0xC6]),
    st.integers(0, SECTORS),
    st.integers(1, 4),
    st.one_of(st.just(-1), st.integers(0, 4 * 256)),  # words sent; -1: the whole command
    st.integers(0, 255),
)
dma_write = st.tuples(
    st.just("dma"),
    st.sampled_from([0xCA, 0x35, 0xC8, 0x25]),
    st.integers(0, SECTORS),
    st.integers(1, 8),
    st.integers(-512, 512),  # PRD bytes minus transfer bytes
    st.integers(0, 255),
)
ops = st.lists(
    st.one_of(raw_out, raw_in, command, burst, prd, pio_write, pio_write, dma_write, dma_write),
    min_size=1,
    max_size=40,
)


def run(rig: Rig, program: list[tuple[Any, ...]]) -> None:
    for op in program:
        kind = op[0]
        if kind == "out":
            _, port, size, value = op
            rig.bus.write(port, size, value)
        elif kind == "in":
            _, port, size, _ = op
            rig.bus.read(port, size)
        elif kind == "cmd":
            _, opcode, lba, count = op
            rig.lba28(opcode, lba=lba, count=count)
        elif kind == "burst":
            _, n, size, value = op
            for _ in range(n):
                rig.bus.write(ATA, size, value)
        elif kind == "pio_write":
            _, opcode, lba, count, nwords, fill = op
            if opcode == 0xC6:
                rig.lba28(opcode, count=count if count != 3 else 0)
                continue
            if opcode in (0x34, 0x39):
                rig.lba48(opcode, lba, count)
            else:
                rig.lba28(opcode, lba=lba, count=count)
            for _ in range(count * 256 if nwords < 0 else nwords):
                rig.bus.write(ATA, 2, fill * 0x101)
        elif kind == "dma":
            _, opcode, lba, count, extra, fill = op
            to_memory = opcode in (0xC8, 0x25)
            rig.mem.fill(0x8000, count * 512, fill)
            rig.prd_table(0x100, [(0x8000, max(2, count * 512 + extra) & ~1, True)])
            rig.bm_setup(0x100, to_memory)
            if opcode in (0x35, 0x25):
                rig.lba48(opcode, lba, count)
            else:
                rig.lba28(opcode, lba=lba, count=count)
            rig.bm_start(to_memory)
        elif kind == "prd":
            _, slot, entries, to_memory = op
            table = slot * 8
            for i, (addr, count, eot) in enumerate(entries):
                raw = struct.pack("<IHH", addr & ~1, count & 0xFFFE, 0x8000 if eot else 0)
                if rig.mem.contains(table + 8 * i, 8):
                    rig.mem.write(table + 8 * i, raw)
            rig.bm_setup(table, to_memory)
            rig.bm_start(to_memory)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=ops, verdicts=st.lists(st.integers(0, 3), max_size=8))
def test_random_port_io_never_raises_and_only_accepted_writes_land(
    program: list[tuple[Any, ...]], verdicts: list[int]
) -> None:
    obs = ModelObserver(verdicts)
    rig = Rig(sectors=SECTORS, mem_size=MEM, observer=obs)
    rig.outb(ATA + 6, 0xE0)
    run(rig, program)
    assert rig.disk.written() == obs.model
    event(f"writes published: {min(obs.i, 3)}; sectors landed: {min(len(obs.model), 3)}")
    # Whatever the guest did, a reset brings the channel back to a usable state.
    rig.outb(CTRL, 0x04)
    rig.outb(CTRL, 0x00)
    assert rig.status() == r.ST_DRDY | r.ST_DSC


@settings(max_examples=150, deadline=None)
@given(program=st.lists(st.tuples(st.just("out"), st.sampled_from(PORTS), sizes,
                                   st.integers(0, 0xFFFFFFFF)), max_size=80))  # fmt: skip
def test_raw_writes_then_reads_never_raise(program: list[tuple[Any, ...]]) -> None:
    rig = Rig(sectors=SECTORS, mem_size=MEM)
    run(rig, program)
    for port in PORTS:
        for size in (1, 2, 4):
            rig.bus.read(port, size)
