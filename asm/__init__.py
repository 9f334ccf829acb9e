"""The guest programs' assembly sources, installed as the package ``guest_tool.asm``.

Models: nothing that runs: this file only makes ``asm/`` a package so that ``pyproject.toml`` can
install the tree inside the wheel (``package-dir``) and ``guest_tool.programs`` can find it with
``importlib.resources``, from a checkout and from an installed wheel alike. ``include/`` holds the
files programs ``#include`` (the ABI constants ``hvabi.s``, print routines, the ATA and NIC
drivers); ``programs/`` the programs ``guest-tool build --program NAME`` assembles.

The guest controls nothing here: these are the sources of programs the user chooses to build.
"""
