"""hv-emu's firmware against QEMU's (SeaBIOS, ``-machine pc``): the same boot sectors, booted
from the same disk images, print the same bytes on the debug console (docs/DEVICES.md, the
firmware). Each guest ends QEMU by writing to ``isa-debug-exit`` and hv-emu by ``cli; hlt``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hv_emu.machine import Machine, MachineConfig
from tests.rigs.firmware import SIG, assemble16, boot_sector
from tests.rigs.qemu import EXIT_PORT, needs_qemu, run_qemu

MIB = 1 << 20

#: Shared routines: ``hex16`` prints AX as four hex digits on the debug console, ``puts`` prints
#: the zero-ended string at DS:SI with int 10h teletype and on the debug console, ``done`` ends
#: QEMU (isa-debug-exit) or hv-emu (cli; hlt).
LIB = f"""
hex16:
    push cx
    mov cx, 4
hex16_digit:
    rol ax, 4
    push ax
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe hex16_out
    add al, 7
hex16_out:
    out 0xe9, al
    pop ax
    loop hex16_digit
    pop cx
    RET16
space:
    push ax
    mov al, ' '
    out 0xe9, al
    pop ax
    RET16
newline:
    push ax
    mov al, 10
    out 0xe9, al
    pop ax
    RET16
puts:
    lodsb
    test al, al
    jz puts_end
    out 0xe9, al
    mov ah, 0x0e
    mov bx, 0x0007
    int 0x10
    jmp puts
puts_end:
    RET16
done:
    mov al, 1
    out {EXIT_PORT:#x}, al
    cli
    hlt
"""

START = """
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    mov [0x500], dl          # the boot drive
"""


def hv_emu_console(disk: Path, mem_mib: int = 32) -> bytes:
    m = Machine(MachineConfig(disk=disk, mem_mib=mem_mib, timeout=20.0))
    try:
        m.boot_disk()
        result = m.run()
        assert result.halted, result.exit
        return bytes(m.debugcon.captured)
    finally:
        m.close()


def both(tmp_path: Path, image: bytes, mem_mib: int = 32, size: int | None = None,
         ) -> tuple[bytes, bytes]:  # fmt: skip
    """The debug-console bytes of QEMU and of hv-emu booting ``image`` (two copies of it,
    sparse-extended to ``size`` bytes)."""
    outs = []
    for name in ("qemu", "hv"):
        path = tmp_path / f"{name}.img"
        path.write_bytes(image)
        if size is not None:
            with path.open("r+b") as f:
                f.truncate(size)
        if name == "qemu":
            run = run_qemu(tmp_path, boot_disk=path, mem_mib=mem_mib)
            assert run.exit_value == 1, run
            outs.append(run.console)
        else:
            outs.append(hv_emu_console(path, mem_mib))
    return outs[0], outs[1]


STAGE2 = """
    mov si, msg2
    CALL16 puts
    # Read back the first two screen rows from B800 as the guest sees them.
    mov ax, 0xb800
    mov fs, ax
    xor bx, bx
readback:
    mov al, fs:[bx]
    cmp al, 0x20
    jb dot
    cmp al, 0x7e
    jbe shown
dot:
    mov al, '.'
shown:
    out 0xe9, al
    add bx, 2
    cmp bx, 160 * 2
    jb readback
    CALL16 newline
    jmp done
"""


@needs_qemu
def test_a_boot_sector_prints_with_int_10h_and_loads_a_second_stage(tmp_path: Path) -> None:
    source = START + """
        mov ax, 0x0003
        int 0x10                 # mode 3: a clear screen on both machines
        mov si, msg
        CALL16 puts
        mov ah, 0x41
        mov bx, 0x55aa
        mov dl, [0x500]
        int 0x13
        jc fail
        cmp bx, 0xaa55
        jne fail
        mov si, dap
        mov ah, 0x42
        mov dl, [0x500]
        int 0x13
        jc fail
        .byte 0xea
        .word 0x8000, 0          # jmp 0000:8000
    fail:
        mov si, failed
        CALL16 puts
        jmp done
    msg: .asciz "boot sector: hello from int 10h\\r\\n"
    failed: .asciz "int 13h failed\\r\\n"
    dap: .byte 16, 0
        .word 1, 0x8000, 0
        .long 1, 0
    """ + LIB
    stage2 = assemble16(STAGE2 + LIB + 'msg2: .asciz "stage 2: loaded by int 13h AH=42h\\r\\n"\n',
                        0x8000)
    image = boot_sector(source) + stage2.ljust(512, b"\0")
    qemu, hv = both(tmp_path, image + bytes(MIB))
    assert b"stage 2: loaded" in hv and b"int 13h failed" not in hv, hv
    assert hv == qemu
    screen = hv.splitlines()[-1].decode()
    assert screen.startswith("boot sector: hello from int 10h")
    assert screen[80:].startswith("stage 2: loaded by int 13h AH=42h")


E820 = START + """
    xor ebx, ebx
    mov di, 0x600
next:
    mov eax, 0xe820
    mov edx, 0x534d4150
    mov ecx, 24
    int 0x15
    jc e820_end
    mov si, 6                # base, length: 4 words each, high word first
high_words:
    sub si, 2
    mov ax, [0x600 + si]
    CALL16 hex16
    test si, si
    jnz high_words
    CALL16 space
    mov si, 14
low_words:
    sub si, 2
    mov ax, [0x600 + si]
    CALL16 hex16
    cmp si, 8
    jne low_words
    CALL16 space
    mov ax, [0x600 + 16]
    CALL16 hex16
    CALL16 newline
    test ebx, ebx
    jnz next
e820_end:
    jmp done
""" + LIB


def entries(console: bytes) -> list[tuple[int, int, int]]:
    out = []
    for line in console.decode().splitlines():
        base, length, kind = (int(field, 16) for field in line.split())
        out.append((base, length, kind))
    return out


@needs_qemu
@pytest.mark.parametrize("mem_mib", [16, 64])
def test_e820_agrees_with_qemu_on_usable_ram(tmp_path: Path, mem_mib: int) -> None:
    qemu, hv = both(tmp_path, boot_sector(E820) + bytes(MIB), mem_mib=mem_mib)
    ours, theirs = entries(hv), entries(qemu)
    usable = [e for e in ours if e[2] == 1]
    qemu_usable = [e for e in theirs if e[2] == 1]
    assert usable[0] == qemu_usable[0] == (0, 0x9FC00, 1)
    assert (0x9FC00, 0x400, 2) in theirs and (0x9FC00, 0x400, 2) in ours
    assert (0xF0000, 0x10000, 2) in theirs and (0xF0000, 0x10000, 2) in ours
    # Above 1 MiB: both start at 1 MiB; SeaBIOS keeps a little at the top for its tables
    # (docs/DEVICES.md, the firmware), hv-emu gives all of it.
    assert usable[1][0] == qemu_usable[1][0] == MIB
    assert usable[1][1] == (mem_mib - 1) * MIB
    assert (mem_mib - 2) * MIB < qemu_usable[1][1] < usable[1][1]


GEOMETRY = START + """
    mov ah, 0x08
    mov dl, [0x500]
    int 0x13
    pushf
    CALL16 hex16
    CALL16 space
    mov ax, cx
    CALL16 hex16
    CALL16 space
    mov ax, dx
    CALL16 hex16
    CALL16 space
    pop ax
    and ax, 1
    CALL16 hex16
    CALL16 newline
    mov ah, 0x15
    mov dl, [0x500]
    int 0x13
    mov al, 0
    CALL16 hex16
    CALL16 space
    mov ax, cx
    CALL16 hex16
    mov ax, dx
    CALL16 hex16
    CALL16 newline
    mov word ptr [0x600], 26
    mov si, 0x600
    mov ah, 0x48
    mov dl, [0x500]
    int 0x13
    mov si, 0
table:
    mov ax, [0x600 + si]
    xchg al, ah
    CALL16 hex16
    add si, 2
    cmp si, 26
    jb table
    CALL16 newline
    jmp done
""" + LIB


@needs_qemu
@pytest.mark.parametrize("size_mib", [1, 10, 100, 600, 9 * 1024])
def test_int_13h_geometry_agrees_with_qemu(tmp_path: Path, size_mib: int) -> None:
    qemu, hv = both(tmp_path, boot_sector(GEOMETRY), size=size_mib * MIB)
    assert hv == qemu
    assert len(hv.splitlines()) == 3


WRITE = START + """
    mov si, read_dap         # sector 1 (the signature's) to 0000:7E00...
    mov ah, 0x42
    mov dl, [0x500]
    int 0x13
    mov si, dap              # ...and from there to LBA 5
    mov ah, 0x43
    mov al, 0
    mov dl, [0x500]
    int 0x13
    pushf
    pop ax
    and ax, 1
    CALL16 hex16
    mov ax, [dap + 2]
    CALL16 hex16
    CALL16 newline
    jmp done
read_dap: .byte 16, 0
    .word 1, 0x7e00, 0
    .long 1, 0
dap: .byte 16, 0
    .word 1, 0x7e00, 0
    .long 5, 0
""" + LIB


@needs_qemu
def test_a_signature_written_with_ah_43h_is_zero_filled_on_hv_emu_only(tmp_path: Path) -> None:
    sector = SIG.rjust(300, b"\x22").ljust(512, b"\x22")
    image = boot_sector(WRITE) + sector + bytes(MIB)
    sigs = tmp_path / "sig.ndb"
    sigs.write_text(f"Test.Sig:0:*:{SIG.hex()}\n")
    qemu_disk, hv_disk = tmp_path / "q.img", tmp_path / "h.img"
    qemu_disk.write_bytes(image)
    hv_disk.write_bytes(image)
    qemu = run_qemu(tmp_path, boot_disk=qemu_disk)
    m = Machine(MachineConfig(disk=hv_disk, db=sigs, timeout=20.0))
    try:
        m.boot_disk()
        assert m.run().halted
    finally:
        m.close()
    # Both machines say the write succeeded (CF 0, one sector)...
    assert qemu.console == bytes(m.debugcon.captured) == b"00000001\n"
    # ...QEMU's disk holds the signature, hv-emu's holds zeros where it was.
    assert qemu_disk.read_bytes()[5 * 512 : 6 * 512] == sector
    written = hv_disk.read_bytes()[5 * 512 : 6 * 512]
    assert SIG not in written and written == sector.replace(SIG, bytes(len(SIG)))
    assert m.detections == 1


TICKS = START + """
    mov word ptr [0x1c * 4], tick
    mov word ptr [0x1c * 4 + 2], 0
    mov ah, 0x00
    int 0x1a                 # the tick count before (QEMU's starts at the time of day)
    mov [0x502], dx
    sti
sleep:
    hlt
    cmp byte ptr [count], 5
    jb sleep
    cli
    mov ah, 0x00
    int 0x1a
    sub dx, [0x502]
    mov ax, dx
    CALL16 hex16             # ticks the BIOS counted meanwhile
    CALL16 newline
    jmp done
tick:
    inc byte ptr [count]
    mov al, '.'
    out 0xe9, al
    iret
count: .byte 0
""" + LIB


@needs_qemu
def test_a_tick_handler_on_int_1ch_counts_with_hlt_as_on_qemu(tmp_path: Path) -> None:
    """IRQ0 from the PIT through the PIC to the BIOS's int 08h, which calls int 1Ch: five
    ticks seen by the guest's handler, five counted by the BIOS (int 1Ah), on both."""
    qemu, hv = both(tmp_path, boot_sector(TICKS) + bytes(MIB))
    assert hv == qemu == b".....0005\n"
