"""Build the Linux guest programs of ``asm/programs/linux/`` into static ELF executables.

Models: the whole toolchain for a tiny Linux program, from the project's own files only: the
source (``asm/programs/linux/<name>64.s`` with its ``#include`` lines expanded by
``programs.load_source``) is assembled by keystone at the address the code will have in the
executable, with the generated hypercall numbers and ports (``programs.generated_prelude``, as for
every program) in front, and wrapped into a one-segment ELF file by ``elf_writer``. No compiler or
linker is needed, and the same source gives the same bytes on every machine.

Follows: the x86-64 Linux system-call ABI (``asm/include/linux64.s``), the hypercall ABI
(``asm/include/hvabi.s``, ``docs/ABI.md``) and the psABI's conventional base address (0x400000).

Leaves out: 32-bit Linux programs (the only one shipped is 64-bit), parameters and blobs (the
program reads its update files at run time, from its arguments).

The user controls nothing but which program to build; the sources are the repository's.
"""

from __future__ import annotations

from guest_tool.assemble import AssemblyError, assemble
from guest_tool.elf_writer import code_address, write_executable
from guest_tool.programs import PROGRAMS_DIR, generated_prelude, load_source

#: The Linux programs' sources.
LINUX_ASM_DIR = PROGRAMS_DIR / "linux"
#: The update program: ``hvupdate UPDATE UPDATE.sig``.
HVUPDATE = "hvupdate"


def build_linux_program(name: str) -> bytes:
    """Assemble ``asm/programs/linux/<name>64.s`` into a static x86-64 ELF executable."""
    source = load_source(f"{name}64.s", asm_dir=LINUX_ASM_DIR)
    try:
        code = assemble(source.text, mode=64, address=code_address(64),
                        prelude=generated_prelude())
    except AssemblyError as exc:
        raise source.locate(exc) from None
    return write_executable(code, bits=64)


def build_hvupdate() -> bytes:
    """``hvupdate``: checks CPUID for hv-emu, reads UPDATE and UPDATE.sig, calls
    ``update_signatures`` with VMCALL and exits 0 (installed), 1 (refused), 2 (usage or file
    error) or 3 (no hv-emu hypervisor)."""
    return build_linux_program(HVUPDATE)
