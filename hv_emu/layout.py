"""The guest's address map and I/O port map: every fixed number in one file.

Models: the physical layout of a small PC as hv-emu presents it, and where the loader puts the
structures a guest needs before its first instruction (GDT, identity page tables, stack).

Follows: Firecracker's ``arch/x86_64/layout.rs`` (every fixed address in one place, each with its
source). PC conventions: IBM PC/AT I/O map, Bochs/QEMU debug console, VGA text buffer.

Leaves out: ACPI tables, a PCI hole allocator (the one MMIO window, the AHCI ABAR, has a fixed
address).

Guest controls: nothing here; the guest may of course overwrite any RAM, including the loader's
structures, once it runs.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
PAGE_SIZE = 4 * KIB

# ----------------------------------------------------------------------------------- memory
#: Default guest RAM (``hv-emu run --mem``), in MiB. RAM is one block at guest-physical 0.
DEFAULT_MEM_MIB = 64
#: Smallest RAM a guest may ask for: the loader's structures live below 1 MiB.
MIN_MEM_MIB = 2
#: Largest RAM: one mmap, and identity maps built with 2 MiB pages up to 4 GiB.
MAX_MEM_MIB = 4096

#: Where a flat image goes by default in 32- and 64-bit mode (the 1 MiB mark, above legacy holes).
DEFAULT_LOAD = 0x100000
#: Where a flat 16-bit image goes by default: the BIOS boot-sector address (IBM PC convention).
DEFAULT_LOAD_REAL = 0x7C00
#: End (exclusive) of a real-mode image: conventional memory ends at the EBDA/VGA hole.
REAL_MODE_IMAGE_END = 0xA0000

#: The loader's own structures (guests may reuse the memory once they run).
GDT_ADDR = 0x0800  # flat GDT: null, code32, data, code64 (selectors below)
PAGE_TABLES_ADDR = 0x10000  # identity page tables (PML4 / PDPT / PDs, or 32-bit PD / PAE PDPT)
PAGE_TABLES_END = 0x20000  # exclusive; room for 4 GiB of 2 MiB pages in long mode
#: Initial stack pointer for 32/64-bit guests: just below the VGA/BIOS hole.
STACK_TOP = 0x9F000
#: Initial stack pointer for real-mode guests (SS = 0): just below the boot sector.
STACK_TOP_REAL = 0x7C00

# ------------------------------------------------------------- Linux user-mode programs (ELF)
#: Guest-physical RAM handed out to an ELF program's segments, stack, heap and mmap arena, from
#: the 1 MiB mark up (below it: the loader's GDT and page tables).
ELF_PHYS_BASE = 0x100000
#: Conventional load addresses of non-PIE executables (psABI): where ``guest-tool build
#: --format linux-elf`` puts the file's first byte (guest-virtual).
LINUX_IMAGE_BASE = {64: 0x40_0000, 32: 0x0804_8000}
#: Top of the initial stack (exclusive), as Linux places it: the end of the user address space
#: (x86-64: 2^47 minus a guard page; i386 with the 3G/1G split: 0xC0000000).
LINUX_STACK_TOP = {64: 0x7FFF_FFFF_F000, 32: 0xC000_0000}
#: Size of the mapped stack (Linux grows it on demand up to RLIMIT_STACK; hv-emu maps it whole).
LINUX_STACK_SIZE = 1 * MIB
#: Where anonymous mmap() regions start (Linux's TASK_UNMAPPED_BASE: 1 GiB on i386 = TASK_SIZE/3;
#: x86-64 uses the top of the address space, here a fixed 0x7F00_0000_0000).
LINUX_MMAP_BASE = {64: 0x7F00_0000_0000, 32: 0x4000_0000}
#: The load bias of a position-independent program (``ET_DYN``), Linux's ``ELF_ET_DYN_BASE``
#: without randomisation (``arch/x86/include/asm/elf.h``: x86-64 ``DEFAULT_MAP_WINDOW / 3 * 2``
#: page-aligned, i386 0x400000); its interpreter goes to the start of the mmap arena.
LINUX_DYN_BASE = {64: 0x5555_5555_4000, 32: 0x0040_0000}

#: The GDT of a Linux process (at ``GDT_ADDR``): the loader's four entries, two unused, then the
#: three i386 thread-local-storage slots, entries 6-8 as an i386 kernel numbers them
#: (``GDT_ENTRY_TLS_MIN`` = 6, ``linux/numbers.py``), which ``set_thread_area`` fills.
LINUX_GDT_ENTRIES = 9
#: Where a 32-bit Linux process sees the page holding its GDT: the GDTR base is a linear address,
#: read through the page tables when a selector is loaded (docs/UNICORN.md U38), so the page is
#: mapped (supervisor-only, writable for the accessed bit) in the kernel's quarter of the address
#: space, above the stack, where Linux keeps its own GDT out of the program's reach.
LINUX_GDT_PAGE = 0xFFC0_0000

# ------------------------------------------------------------------ firmware (16-bit runs)
#: The real-mode interrupt vector table (256 far pointers, offset then segment) and the BIOS data
#: area after it (IBM PC/AT Technical Reference; docs/DEVICES.md, the firmware).
IVT_BASE = 0x0000
IVT_ENTRIES = 256
BDA_BASE = 0x0400
#: The extended BIOS data area: 1 KiB below 640 KiB, as SeaBIOS leaves it (base memory 639 KiB).
EBDA_BASE = 0x9FC00
#: The firmware ROM: the last 64 KiB below 1 MiB, segment F000 (IBM PC/AT system BIOS).
ROM_BASE = 0xF0000
ROM_SIZE = 0x10000
ROM_SEGMENT = 0xF000
#: The firmware's stub table inside the ROM: one slot per vector, the BIOS's ``ud2`` at its start.
FIRMWARE_STUBS = 0xF1000
FIRMWARE_STUB_SIZE = 16
#: Where a boot sector is loaded and entered (0000:7C00), and the BIOS drive number it gets in DL.
BOOT_SECTOR_ADDR = 0x7C00
BOOT_DRIVE = 0x80

#: VGA text-mode buffer (80x25 cells of character + attribute), IBM VGA.
VGA_TEXT_BASE = 0xB8000
VGA_TEXT_COLS = 80
VGA_TEXT_ROWS = 25

# ---------------------------------------------------------------------------------- selectors
#: Selectors of the loader's flat GDT (Intel SDM vol. 3A, 3.4.5).
SEL_CODE32 = 0x08
SEL_DATA = 0x10
SEL_CODE64 = 0x18

# ----------------------------------------------------------------------------------- I/O ports
#: Bochs/QEMU debug console: bytes written here go to hv-emu's standard output.
PORT_DEBUGCON = 0xE9
#: Primary ATA channel, command block (IBM PC/AT) and control block.
PORT_ATA_PRIMARY = 0x1F0
PORT_ATA_PRIMARY_LEN = 8
PORT_ATA_PRIMARY_CTRL = 0x3F6
#: PCI configuration mechanism #1 (PCI Local Bus spec 3.0, 3.2.2.3.2).
PORT_PCI_CONFIG_ADDRESS = 0xCF8
PORT_PCI_CONFIG_DATA = 0xCFC
#: Bus-master IDE registers (BAR4 of the IDE function), hv-emu's default.
PORT_BUSMASTER = 0xC000
PORT_BUSMASTER_LEN = 16
#: The guest's network card (hv-emu's own polled NIC, docs/DEVICES.md), just above the bus master.
PORT_NIC = 0xC100
PORT_NIC_LEN = 32

#: The colour VGA's CRT controller index port (IBM VGA): not modelled, but the BDA names it.
PORT_VGA_CRTC = 0x3D4
#: The 8259A pair (IBM PC/AT): master command/data, slave command/data.
PORT_PIC_MASTER = 0x20
PORT_PIC_SLAVE = 0xA0
PORT_PIC_LEN = 2
#: The 8254 PIT: counters 0-2 and the control word (IBM PC/AT).
PORT_PIT = 0x40
PORT_PIT_LEN = 4
#: System control port B: PIT counter 2's gate (bit 0) and output (bit 5), the speaker.
PORT_SYSTEM_CONTROL_B = 0x61

# ---------------------------------------------------------------------------------- IRQ lines
#: PIC inputs (IBM PC/AT): the PIT's counter 0, the primary ATA channel, and hv-emu's NIC on
#: IRQ 10, a line the PC/AT leaves free for add-in cards.
IRQ_PIT = 0
IRQ_ATA_PRIMARY = 14
IRQ_NIC = 10
#: The AHCI controller's INTA (``--disk-controller ahci``), routed to IRQ 11 as SeaBIOS routes a
#: q35 machine's PIRQ lines (10 and 11 are the PC/AT's free ones; 10 is the NIC's); PCI
#: configuration register 0x3C of 00:1f.2 says so, as after firmware.
IRQ_AHCI = 11

#: The AHCI controller's register window (BAR5 of 00:1f.2, ``--disk-controller ahci``): 4 KiB
#: in the PCI hole below 4 GiB, where SeaBIOS puts QEMU q35's ICH9 AHCI ABAR (docs/STORAGE.md).
AHCI_ABAR = 0xFEBF0000
AHCI_ABAR_LEN = 0x1000

#: I/O ports are 16-bit (Intel SDM vol. 1, 18.3).
PORT_SPACE = 0x10000

# ---------------------------------------------------------------------------------- network
#: The hypervisor's MAC: QEMU's locally administered 52:54:00 prefix, "c0ffee" tail. QEMU gives
#: guests 52:54:00:12:34:56 and up, so this does not collide with a default guest NIC.
HV_MAC = bytes.fromhex("525400c0ffee")
#: The hypervisor's IPv4 address (RFC 1918; outside QEMU user-net's 10.0.2.0/24 DHCP pool).
HV_IPV4 = "10.0.2.250"
#: The UDP port of signature updates ("HVDB" port: 0xDB00, RFC 6335 dynamic range).
UPDATE_UDP_PORT = 0xDB00
#: The guest NIC's MAC: QEMU's first default guest MAC (``-nic`` without ``mac=``).
GUEST_MAC = bytes.fromhex("525400123456")
#: Limited broadcast (RFC 919): the carousel may be sent there; consumed like the hypervisor's IP.
BROADCAST_IPV4 = "255.255.255.255"
#: ``guest-tool push``'s side of the frames it sends: any values do, the receiver does not look at
#: them. A locally administered MAC, QEMU user-net's gateway address, the port after the update's.
PUSH_SENDER_MAC = bytes.fromhex("020000db0001")
PUSH_SENDER_IPV4 = "10.0.2.2"
PUSH_SENDER_UDP_PORT = 0xDB01
