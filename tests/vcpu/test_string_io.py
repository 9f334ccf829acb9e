"""String I/O in bulk: a ``rep outs*`` to the ATA data port moves a DRQ block per exit, and the
guest, the disk and the inspection cannot tell it from one exit per element.

Each guest runs twice: on the direct path (bulk) and with an exit observer attached (every element
a ``PortOut`` value through dispatch). Registers, guest memory, the disk image, the detections
and the event log must agree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import Halt, PortOut
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.string_io import RepString, decode_rep_string, plan_block, registers_after
from tests.rigs.devices import STRING_BUF, STRING_BUF16, string_io_guest, string_io_image

SIG = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")
NDB = f"Test.Sig:0:*:{SIG.hex()}\n"
ATA = layout.PORT_ATA_PRIMARY
BUF, BUF16 = STRING_BUF, STRING_BUF16  # the guest's source buffer (DS = 0x2000 in real mode)

# Issue WRITE SECTORS (0x30) or, after SET MULTIPLE 8 (0xC6), WRITE MULTIPLE (0xC5) for SECTORS
# sectors at LBA 3, then one rep outs with the form and registers under test, then halt.
def _machine(tmp_path: Path, name: str) -> Machine:
    sigs = tmp_path / "test.ndb"
    sigs.write_text(NDB)
    return Machine(MachineConfig(timeout=10.0, disk=tmp_path / f"{name}.img", disk_size_mib=1,
                                 db=sigs, on_detect=("warn", "zero-fill"), mem_mib=8))  # fmt: skip


def _run(tmp_path: Path, name: str, image: bytes, data: bytes, watched: bool,
         mode: int = 64, paging: str = "none") -> dict[str, object]:  # fmt: skip
    buf = BUF16 if mode == 16 else BUF
    m = _machine(tmp_path, name)
    outs: list[PortOut] = []
    if watched:
        m.exit_observers.append(lambda e, _o, _s: outs.append(e) if isinstance(e, PortOut)
                                else None)  # fmt: skip
    m.mem.write(buf, data)
    m.load(image, mode=mode, paging=paging)
    result = m.run()
    assert isinstance(result.exit, Halt), result.exit
    assert m.disk is not None
    events = [{k: v for k, v in e.items() if k != "t"} for e in m.events.records]
    state = {
        "regs": {r: m.vcpu.reg(r) for r in ("rcx", "rsi", "rip", "rflags")},
        "disk": m.disk.read_sectors(0, 16),
        "detections": m.detections,
        "events": events,
        "status": m.bus.read(ATA + 7, 1),
        "screen": m.mem.read(layout.VGA_TEXT_BASE, 4000),
    }
    m.close()
    return state




@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mode_paging=st.sampled_from([(64, "none"), (32, "none"), (32, "pae"), (32, "2level"),
                                 (16, "none")]),
    multiple=st.booleans(),
    sectors=st.integers(1, 3),
    form=st.sampled_from(["rep outsw", "rep outsd", "rep outsb", ".byte 0xf3, 0x67, 0x6f",
                          ".byte 0x66, 0xf3, 0x6f", ".byte 0xf3, 0x3e, 0x6f", "outsw"]),
    count=st.integers(0, 2600),
    offset=st.integers(0, 8191),
    backwards=st.booleans(),
    sig_at=st.none() | st.integers(0, 3000),
)
def test_bulk_and_element_by_element_writes_are_the_same(
    tmp_path: Path, mode_paging: tuple[int, str], multiple: bool, sectors: int, form: str,
    count: int, offset: int, backwards: bool, sig_at: int | None,
) -> None:  # fmt: skip
    data = bytearray((i * 7 + 3) & 0xFF for i in range(0x6000))
    if sig_at is not None:
        data[sig_at : sig_at + len(SIG)] = SIG
    mode, paging = mode_paging
    image = string_io_image(mode=mode, pointer="si", offset=offset, backwards=backwards,
                            count=count, sectors=sectors, command=0xC5 if multiple else 0x30,
                            multiple=multiple, insn=form)  # fmt: skip
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        bulk = _run(Path(tmp), "bulk", image, bytes(data), False, mode, paging)
        each = _run(Path(tmp), "each", image, bytes(data), True, mode, paging)
    assert bulk == each


def test_a_sector_of_rep_outsw_is_one_exit_on_the_direct_path(tmp_path: Path) -> None:
    """The point of it all, through the run's own counters: the ATA data port sees one
    ``command_write_block`` per DRQ block and no per-word write."""
    m = _machine(tmp_path, "one")
    assert m.disk is not None
    calls: list[int] = []
    ata = m.ata
    words = ata.command_write
    blocks = ata.command_write_block

    def count_words(offset: int, size: int, value: int) -> None:
        calls.append(size)
        words(offset, size, value)

    def count_blocks(offset: int, size: int, data: bytes) -> None:
        calls.append(len(data))
        blocks(offset, size, data)

    m.bus.writers[ATA] = lambda port, size, value: count_words(0, size, value)
    device, _ = m.bus.block_ports[ATA]
    object.__setattr__(device, "io_write_block", count_blocks)
    source = string_io_guest(sectors=2, command=0x30, multiple=False, direction="cld",
                             setup=f"    mov rsi, {BUF}\n    mov rcx, 256",
                             insn="rep outsw\n mov rcx, 256\n rep outsw")  # fmt: skip
    m.mem.write(BUF, bytes(range(256)) * 4)
    m.load(assemble(source, mode=64, address=0x100000))
    assert isinstance(m.run().exit, Halt)
    assert calls == [512, 512]
    assert m.disk.read_sectors(3, 2) == bytes(range(256)) * 4
    m.close()


@pytest.mark.parametrize(
    ("code", "mode", "expected"),
    [
        (b"\xf3\x6f", 64, RepString(4, 64, "ds")),
        (b"\x66\xf3\x6f", 64, RepString(2, 64, "ds")),
        (b"\xf3\x67\x6e", 64, RepString(1, 32, "ds")),
        (b"\xf3\x26\x6f", 16, RepString(2, 16, "es")),
        (b"\xf3\x66\x67\x6f", 16, RepString(4, 32, "ds")),
        (b"\xf3\x67\x6f", 32, RepString(4, 16, "ds")),
        (b"\x6f", 64, None),  # no REP
        (b"\xf2\x6f", 64, None),  # REPNE: left out
        (b"\xf3\x48\x6f", 64, None),  # REX: left out
        (b"\xf3\x64\x6f", 64, None),  # FS: base not read
        (b"\xf3\x6d", 64, RepString(4, 64, "es", ins=True)),
        (b"\xf3\x6c", 16, RepString(1, 16, "es", ins=True)),
        (b"\x2e\x66\xf3\x6d", 16, RepString(4, 16, "es", ins=True)),  # INS: ES, whatever
        (b"\xf3\x64\x6d", 32, RepString(4, 32, "es", ins=True)),  # ... even FS
        (b"\xf3\x67\x6d", 64, RepString(4, 32, "es", ins=True)),
        (b"\x6d", 64, None),  # no REP
        (b"\xf3" * 15 + b"\x6f", 64, None),  # longer than 15 bytes
        (b"\xf3\xf3", 64, None),
    ],
)
def test_decode_rep_string(code: bytes, mode: int, expected: RepString | None) -> None:
    assert decode_rep_string(code, mode) == expected


@given(rcx=st.integers(0, 2**64 - 1), rsi=st.integers(0, 2**64 - 1), df=st.booleans(),
       size=st.sampled_from([1, 2, 4]), address=st.sampled_from([16, 32, 64]),
       room=st.integers(0, 5000))  # fmt: skip
def test_a_block_never_wraps_and_leaves_the_registers_one_element_short(
    rcx: int, rsi: int, df: bool, size: int, address: int, room: int
) -> None:
    insn = RepString(size, address, "ds")
    flags = 1 << 10 if df else 0
    block = plan_block(insn, rcx, rsi, flags, room)
    mask = insn.offset_mask
    if block is None:
        return
    assert 2 <= block.count <= min(room, rcx & mask)
    assert block.start >= 0 and block.start + block.count * size <= mask + 1
    new_rcx, new_rsi = registers_after(insn, rcx, rsi, flags, block.count)
    # After the CPU's own update of the first element (RCX - 1, RSI +/- size, in the address
    # size), the registers are where block.count elements leave them.
    step = -size if df else size
    assert (new_rcx - 1) & mask == ((rcx & mask) - block.count) & mask
    assert (new_rsi + step) & mask == ((rsi & mask) + step * block.count) & mask
    assert new_rcx & ~mask == rcx & ~mask and new_rsi & ~mask == rsi & ~mask


@pytest.mark.parametrize("take", [1, 3, 8])
@pytest.mark.parametrize("insn", ["rep outsw", "rep insw"])
def test_unicorn_finishes_a_rep_element_from_the_registers_its_hook_wrote(
    insn: str, take: int
) -> None:
    """docs/UNICORN.md U35, on a bare engine: the first element's hook of an 8-word rep string
    instruction sets RCX = 8 - take + 1 and RSI/RDI = base + 2 * (take - 1); Unicorn then adds the
    stride and takes 1 from RCX itself and goes on with element ``take`` (or ends): the hook runs
    1 + (8 - take) times, and the instruction ends with RCX = 0, RSI/RDI = base + 16, RIP after
    it. An IN's returned value is stored at the RDI the element started with."""
    import unicorn
    from unicorn import x86_const as X

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 4 << 20)
    code = assemble(f"cld\n mov dx, 0x300\n mov esi, 0x200000\n mov edi, 0x300000\n"
                    f" mov ecx, 8\n {insn}\n hlt", mode=64, address=0x100000)  # fmt: skip
    uc.mem_write(0x100000, code)
    uc.mem_write(0x200000, bytes(range(16)))
    index = X.UC_X86_REG_RSI if "outs" in insn else X.UC_X86_REG_RDI
    seen: list[tuple[int, int]] = []

    def first_takes_many(engine: unicorn.Uc) -> None:
        rcx, pointer = engine.reg_read(X.UC_X86_REG_RCX), engine.reg_read(index)
        seen.append((rcx, pointer))
        if len(seen) == 1:
            engine.reg_write(X.UC_X86_REG_RCX, rcx - take + 1)
            engine.reg_write(index, pointer + 2 * (take - 1))

    def on_out(engine: unicorn.Uc, _port: int, _size: int, _value: int, _ud: object) -> None:
        first_takes_many(engine)

    def on_in(engine: unicorn.Uc, _port: int, _size: int, _ud: object) -> int:
        first_takes_many(engine)
        return 0x1000 + len(seen)

    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    uc.hook_add(unicorn.UC_HOOK_INSN, on_in, None, 1, 0, X.UC_X86_INS_IN)
    uc.emu_start(0x100000, 2**64 - 1)
    base = 0x200000 if "outs" in insn else 0x300000
    assert len(seen) == 1 + 8 - take
    assert seen[1:] == [(8 - i, base + 2 * i) for i in range(take, 8)]
    assert uc.reg_read(X.UC_X86_REG_RCX) == 0 and uc.reg_read(index) == base + 16
    assert uc.reg_read(X.UC_X86_REG_RIP) == 0x100000 + len(code)
    if "ins" in insn:
        assert uc.mem_read(0x300000, 2) == b"\x01\x10"  # the first value, at the first RDI
