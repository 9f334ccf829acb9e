"""The firmware's trap (docs/UNICORN.md U45): a ``ud2`` at a ROM stub slot in real mode is a
firmware call; a ``ud2`` anywhere else is the guest's #UD, as before."""

from __future__ import annotations

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.exits import Fault, Halt
from hv_emu.firmware import rom
from hv_emu.machine import Machine, MachineConfig
from tests.conftest import Boot


def test_the_ivt_points_served_vectors_at_their_stubs_and_leaves_the_rest_zero(
    boot: Boot,
) -> None:
    machine, _ = boot("hlt", mode=16)
    ivt = machine.mem.read(layout.IVT_BASE, 4 * layout.IVT_ENTRIES)
    for vector in range(layout.IVT_ENTRIES):
        offset = int.from_bytes(ivt[4 * vector : 4 * vector + 2], "little")
        segment = int.from_bytes(ivt[4 * vector + 2 : 4 * vector + 4], "little")
        if vector in rom.stubs():
            assert (segment << 4) + offset == rom.stub_address(vector)
            assert machine.mem.read(rom.stub_address(vector), len(rom.stubs()[vector])) == \
                rom.stubs()[vector]
        else:  # CPU exceptions and unserved vectors: no handler, the fault report stays
            assert (segment, offset) == (0, 0), hex(vector)


def test_a_ud2_at_a_stub_slot_is_a_firmware_call_every_time(boot: Boot) -> None:
    """50 calls of int 10h's stub by ``pushf; call far [0:40h]``: each one prints."""
    machine, result = boot("""
        mov cx, 50
    again:
        mov ax, 0x0e2a
        pushf
        lcall [0x40]
        loop again
        hlt
    """, mode=16)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.firmware is not None and machine.firmware.calls == 50
    assert "".join(machine.vga.read_screen()).count("*") == 50


def test_a_ud2_anywhere_else_is_still_a_ud_fault(boot: Boot) -> None:
    _, result = boot("nop\n ud2", mode=16)
    assert isinstance(result.exit, Fault)
    assert result.exit.vector == 6 and result.exit.rip == 0x7C01


def test_a_ud2_in_a_32_bit_guest_at_a_stub_address_is_a_ud_fault(boot: Boot) -> None:
    # The ROM is real-mode only: the same linear address in protected mode is the guest's code.
    _, result = boot(f"mov dword ptr [{rom.stub_address(0x10):#x}], 0x00000b0f\n"
                     f" mov eax, {rom.stub_address(0x10):#x}\n jmp eax", mode=32)
    assert isinstance(result.exit, Fault) and result.exit.vector == 6


def test_a_ud2_at_an_unserved_slot_is_reported_not_served() -> None:
    """The ROM is read-only to the guest (below): a ud2 at the slot of a vector the firmware
    does not serve, put there by the host, is a firmware call nobody answers: a fault report."""
    slot = rom.stub_address(0x20)
    m = Machine(MachineConfig(timeout=5.0))
    m.load(assemble(f"""
        pushf
        lcall [target]
        hlt
    target: .word {slot & 0xF:#x}, {slot >> 4:#x}
    """, mode=16, address=layout.BOOT_SECTOR_ADDR), mode=16)
    m.mem.write(slot, rom.UD2)
    result = m.run()
    assert isinstance(result.exit, Fault)
    assert "INT 0x20" in result.exit.kind


def test_an_image_loaded_over_the_ivt_wins() -> None:
    """The firmware is installed before the image: a 16-bit image at 0 keeps its bytes."""
    m = Machine(MachineConfig(timeout=5.0))
    image = b"\x90" * 0x500 + b"\xf4"
    m.load(image, mode=16, load=0, entry=0x500)
    assert m.mem.read(0, 0x501) == image
    assert m.run().halted


def test_a_guest_handler_chains_to_the_bios_with_pushf_call_far(boot: Boot) -> None:
    """A TSR-style hook of int 10h: it counts the calls, then passes each one on to the old
    vector with ``pushf; call far [old]``, which lands on the firmware's stub and returns."""
    machine, result = boot("""
        xor ax, ax
        mov ds, ax
        mov ax, [0x40]
        mov [old], ax
        mov ax, [0x42]
        mov [old + 2], ax
        mov word ptr [0x40], hook
        mov word ptr [0x42], 0
        mov ax, 0x0e48
        int 0x10
        mov al, 'i'
        int 0x10
        mov al, [count]
        out 0xe9, al
        hlt
    hook:
        inc byte ptr cs:[count]
        pushf
        lcall cs:[old]
        iret
    old: .word 0, 0
    count: .byte '0'
    """, mode=16)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.vga.read_screen()[0][:2] == "Hi"
    assert machine.debugcon.text() == "2"


def test_the_rom_is_read_only_to_the_guest_and_only_in_16_bit_runs() -> None:
    m = Machine(MachineConfig(timeout=5.0))
    m.load(assemble(f"""
        mov ax, {layout.ROM_SEGMENT:#x}
        mov ds, ax
        mov byte ptr [0x1100], 0x90     # over int 10h's stub
        hlt
    """, mode=16, address=layout.BOOT_SECTOR_ADDR), mode=16)
    result = m.run()
    assert isinstance(result.exit, Fault)
    assert result.exit.kind == "write to read-only memory"
    assert result.exit.address == layout.ROM_BASE + 0x1100
    assert m.mem.read(rom.stub_address(0x10), 2) == rom.UD2  # the stub is intact
    # The hypervisor still writes there (a new 16-bit load reinstalls the ROM); a 32-bit guest
    # on the same machine has plain RAM at that address.
    m.load(assemble(f"mov byte ptr [{layout.ROM_BASE + 0x1100:#x}], 0x90\n hlt", mode=32,
                    address=layout.DEFAULT_LOAD), mode=32)  # fmt: skip
    assert m.run().halted
    assert m.mem.read_u8(layout.ROM_BASE + 0x1100) == 0x90


def test_post_leaves_the_pic_at_08h_70h_and_the_pit_at_18_2_hz(boot: Boot) -> None:
    machine, _ = boot("cli\n hlt", mode=16)
    master, slave = machine.pic.master, machine.pic.slave
    assert (master.vector_base, master.imr) == (0x08, 0xFA)
    assert (slave.vector_base, slave.imr) == (0x70, 0xFF)
    counter = machine.pit.counters[0]
    assert counter.mode == 3 and counter.count == 0x10000
    assert machine.pit.next_deadline() is not None  # counting: a count was written
