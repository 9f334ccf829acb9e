"""Loaders: put a guest image into RAM and say how the CPU starts.

Models: what firmware or a kernel's ``execve`` does before the first instruction: a flat image at
a fixed address with a GDT and identity page tables (``flat``), a strict ELF parser (``elf_file``),
the address space of an ELF process (``elf_process``) and a dynamically linked program's
interpreter, read from the sysroot (``interp``).

Follows: the System V ABI and its x86-64 / i386 supplements for ELF (see each module). Leaves out:
relocation (the interpreter does it), a BIOS. The user controls the image; a hostile image is
refused with an ``ImageError`` naming the field.
"""
