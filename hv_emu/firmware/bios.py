"""The BIOS: put the firmware in place at boot, answer its calls, boot a disk.

Models: a PC's system BIOS as seen from the VMM: at reset of a 16-bit run ``install`` writes the
ROM stubs, the IVT and the BDA (``rom.py``, ``bda.py``) and programs the PIC and the PIT
(``post.py``); each ``FirmwareCall`` exit (the ``ud2``
of a stub) is answered by the service of its vector, returning registers and the caller's FLAGS
image with CF/ZF set (``frame.py``); ``load_boot_sector`` is the bootstrap (int 19h, and
``hv-emu run --boot``): sector 0 read through the ATA controller to 0000:7C00, refused unless it
ends in 55h AAh.

Follows: SeaBIOS ``src/boot.c`` (``boot_disk``: the 55 AA check on hard disks, entry at
0000:7C00 with DL = the boot drive), ``src/post.c`` (what POST sets up); Ralf Brown's Interrupt
List, INT 18 and INT 19.

Leaves out: a boot menu, boot order, floppies and CD-ROMs, option ROMs, a second try: int 18h
("no bootable device") ends the run, as does int 19h when sector 0 is not bootable.

Guest controls: which vector it calls (a ``ud2`` at an unserved slot is an unhandled exit: a
fault report), the registers and memory each service reads.
"""

from __future__ import annotations

from hv_emu.bus import PortIoBus
from hv_emu.devices.vga import VgaText
from hv_emu.exits import RESUME, FirmwareCall, Handled, Outcome, Stopped, Unhandled
from hv_emu.firmware import bda, rom
from hv_emu.firmware.ata_pio import SECTOR, AtaError, AtaPio
from hv_emu.firmware.disk import DiskServices
from hv_emu.firmware.frame import Regs, Reply, returned_flags
from hv_emu.firmware.memory_map import MemoryServices
from hv_emu.firmware.post import program_interrupt_hardware
from hv_emu.firmware.system import SystemServices
from hv_emu.firmware.video import Video
from hv_emu.layout import BOOT_DRIVE, BOOT_SECTOR_ADDR
from hv_emu.memory.guest import GuestMemory

BOOT_SIGNATURE = b"\x55\xaa"
NO_ROM_BASIC = "int 18h: no bootable device (there is no ROM BASIC to fall back to)"


class Bios:
    """The firmware of one machine: RAM, the screen, and the disk on ``bus`` if ``sectors``."""

    def __init__(self, mem: GuestMemory, screen: VgaText, bus: PortIoBus,
                 sectors: int | None) -> None:  # fmt: skip
        self.mem, self.bus = mem, bus
        self.pio = AtaPio(bus) if sectors is not None else None
        self.video = Video(mem, screen)
        self.disk = DiskServices(mem, self.pio, sectors or 0)
        self.memory = MemoryServices(mem)
        self.system = SystemServices(mem, self.memory)
        self.services = {
            0x10: self.video.call, 0x11: self.system.int11, 0x12: self.memory.int12,
            0x13: self.disk.call, 0x15: self.system.int15, 0x16: self.system.int16,
            0x1A: self.system.int1a,
        }  # fmt: skip
        self.calls = 0  # firmware calls answered (for tests and the trace)

    def install(self) -> None:
        """The ROM stubs, the IVT and the BDA, the PIC pair and the PIT, as POST leaves them."""
        rom.install(self.mem)
        bda.install(self.mem, hard_disks=0 if self.pio is None else 1)
        program_interrupt_hardware(self.bus)

    def load_boot_sector(self) -> str | None:
        """Read sector 0 through the controller to 0000:7C00; why it is not bootable, or None."""
        if self.pio is None:
            return "no bootable device: there is no disk"
        try:
            sector = self.pio.read(0, 1)
        except AtaError as err:
            return f"no bootable device: reading sector 0 failed ({err})"
        if sector[SECTOR - 2 :] != BOOT_SIGNATURE:
            return "no bootable device: sector 0 does not end in 55 AA"
        self.mem.write(BOOT_SECTOR_ADDR, sector)
        return None

    def handle(self, call: FirmwareCall) -> Outcome:
        """The answer to one firmware call (dispatch's handler for ``FirmwareCall``)."""
        self.calls += 1
        vector = call.vector
        if vector == rom.TIMER_VECTOR:
            self.system.tick()
            return RESUME
        if vector == 0x18:
            return Stopped(NO_ROM_BASIC)
        if vector == rom.BOOTSTRAP_VECTOR:
            why = self.load_boot_sector()
            if why is not None:
                return Stopped(f"int 19h: {why}")
            return Handled({"rdx": BOOT_DRIVE})  # the stub jumps to 0000:7C00
        service = self.services.get(vector)
        if service is None:
            return Unhandled(f"firmware call at the stub of INT {vector:#x}, which it does "
                             f"not serve")  # fmt: skip
        reply = service(Regs(call.registers))
        return self._outcome(call, reply)

    def _outcome(self, call: FirmwareCall, reply: Reply) -> Outcome:
        if reply.stop is not None:
            return Stopped(reply.stop)
        flags = returned_flags(self.mem, call.registers, reply)
        live = call.registers.get("rflags", 0x2)
        registers = dict(reply.registers)
        registers["rflags"] = (live & ~0xFFFF) | flags
        return Handled(registers)

