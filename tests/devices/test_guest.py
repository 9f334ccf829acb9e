"""The storage devices under a real guest on the real vCPU: ``rep outsw``/``rep insw`` through
the data port, a bus-master DMA read, and DMA over code the CPU already translated."""

from __future__ import annotations

import pytest

from hv_emu import layout
from hv_emu.devices.pci import PciConfigSpace
from hv_emu.devices.storage.ata import AtaChannel
from hv_emu.devices.storage.busmaster import BusMaster
from hv_emu.devices.storage.disk import MemoryDisk
from hv_emu.exits import Halt
from hv_emu.machine import Machine, MachineConfig
from tests.conftest import Boot

ATA, BM = layout.PORT_ATA_PRIMARY, layout.PORT_BUSMASTER
BUF_OUT, BUF_IN, PRD, DMA_BUF = 0x200000, 0x300000, 0x400000, 0x500000

# Python writes sector 9 = "mov eax, 2; ret" so the guest can DMA it over its own function.
NEW_CODE = bytes([0xB8, 2, 0, 0, 0, 0xC3]).ljust(512, b"\x90")

GUEST = f"""
    cld
    mov rdi, {BUF_OUT}          # a sector of pattern: words 0x1234, 0x1335, ...
    mov ecx, 256
    mov ax, 0x1234
fill:
    stosw
    add ax, 0x0101
    loop fill

    mov dx, {ATA + 6}           # WRITE SECTORS, LBA 5, one sector
    mov al, 0xE0
    out dx, al
    mov dx, {ATA + 2}
    mov al, 1
    out dx, al
    mov dx, {ATA + 3}
    mov al, 5
    out dx, al
    xor eax, eax
    mov dx, {ATA + 4}
    out dx, al
    mov dx, {ATA + 5}
    out dx, al
    mov dx, {ATA + 7}
    mov al, 0x30
    out dx, al
wait_w:
    in al, dx                   # poll Status for DRQ
    test al, 0x08
    jz wait_w
    mov rsi, {BUF_OUT}
    mov ecx, 256
    mov dx, {ATA}
    rep outsw

    mov dx, {ATA + 7}           # READ SECTORS, same LBA
    mov al, 0x20
    out dx, al
wait_r:
    in al, dx
    test al, 0x08
    jz wait_r
    mov rdi, {BUF_IN}
    mov ecx, 256
    mov dx, {ATA}
    rep insw

    call patched                # translate the function once: returns 1
    mov r12d, eax

    lea rax, [rip + patched]    # PRD: one 512-byte region over the function, end of table
    mov rdi, {PRD}
    mov dword ptr [rdi], eax
    mov dword ptr [rdi + 4], 0x80000200
    mov dx, {BM + 4}
    mov eax, {PRD}
    out dx, eax
    mov dx, {BM}
    mov al, 0x08                # direction: to memory
    out dx, al
    mov dx, {ATA + 3}           # READ DMA, LBA 9
    mov al, 9
    out dx, al
    mov dx, {ATA + 7}
    mov al, 0xC8
    out dx, al
    mov dx, {BM}
    mov al, 0x09                # Start
    out dx, al
    mov dx, {BM + 2}
wait_dma:
    in al, dx                   # poll BM Status for Interrupt
    test al, 0x04
    jz wait_dma

    call patched                # must run the new code: returns 2
    mov r13d, eax
    hlt

    .balign 512
patched:
    mov eax, 1
    ret
"""


@pytest.fixture
def machine() -> tuple[Machine, MemoryDisk]:
    m = Machine(MachineConfig(timeout=20.0))
    if m.bus.find(ATA) is not None:
        pytest.skip("the machine wires its own ATA channel")
    disk = MemoryDisk(64)
    disk.write_sectors(9, NEW_CODE)
    ata = AtaChannel(disk, None, m.mem)
    pci = PciConfigSpace(BM)
    bm = BusMaster(ata, m.mem, enabled=pci.bus_master_enabled)
    m.bus.register(ATA, layout.PORT_ATA_PRIMARY_LEN, ata.command_block, "ata0")
    m.bus.register(layout.PORT_ATA_PRIMARY_CTRL, 1, ata.control_block, "ata0-ctrl")
    m.bus.register(BM, layout.PORT_BUSMASTER_LEN, bm, "busmaster")
    return m, disk


def test_guest_pio_and_dma_over_translated_code(
    boot: Boot, machine: tuple[Machine, MemoryDisk]
) -> None:
    m, disk = machine
    _, result = boot(GUEST, machine=m)
    assert isinstance(result.exit, Halt), result
    expected = b"".join(((0x1234 + 0x0101 * i) & 0xFFFF).to_bytes(2, "little") for i in range(256))
    assert m.mem.read(BUF_OUT, 512) == expected
    assert disk.read_sectors(5, 1) == expected
    assert m.mem.read(BUF_IN, 512) == expected
    assert m.vcpu.reg("r12") & 0xFFFFFFFF == 1  # the function before the DMA
    assert m.vcpu.reg("r13") & 0xFFFFFFFF == 2  # after it: the DMA'd code ran, not a stale copy
