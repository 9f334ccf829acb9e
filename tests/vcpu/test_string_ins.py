"""String input in bulk: a ``rep ins*`` from the ATA data port stores a DRQ block per exit, and
the guest cannot tell it from one exit per element, not even when the block lands on code it has
already run (docs/UNICORN.md U10, U35).

Each guest runs twice: on the direct path (bulk) and with an exit observer attached (every element
a ``PortIn`` value through dispatch). Registers, guest memory and the channel's state must agree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import Halt, PortIn
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.devices import STRING_BUF, STRING_BUF16, string_io_guest, string_io_image

ATA = layout.PORT_ATA_PRIMARY
BUF, BUF16 = STRING_BUF, STRING_BUF16  # the guest's destination buffer (ES = 0x2000 in real mode)
SECTOR = 512

# READ SECTORS (0x20) or, after SET MULTIPLE 8 (0xC6), READ MULTIPLE (0xC4) for SECTORS sectors
# at LBA 3, then one rep ins with the form and registers under test, then halt.


def _disk(path: Path) -> Path:
    path.write_bytes(bytes((i * 13 + 5) & 0xFF for i in range(64 * SECTOR)))
    return path


def _run(tmp: Path, name: str, image: bytes, watched: bool, mode: int,
         paging: str) -> dict[str, object]:  # fmt: skip
    m = Machine(MachineConfig(timeout=10.0, disk=_disk(tmp / f"{name}.img"), mem_mib=8))
    ins: list[PortIn] = []
    if watched:
        m.exit_observers.append(lambda e, _o, _s: ins.append(e) if isinstance(e, PortIn)
                                else None)  # fmt: skip
    buf = BUF16 if mode == 16 else BUF
    m.mem.write(buf, b"\xee" * 0x6000)
    m.load(image, mode=mode, paging=paging)
    result = m.run()
    assert isinstance(result.exit, Halt), result.exit
    state = {
        "regs": {r: m.vcpu.reg(r) for r in ("rcx", "rdi", "rip", "rflags")},
        "memory": m.mem.read(buf, 0x6000),
        "status": m.bus.read(ATA + 7, 1),
        "next": [m.bus.read(ATA, 2) for _ in range(4)],  # where the channel's data stands
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
    form=st.sampled_from(["rep insw", "rep insd", "rep insb", ".byte 0xf3, 0x67, 0x6d",
                          ".byte 0x66, 0xf3, 0x6d", ".byte 0xf3, 0x2e, 0x6d", "insw"]),
    count=st.integers(0, 2600),
    offset=st.integers(0, 8191),
    backwards=st.booleans(),
)
def test_bulk_and_element_by_element_reads_are_the_same(
    tmp_path: Path, mode_paging: tuple[int, str], multiple: bool, sectors: int, form: str,
    count: int, offset: int, backwards: bool,
) -> None:  # fmt: skip
    mode, paging = mode_paging
    image = string_io_image(mode=mode, pointer="di", offset=offset, backwards=backwards,
                            count=count, sectors=sectors, command=0xC4 if multiple else 0x20,
                            multiple=multiple, insn=form)  # fmt: skip
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        bulk = _run(Path(tmp), "bulk", image, False, mode, paging)
        each = _run(Path(tmp), "each", image, True, mode, paging)
    assert bulk == each


def test_a_sector_of_rep_insw_is_one_block_on_the_direct_path(tmp_path: Path) -> None:
    """The point of it all: the ATA data port gives one ``command_read_block`` per DRQ block and
    no per-word read, and the words land where the CPU would have stored them."""
    m = Machine(MachineConfig(timeout=10.0, disk=_disk(tmp_path / "d.img"), mem_mib=8))
    device, _ = m.bus.block_ports[ATA]
    calls: list[int] = []
    blocks = device.io_read_block

    def count_blocks(offset: int, size: int, count: int) -> bytes:
        calls.append(count * size)
        return blocks(offset, size, count)

    words = m.bus.readers[ATA]

    def count_words(port: int, size: int) -> int:
        calls.append(size)
        return words(port, size)

    m.bus.readers[ATA] = count_words
    object.__setattr__(device, "io_read_block", count_blocks)
    source = string_io_guest(sectors=2, command=0x20, multiple=False, direction="cld",
                             setup=f"    mov rdi, {BUF}\n    mov rcx, 256",
                             insn="rep insw\n mov rcx, 256\n rep insw")  # fmt: skip
    m.load(assemble(source, mode=64, address=0x100000))
    assert isinstance(m.run().exit, Halt)
    # Each instruction is one block, its first element (which the CPU stores) included.
    assert calls == [512, 512]
    assert m.mem.read(BUF, 2 * SECTOR) == _disk(tmp_path / "x.img").read_bytes()[3 * SECTOR :
                                                                                 5 * SECTOR]
    m.close()


def test_a_block_read_over_code_already_run_runs_as_read(tmp_path: Path) -> None:
    """A function runs (Unicorn translates it), then a ``rep insw`` whose first element lands on
    another page reads new code over it, and the function is called again: the new code runs.
    The bulk store is a host write, which Unicorn does not notice (U9); the vCPU drops the
    translated code itself from the IN hook (U10)."""
    disk = tmp_path / "code.img"
    # Sector 3: a filler word, then ``mov eax, 2; ret``.
    disk.write_bytes(bytes(3 * SECTOR) + (b"\x90\x90" + bytes.fromhex("b802000000c3")).ljust(
        SECTOR, b"\0") + bytes(8 * SECTOR))  # fmt: skip
    m = Machine(MachineConfig(timeout=10.0, disk=disk, mem_mib=8))
    m.mem.write(0x180000, bytes.fromhex("b801000000c3"))  # mov eax, 1; ret
    source = string_io_guest(sectors=1, command=0x20, multiple=False, direction="cld",
                             setup=f"    mov rdi, {0x180000 - 2}\n    mov rcx, 256",
                             insn="rep insw\n mov rax, 0x180000\n call rax\n mov r13, rax")
    source = ("    mov rsp, 0x170000\n    mov rax, 0x180000\n    call rax\n    mov r12, rax\n"
              + source)  # fmt: skip
    m.load(assemble(source, mode=64, address=0x100000))
    assert isinstance(m.run().exit, Halt)
    assert (m.vcpu.reg("r12"), m.vcpu.reg("r13")) == (1, 2)
    m.close()
