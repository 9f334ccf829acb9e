"""The firmware: hv-emu's own small PC BIOS for real-mode guests (no third-party ROM).

Models: what a PC's system BIOS leaves a boot sector: the interrupt vector table, the BIOS data
area, a ROM whose stubs serve int 10h (video), 13h (disk), 15h (system), 11h, 12h, 16h, 1Ah and
19h/18h, the timer's int 08h, and the boot itself (``hv-emu run --boot DISK.img``). Every service
is Python behind one hypervisor-owned trap: a ``ud2`` at the start of a ROM stub slot
(``rom.py``), caught by the vCPU as a ``FirmwareCall`` exit and answered by ``bios.py``.

Modules: ``rom.py`` (the ROM image and the IVT), ``bda.py`` (the BIOS data area), ``frame.py``
(a call's registers and the flags it returns), ``video.py`` (int 10h), ``geometry.py`` (the CHS
geometry QEMU's firmware reports), ``ata_pio.py`` (the disk driven through the ATA ports),
``disk.py`` (int 13h), ``memory_map.py`` (E820, E801, int 12h), ``system.py`` (int 11h, 15h,
16h, 1Ah, 18h, 19h), ``post.py`` (the PIC and the PIT at boot), ``bios.py`` (install at
boot, dispatch a call, boot a disk).

Follows: IBM PC/AT Technical Reference (IVT, BDA), Ralf Brown's Interrupt List (the services'
registers), SeaBIOS (``src/disk.c``, ``src/system.c``, ``vgasrc/vgabios.c``, ``src/boot.c``) for
what QEMU's firmware answers, which the differential tests compare (docs/DEVICES.md, the
firmware).

Leaves out: floppies, CD-ROM emulation, keyboard input, serial and printer services, APM, PCI
BIOS, VESA, the protected-mode services of int 15h.

Guest controls: every register of every call, the buffers they point at, and all of RAM
including the IVT and the BDA; not the ROM, which is read-only to it (docs/DEVICES.md).
"""
