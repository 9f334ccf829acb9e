"""Hostile guests at the AHCI HBA: random register accesses and random command structures (command
headers, FIS bytes, PRDT entries, addresses in and out of RAM, slot and tag bits) never raise; a
failed command is a guest-visible error (PxTFD.ERR, PxIS.TFES) and the disk only changes by writes
the storage observer accepted."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.observer import COMMIT, REFUSE, StorageRead, StorageWrite, Verdict
from tests.rigs.ahci import CLB, FB, P0, AhciRig

SECTORS = 64
MEM = 1 << 20
TABLE = 0x20000
OPCODES = [*sorted(r.COMMANDS), a.ATA_READ_FPDMA, a.ATA_WRITE_FPDMA, 0x00, 0x63, 0xA1, 0xFF]
#: Addresses a hostile guest would pick: in RAM, at its end, beyond it, far beyond.
ADDRESSES = st.one_of(
    st.integers(0, MEM - 1),
    st.integers(MEM - 64, MEM + 64),
    st.sampled_from([0, MEM, 2**32 - 16, 2**63, 2**64 - 2]),
)


class Judge:
    """Accepts or refuses writes in turn and records what reached the observer."""

    def __init__(self, refuse_every: int) -> None:
        self.refuse_every = refuse_every
        self.accepted: list[StorageWrite] = []
        self.n = 0

    def on_write(self, w: StorageWrite) -> Verdict:
        self.n += 1
        if self.refuse_every and self.n % self.refuse_every == 0:
            return REFUSE
        self.accepted.append(w)
        return COMMIT

    def on_read(self, rd: StorageRead) -> None:
        return None


fis_strategy = st.one_of(
    st.binary(min_size=20, max_size=20),
    st.builds(
        lambda op, lba, count, feat, dev, c: bytes([0x27, 0x80 if c else 0, op, feat & 0xFF])
        + (lba & 0xFFFFFF).to_bytes(3, "little") + bytes([dev]) + (lba >> 24).to_bytes(3, "little")
        + bytes([feat >> 8, count & 0xFF, count >> 8, 0, 0]) + bytes(4),
        st.sampled_from(OPCODES), st.integers(0, 2**48 - 1) | st.integers(0, SECTORS + 4),
        st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.booleans(),
    ),
)
prd_strategy = st.tuples(ADDRESSES, st.integers(0, 0xFFFFFFFF))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    slots=st.lists(
        st.tuples(st.integers(0, 31), st.integers(0, 0xFFFF), ADDRESSES, fis_strategy,
                  st.lists(prd_strategy, max_size=6), st.integers(0, 0xFFFF)),
        min_size=1, max_size=6,
    ),
    issue=st.lists(st.tuples(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
                   min_size=1, max_size=4),
    refuse_every=st.integers(0, 3),
    clb=st.sampled_from([CLB, MEM - 512, MEM, 2**32 - 1024]),
    fb=st.sampled_from([FB, MEM - 64, MEM + 256]),
)  # fmt: skip
def test_random_command_structures_only_ever_fail_visibly(
    slots: list[tuple[int, int, int, bytes, list[tuple[int, int]], int]],
    issue: list[tuple[int, int]], refuse_every: int, clb: int, fb: int,
) -> None:  # fmt: skip
    judge = Judge(refuse_every)
    rig = AhciRig(sectors=SECTORS, mem_size=MEM, observer=judge)
    rig.bring_up()
    rig.set_port(a.PX_CLB, clb)
    rig.set_port(a.PX_FB, fb)
    for slot, flags, ctba, fis, prds, prdtl in slots:
        table = TABLE + slot * 0x400 if ctba % 3 else ctba  # mostly a table in RAM
        header_pa = clb + slot * a.HEADER_SIZE
        if rig.mem.contains(header_pa, 32):
            rig.mem.write(header_pa, struct.pack("<HHIQ", flags, prdtl if prdtl % 2 else len(prds),
                                                 0, table) + bytes(16))  # fmt: skip
        if rig.mem.contains(table, 0x80 + 16 * len(prds)):
            rig.mem.write(table, fis.ljust(0x80, b"\0"))
            for i, (address, dbc) in enumerate(prds):
                rig.mem.write(table + 0x80 + 16 * i, struct.pack("<QII", address, 0, dbc))
    for sact, ci in issue:
        rig.set_port(a.PX_IS, 0xFFFFFFFF)
        rig.set_port(a.PX_SACT, sact)
        rig.set_port(a.PX_CI, ci)  # never raises: the only answer is in the registers
        tfd, is_ = rig.port(a.PX_TFD), rig.port(a.PX_IS)
        if rig.port(a.PX_CI):  # commands complete at once: a slot left issued has failed
            assert is_ & a.IS_TFES
        if is_ & a.IS_TFES:
            assert tfd & r.ST_ERR
            event("a command failed")
            rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) & ~a.CMD_ST)
            assert rig.port(a.PX_CI) == 0 and rig.port(a.PX_SACT) == 0
            rig.set_port(a.PX_IS, 0xFFFFFFFF)
            rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) | a.CMD_ST)
    # The disk holds exactly the accepted writes, in order.
    expected: dict[int, bytes] = {}
    for w in judge.accepted:
        for i in range(w.sector_count):
            expected[w.lba + i] = w.data[i * 512 : (i + 1) * 512]
    assert rig.disk.written() == expected
    event(f"{len(judge.accepted)} writes accepted")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFF), st.sampled_from([1, 2, 4]),
                          st.integers(0, 0xFFFFFFFF)), max_size=60))  # fmt: skip
def test_random_register_accesses_never_raise(accesses: list[tuple[int, int, int]]) -> None:
    rig = AhciRig(sectors=SECTORS, mem_size=MEM)
    for offset, size, value in accesses:
        offset -= offset % size  # the vCPU delivers aligned accesses only (docs/UNICORN.md U51)
        if value & 1:
            rig.hba.mmio_write(offset, size, value & ((1 << (8 * size)) - 1))
        else:
            assert 0 <= rig.hba.mmio_read(offset, size) < 1 << (8 * size)
    assert rig.read(a.HOST_CAP) == a.CAP_VALUE and rig.read(a.HOST_GHC) & a.GHC_AE
    assert rig.read(P0 + a.PX_SSTS) == 0x113
