"""The interpreter of a dynamically linked program: ``ld.so``, found in the sysroot and parsed.

Models: what Linux's ``load_elf_binary`` does with ``PT_INTERP``: open the named file (here
inside the ``--sysroot`` directory, walked as in a ``chroot`` by ``linux/sysroot.py``, so
neither ``..`` nor a symbolic link leads out of it), read it, and check it is an ELF shared object
of the program's class that does not name an interpreter itself. ``elf_process.py`` then copies
its segments into the process and starts the process at its entry, with ``AT_BASE`` saying where
it is (``linux/startup.py``).

Follows: ``fs/binfmt_elf.c`` (``load_elf_binary``, ``load_elf_interp``: ``ENOEXEC`` for an
interpreter of another class or that is not an ELF file), chroot(2).

Leaves out: ``binfmt_misc``, ``#!`` scripts as interpreters, an interpreter that is
``ET_EXEC`` (Linux maps one at its fixed addresses; none does that today).

Guest controls: nothing (this runs before the first instruction). The user controls the sysroot and
the program's file, which names the path (``PT_INTERP``, checked by ``elf_file.py``). A missing
sysroot, a path that leads nowhere or a file larger than ``MAX_INTERP_BYTES`` is an ``ImageError``
naming it, before anything is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from hv_emu.errors import ImageError
from hv_emu.linux.refusals import SyscallError
from hv_emu.linux.sysroot import HostTree
from hv_emu.loaders.elf_file import ElfImage, ElfType, parse_elf

#: Largest interpreter read (glibc's ``ld.so`` is about 200 KiB).
MAX_INTERP_BYTES = 16 << 20


def load_interpreter(program: ElfImage, sysroot: Path | None) -> ElfImage:
    """Read and parse the interpreter ``program`` names, from inside ``sysroot``."""
    path = program.interp
    if path is None:
        raise ValueError("the program names no interpreter")
    if sysroot is None:
        raise ImageError(f"the program is dynamically linked: its loader {path} and libraries "
                         f"must come from a --sysroot DIR (for the host's own: --sysroot /), "
                         f"or link it with -static")  # fmt: skip
    try:
        found = HostTree(sysroot).open(path)
    except SyscallError as err:
        raise ImageError(f"the program's loader {path} is not in --sysroot {sysroot}: "
                         f"{err.reason}") from None  # fmt: skip
    try:
        if found.is_dir:
            raise ImageError(f"the program's loader {path} is a directory in {sysroot}")
        data = os.read(found.fd, MAX_INTERP_BYTES + 1)
    except OSError as err:
        raise ImageError(f"cannot read the program's loader {path}: {err.strerror}") from None
    finally:
        os.close(found.fd)
    if len(data) > MAX_INTERP_BYTES:
        raise ImageError(f"the program's loader {path} is larger than {MAX_INTERP_BYTES} bytes")
    interp = parse_elf(data)
    if interp.bits != program.bits or interp.type != ElfType.DYN or interp.interp is not None:
        raise ImageError(f"the program's loader {path} is not an ELF{program.bits} shared "
                         "object without an interpreter of its own")  # fmt: skip
    return interp
