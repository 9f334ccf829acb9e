"""Boot sectors for delivery tests: a 16-bit stub that enters 32-bit protected mode (flat code
0x08 and data 0x10 in a GDT of its own, as nothing else sets one up under SeaBIOS), then the
test's 32-bit body at ``PM_ENTRY``; and the run of one on hv-emu (a flat 16-bit image at 0x7C00,
``layout.DEFAULT_LOAD_REAL``) and on QEMU (``tests/rigs/qemu.py``)."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from guest_tool.programs import macro_prelude
from hv_emu import layout
from hv_emu.machine import Machine, MachineConfig, RunResult
from tests.rigs.qemu import QemuRun, run_qemu

LOAD = layout.DEFAULT_LOAD_REAL
#: Where the 32-bit body starts (the stub and its GDT fit in the first 64 bytes).
PM_ENTRY = LOAD + 0x40

STUB16 = f"""
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, {LOAD:#x}
    lgdt [gdtr]
    mov eax, cr0
    or al, 1
    mov cr0, eax
    LJMP_TO32 0x08, {PM_ENTRY:#x}
gdt:
    .long 0, 0
    .long 0x0000ffff, 0x00cf9a00
    .long 0x0000ffff, 0x00cf9200
gdtr:
    .word 23
    .long gdt
"""

#: The start of every 32-bit body: flat data segments and a stack below the boot sector.
ENTER32 = """
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x7000
"""

#: ``hex8``: print EAX as eight hex digits on the debug console (EAX, ECX clobbered).
HEX8 = """
hex8:
    mov ecx, 8
hex8_next:
    rol eax, 4
    push eax
    and al, 0x0f
    add al, 0x30
    cmp al, 0x39
    jbe hex8_digit
    add al, 7
hex8_digit:
    out 0xe9, al
    pop eax
    loop hex8_next
    ret
"""


def pm_boot_sector(body32: str) -> bytes:
    """512 bytes: the stub, then ``body32`` (32-bit code at ``PM_ENTRY``), then 55 AA."""
    stub = assemble(STUB16, mode=16, address=LOAD, prelude=macro_prelude(16))
    assert len(stub) <= PM_ENTRY - LOAD, len(stub)
    body = assemble(body32, mode=32, address=PM_ENTRY, prelude=macro_prelude(32))
    code = stub.ljust(PM_ENTRY - LOAD, b"\x90") + body
    assert len(code) <= 510, f"boot sector too long: {len(code)} bytes"
    return code.ljust(510, b"\0") + b"\x55\xaa"


def run_hv(sector: bytes, config: MachineConfig | None = None) -> tuple[Machine, RunResult]:
    """The boot sector as a flat 16-bit image at 0x7C00 on hv-emu."""
    machine = Machine(config or MachineConfig(timeout=20.0))
    machine.load(sector, mode=16)
    return machine, machine.run()


def run_on_qemu(tmp: Path, sector: bytes) -> QemuRun:
    disk = tmp / "boot.img"
    disk.write_bytes(sector + bytes(64 * 512))
    return run_qemu(tmp, boot_disk=disk)
