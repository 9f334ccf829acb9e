"""The firmware's ROM stays read-only on the two paths where the host, not the CPU, stores into
guest RAM (docs/UNICORN.md U46): an int 13h read whose buffer lies in the ROM is refused, and a
bulk ``rep insw`` into it falls back to the CPU's own stores, which fault as one ``insw`` does."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import Fault, Halt
from tests.rigs.firmware import ah, call, cf, machine

SECTOR = 512


def test_an_int_13h_read_into_the_rom_is_refused_and_the_rom_kept(tmp_path: Path) -> None:
    m = machine(tmp_path, b"\xab" * (64 * SECTOR))
    rom = m.mem.read(layout.ROM_BASE, layout.ROM_SIZE)
    outcome, flags = call(m, 0x13, rax=0x0201, rcx=0x0001, rdx=0x0080, es=0xF000, rbx=0x1000)
    assert cf(flags) and ah(outcome) == 0x01  # BAD_PARAMETER
    assert m.mem.read(layout.ROM_BASE, layout.ROM_SIZE) == rom
    # Below the ROM the same read works.
    _, flags = call(m, 0x13, rax=0x0201, rcx=0x0001, rdx=0x0080, es=0xE000, rbx=0x1000)
    assert not cf(flags) and m.mem.read(0xE1000, SECTOR) == b"\xab" * SECTOR
    m.close()


def test_a_bulk_rep_insw_into_the_rom_faults_as_the_cpus_stores_do(tmp_path: Path) -> None:
    m = machine(tmp_path, b"\xab" * (64 * SECTOR))
    rom = m.mem.read(layout.ROM_BASE, 16)
    ata = layout.PORT_ATA_PRIMARY
    source = f"""
        mov dx, {ata} + 6
        mov al, 0xe0
        out dx, al
        mov dx, {ata} + 2
        mov al, 1
        out dx, al
        mov dx, {ata} + 7
        mov al, 0x20
        out dx, al
        mov ax, 0xefff
        mov es, ax
        mov di, 0x000e
        mov cx, 256
        mov dx, {ata}
        rep insw
        hlt
    """
    m.load(assemble(source, mode=16, address=layout.DEFAULT_LOAD_REAL), mode=16)
    result = m.run()
    assert isinstance(result.exit, Fault) and not isinstance(result.exit, Halt)
    assert "read-only" in result.exit.kind
    assert m.mem.read(layout.ROM_BASE, 16) == rom
    m.close()
