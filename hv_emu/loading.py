"""Putting a guest into a built machine: a flat image, a disk boot, or an ELF program.

Models: the VMM's loading step, after the composition root (``machine.py``) has built the
machine: Firecracker's ``load_kernel`` / QEMU's ``-kernel`` and ``-bios`` paths. A flat image
goes to RAM with the CPU state its mode needs (``loaders/flat.py``); a 16-bit run gets
hv-emu's BIOS first (``firmware/``: its tables, its ROM read-only, its services in dispatch); a
disk boot has the BIOS read sector 0 through the ATA controller and enters it as SeaBIOS does;
an ELF program becomes a Linux process (``loaders/``, ``linux/``) whose system calls and CPU
exceptions go to the Linux personality. Each path ends with the vCPU reset to the boot state.

Follows: docs/ARCHITECTURE.md (the run loop, step 3), docs/DEVICES.md (the firmware),
docs/ELF.md; SeaBIOS's hand-over to a boot sector (DL = boot drive, AX = AA55h, IF = 1).

Leaves out: multiboot, bzImage, option ROMs, more than one program per machine.

Guest controls: the image's bytes (the loaders bound and check them; a bad one is an
``ImageError``), the boot sector's signature, an ELF file's headers and its interpreter's name.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from hv_emu import layout
from hv_emu.errors import ConfigError, ImageError
from hv_emu.firmware.bios import Bios
from hv_emu.firmware.rom import STUB_SLOTS
from hv_emu.linux.files import FileTable
from hv_emu.linux.startup import build_initial_stack
from hv_emu.linux.syscalls import LinuxProcess
from hv_emu.loaders.elf_file import parse_elf
from hv_emu.loaders.elf_process import load_elf
from hv_emu.loaders.flat import load_flat
from hv_emu.loaders.interp import load_interpreter
from hv_emu.memory.boot import BootState

if TYPE_CHECKING:
    from hv_emu.machine import Machine


def load_flat_image(machine: Machine, image: bytes, *, mode: int = 64, load: int | None = None,
                    entry: int | None = None, paging: str = "none") -> BootState:  # fmt: skip
    """Load a flat image and put the vCPU at its entry point. A 16-bit image gets the
    firmware first (IVT, BDA, ROM: ``firmware/``), so an image loaded over them wins."""
    if mode == 16:
        install_firmware(machine)
    else:
        machine.vcpu.firmware_stubs = None
        machine.vcpu.set_read_only(None)
    machine.boot = load_flat(machine.mem, image, mode=mode, load=load, entry=entry, paging=paging)
    machine.vcpu.reset(machine.boot)
    return machine.boot


def install_firmware(machine: Machine) -> Bios:
    """The BIOS of a 16-bit run: its tables in RAM, its stubs' traps on, its services in
    dispatch."""
    sectors = None if machine.disk is None else machine.disk.sector_count
    bios = Bios(machine.mem, machine.vga, machine.bus, sectors)
    bios.install()
    machine.firmware = bios
    machine.vcpu.firmware_stubs = STUB_SLOTS
    # The ROM is read-only to the guest, as a PC's is (docs/UNICORN.md U46).
    machine.vcpu.set_read_only(range(layout.ROM_BASE, layout.ROM_BASE + layout.ROM_SIZE))
    machine.handlers = replace(machine.handlers, firmware=bios.handle)
    return bios


def boot_from_disk(machine: Machine) -> BootState:
    """Boot the disk on the primary channel as a PC does (``hv-emu run --boot``): the
    firmware reads its sector 0 through the controller to 0000:7C00 and, if it ends in
    55 AA, enters it in real mode with DL = 80h (docs/DEVICES.md, the firmware)."""
    if machine.disk is None:
        raise ConfigError("--boot needs a disk on the primary channel")
    bios = install_firmware(machine)
    why = bios.load_boot_sector()
    if why is not None:
        raise ImageError(f"{machine.disk.path}: {why}")
    machine.boot = BootState(mode=16, entry=layout.BOOT_SECTOR_ADDR,
                             stack=layout.STACK_TOP_REAL, paging=None)  # fmt: skip
    vcpu = machine.vcpu
    vcpu.reset(machine.boot)
    # SeaBIOS's hand-over: DL = the boot drive, AX = AA55h, interrupts on.
    vcpu.set_reg("rdx", layout.BOOT_DRIVE)
    vcpu.set_reg("rax", 0xAA55)
    vcpu.set_reg("rflags", 0x202)
    return machine.boot


def load_elf_program(machine: Machine, image: bytes, *, argv: Sequence[str],
                     env: Sequence[str] = (),
                     files: FileTable | None = None) -> LinuxProcess:  # fmt: skip
    """Load an ELF executable as a Linux process (docs/ELF.md): its address space (and its
    interpreter, from ``files.sysroot``, else ``config.sysroot``, if it names one), its
    start-up stack, and the Linux personality on ``syscall`` (ELF64) or ``int 0x80`` (ELF32)."""
    files = files or FileTable(sysroot=machine.config.sysroot)
    files.wait_with(machine.vcpu.stopping.wait_readable)  # --timeout, Ctrl-C end a blocked read
    elf = parse_elf(image)
    interp = load_interpreter(elf, files.sysroot) if elf.interp is not None else None
    process = load_elf(machine.mem, elf, interp)
    hwcap = machine.cpuid.features[3]  # AT_HWCAP: CPUID.1:EDX, as Linux passes it
    stack = build_initial_stack(machine.mem, process, argv, env, hwcap=hwcap)
    exe = posixpath.normpath(posixpath.join("/", argv[0])) if argv else ""
    linux = LinuxProcess(machine.mem, process, files, machine.events,
                         selectors=machine.vcpu.selectors, exe=exe)  # fmt: skip
    machine.linux = linux
    if process.bits == 64:
        machine.set_syscall_handler(linux.on_syscall)
    else:
        machine.interrupts[0x80] = linux.on_int80
    # CPU exceptions become the program's signals (SIGSEGV, SIGILL...: docs/ELF.md).
    machine.handlers = replace(machine.handlers, exception=linux.on_exception)
    machine.vcpu.offer_exceptions = True
    machine.boot = replace(process.boot, stack=stack.sp)
    machine.vcpu.reset(machine.boot)
    return linux
