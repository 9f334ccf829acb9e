"""IRQ14: an ATA PIO write completed by its interrupt and a read whose data block announces
itself by one (nIEN clear), the handler acknowledging with a Status read, on hv-emu and QEMU."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from guest_tool.programs import macro_prelude
from hv_emu import layout
from hv_emu.exits import Halt
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.pic_guest import SLAVE_BASE, remap_pics
from tests.rigs.qemu import EXIT_PORT, needs_qemu, run_qemu

LBA = 5
ATA_VECTOR = SLAVE_BASE + 6  # IRQ14 is the slave PIC's input 6

#: Remap the PICs (0x20/0x28), unmask IRQ2 and IRQ14, nIEN clear; WRITE SECTORS of a pattern
#: to LBA 5, wait for the completion IRQ with HLT; READ SECTORS back, wait for the data IRQ,
#: read and compare. The handler prints the Status byte it read ("W50", "R58").
GUEST = f"""
    cli
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7000
    mov word ptr [{ATA_VECTOR}*4], on_ata
    mov word ptr [{ATA_VECTOR}*4+2], 0
{remap_pics(master_mask=0xFB, slave_mask=0xBF)}    mov dx, 0x3f6
    xor al, al
    out dx, al                  # nIEN clear
    mov di, 0x1000              # the pattern: words 0..255
    xor ax, ax
fill:
    stosw
    inc ax
    cmp di, 0x1200
    jb fill
    mov byte ptr [which], 0x57  # 'W'
    mov dx, 0x1f2
    mov al, 1
    out dx, al
    inc dx
    mov al, {LBA}
    out dx, al
    inc dx
    xor al, al
    out dx, al
    inc dx
    out dx, al
    inc dx
    mov al, 0xe0
    out dx, al
    inc dx
    mov al, 0x30                # WRITE SECTORS
    out dx, al
    mov dx, 0x3f6
drq:
    in al, dx
    test al, 8
    jz drq
    mov dx, 0x1f0
    mov si, 0x1000
    mov cx, 256
    rep outsw
    mov byte ptr [done], 0
    sti
wait_w:
    hlt
    cmp byte ptr [done], 0
    je wait_w
    cli
    mov byte ptr [which], 0x52  # 'R'
    mov byte ptr [done], 0
    mov dx, 0x1f2
    mov al, 1
    out dx, al
    inc dx
    mov al, {LBA}
    out dx, al
    mov dx, 0x1f7
    mov al, 0x20                # READ SECTORS
    out dx, al
    sti
wait_r:
    hlt
    cmp byte ptr [done], 0
    je wait_r
    cli
    mov dx, 0x1f0
    mov di, 0x2000
    mov cx, 256
    rep insw
    mov si, 0x1000
    mov di, 0x2000
    mov cx, 256
    repe cmpsw
    jne bad
    mov al, 0x6f
    out 0xe9, al
    mov al, 0x6b
    out 0xe9, al
bad:
    mov al, 0x0a
    out 0xe9, al
    mov al, 1
    out {EXIT_PORT:#x}, al
    hlt
on_ata:
    push ax
    push bx
    push dx
    mov al, [which]
    out 0xe9, al
    mov dx, 0x1f7
    in al, dx                   # Status: acknowledges INTRQ
    mov ah, al
    mov bx, digits
    shr al, 4
    .byte 0xd7                  # xlat
    out 0xe9, al
    mov al, ah
    and al, 0x0f
    .byte 0xd7                  # xlat
    out 0xe9, al
    mov al, 0x20
    out 0x20, al
    out 0xa0, al                # EOI to the master and to the slave
    mov byte ptr [done], 1
    pop dx
    pop bx
    pop ax
    iret
digits: .ascii "0123456789ABCDEF"
which: .byte 0
done: .byte 0
"""


def boot_sector() -> bytes:
    code = assemble(GUEST, mode=16, address=layout.DEFAULT_LOAD_REAL, prelude=macro_prelude(16))
    return code.ljust(510, b"\0") + b"\x55\xaa"


def run_hv(disk: Path) -> Machine:
    machine = Machine(MachineConfig(timeout=20.0, disk=disk))
    machine.load(boot_sector(), mode=16)
    result = machine.run()
    assert isinstance(result.exit, Halt), result.exit
    return machine


def test_an_ata_write_completes_by_irq14_and_a_read_announces_its_data(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(64 * 512))
    machine = run_hv(disk)
    try:
        assert machine.debugcon.text() == "W50R58ok\n"
        sector = disk.read_bytes()[LBA * 512 : (LBA + 1) * 512]
        assert sector == b"".join(n.to_bytes(2, "little") for n in range(256))
    finally:
        machine.close()


@needs_qemu
def test_irq14_completion_prints_the_same_on_qemu(tmp_path: Path) -> None:
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector() + bytes(64 * 512))
    qemu = run_qemu(tmp_path, boot_disk=disk)
    assert qemu.exit_value == 1, qemu
    ours = tmp_path / "ours.img"
    ours.write_bytes(bytes(64 * 512))
    machine = run_hv(ours)
    machine.close()
    assert bytes(machine.debugcon.captured) == qemu.console == b"W50R58ok\n"
