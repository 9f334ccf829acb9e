"""The firmware ROM and the interrupt vector table that points into it.

Models: the system BIOS ROM at F000:0000-F000:FFFF and the IVT a PC's POST leaves: each vector
the firmware serves points at its own stub slot in the ROM, ``FIRMWARE_STUBS + 16 * vector``.
Every stub is real 8086 code, so a guest that saves an old vector and chains to it with
``pushf; call far [old]`` reaches the service as if by ``INT n``:

- a service (int 10h, 13h, ...): ``ud2`` (the firmware's trap, caught by the vCPU as a
  ``FirmwareCall``: docs/UNICORN.md U45), then ``retf 2`` (return, dropping the caller's FLAGS
  image: the service sets the live FLAGS from that image plus its CF/ZF, as SeaBIOS returns);
- the timer IRQ0 (int 08h): ``ud2`` (the tick is counted in the BDA), ``int 1Ch`` (the user
  hook), an EOI to the master PIC, ``iret``;
- int 1Ch: ``iret`` (the default user timer hook does nothing);
- int 19h (bootstrap): ``ud2`` (sector 0 is read to 0000:7C00), then ``jmp 0000:7C00``.

Vectors the firmware does not serve, the CPU exception vectors among them, stay 0000:0000: an
unhandled fault still ends the run with its one-line report instead of running a catch-all
``iret`` as SeaBIOS's does (docs/DEVICES.md, the firmware).

Follows: IBM PC/AT Technical Reference (IVT at 0, ROM at F0000); SeaBIOS ``src/post.c``
``ivt_init`` and ``src/romlayout.S`` (``entry_08``: count, ``int 1Ch``, EOI); Intel SDM vol. 2
(UD2 is ``0f 0b``, RETF imm16 ``ca iw``, JMP ptr16:16 ``ea``).

Leaves out: the reset vector at F000:FFF0, a ROM checksum, option ROMs. The ROM is read-only to
the guest (the machine protects it: docs/UNICORN.md U46), where a PC would ignore writes.

Guest controls: the IVT (RAM), never the ROM's bytes; a ``ud2`` is a firmware call only at a
slot start in real mode, and then only for the vector that slot belongs to.
"""

from __future__ import annotations

import struct

from hv_emu.layout import (
    BOOT_SECTOR_ADDR,
    FIRMWARE_STUB_SIZE,
    FIRMWARE_STUBS,
    IVT_BASE,
    IVT_ENTRIES,
    PORT_PIC_MASTER,
    ROM_SEGMENT,
)
from hv_emu.memory.guest import GuestMemory

UD2 = b"\x0f\x0b"
_RETF_2 = b"\xca\x02\x00"
_IRET = b"\xcf"
_EOI = 0x20  # OCW2: non-specific end of interrupt

#: The vectors of the BIOS services (the ``ud2; retf 2`` stubs).
SERVICES = (0x10, 0x11, 0x12, 0x13, 0x15, 0x16, 0x18, 0x1A)
TIMER_VECTOR = 0x08
USER_TIMER_VECTOR = 0x1C
BOOTSTRAP_VECTOR = 0x19


def _timer_stub() -> bytes:
    # ud2; int 1Ch; push ax; mov al, EOI; out PIC, al; pop ax; iret
    return (UD2 + bytes((0xCD, USER_TIMER_VECTOR, 0x50, 0xB0, _EOI, 0xE6, PORT_PIC_MASTER,
                         0x58)) + _IRET)  # fmt: skip


def _bootstrap_stub() -> bytes:
    # ud2; jmp far 0000:7C00
    return UD2 + b"\xea" + struct.pack("<HH", BOOT_SECTOR_ADDR, 0)


def stubs() -> dict[int, bytes]:
    """Vector -> the code of its stub slot."""
    table = {vector: UD2 + _RETF_2 for vector in SERVICES}
    table[TIMER_VECTOR] = _timer_stub()
    table[USER_TIMER_VECTOR] = _IRET
    table[BOOTSTRAP_VECTOR] = _bootstrap_stub()
    return table


def stub_address(vector: int) -> int:
    """The linear address of ``vector``'s stub slot."""
    return FIRMWARE_STUBS + FIRMWARE_STUB_SIZE * vector


#: The linear addresses of all slot starts: a ``ud2`` at the n-th is a call of vector n.
STUB_SLOTS = range(FIRMWARE_STUBS, FIRMWARE_STUBS + FIRMWARE_STUB_SIZE * IVT_ENTRIES,
                   FIRMWARE_STUB_SIZE)  # fmt: skip


def install(mem: GuestMemory) -> None:
    """Write the ROM's stubs and the IVT: served vectors at their stubs, the rest 0000:0000."""
    table = stubs()
    mem.fill(FIRMWARE_STUBS, FIRMWARE_STUB_SIZE * IVT_ENTRIES, 0)
    ivt = bytearray(4 * IVT_ENTRIES)
    for vector, code in table.items():
        mem.write(stub_address(vector), code)
        offset = stub_address(vector) - (ROM_SEGMENT << 4)
        struct.pack_into("<HH", ivt, 4 * vector, offset, ROM_SEGMENT)
    mem.write(IVT_BASE, bytes(ivt))
