"""A rig for differential tests against QEMU: run a guest of our own on ``qemu-system-x86_64`` in
TCG mode and read back what it printed on the debug console (port 0xE9, as hv-emu's), how it ended
(``isa-debug-exit``) and the disk images it wrote.

QEMU boots a guest the way a PC does: ``boot_disk`` is a raw image on the primary IDE channel whose
sector 0 SeaBIOS loads at 0000:7C00 (``-machine pc``), or ``kernel`` is a Multiboot image
(``-kernel``, loaded by QEMU's own Multiboot loader). ``drives`` attaches more raw images, on IDE
by default or on the q35 machine's ICH9 AHCI (``interface="ahci"``). A guest ends QEMU by writing a
byte V to port 0xF4: the process then exits with status 2V + 1 (``exit_value``).

Tests that use it are marked ``needs_qemu``: without the binary they skip and say why (`.ci/run`
installs Debian's ``qemu-system-x86``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-system-x86_64")
needs_qemu = pytest.mark.skipif(
    QEMU is None, reason="qemu-system-x86_64 is not installed (.ci/run installs qemu-system-x86)"
)
#: ``isa-debug-exit``'s port: a write of V ends QEMU with exit status V * 2 + 1.
EXIT_PORT = 0xF4
#: The debug console hv-emu and QEMU's ``-debugcon`` share (QEMU's default iobase).
DEBUGCON_PORT = 0xE9


@dataclass(frozen=True)
class Drive:
    """A raw image given to QEMU: on the machine's IDE (``ide``) or on an AHCI port (``ahci``)."""

    path: Path
    interface: str = "ide"
    index: int = 0


@dataclass(frozen=True)
class QemuRun:
    """What one QEMU process left: the debug console's bytes, its exit status and its stderr."""

    console: bytes
    status: int
    stderr: str

    @property
    def exit_value(self) -> int | None:
        """The byte the guest wrote to ``isa-debug-exit``, or None if it ended otherwise."""
        return (self.status - 1) // 2 if self.status % 2 == 1 and self.status > 0 else None


def qemu_command(
    console: Path,
    *,
    machine: str = "pc",
    boot_disk: Path | None = None,
    kernel: Path | None = None,
    drives: Sequence[Drive] = (),
    mem_mib: int = 32,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one run (see the module docstring)."""
    if QEMU is None:
        raise RuntimeError("qemu-system-x86_64 is not installed")
    cmd = [QEMU, "-machine", machine, "-accel", "tcg", "-m", str(mem_mib), "-display", "none",
           "-monitor", "none", "-serial", "none", "-parallel", "none", "-no-reboot",
           "-debugcon", f"file:{console}",
           "-device", f"isa-debug-exit,iobase={EXIT_PORT:#x},iosize=0x04"]  # fmt: skip
    all_drives = list(drives)
    if boot_disk is not None:
        all_drives.insert(0, Drive(boot_disk))
    for n, drive in enumerate(all_drives):
        if drive.interface == "ide":
            cmd += ["-drive", f"file={drive.path},format=raw,if=ide,index={drive.index}"]
        elif drive.interface == "ahci":
            if machine != "q35":
                raise ValueError("AHCI drives need -machine q35 (its ICH9 AHCI)")
            cmd += ["-drive", f"file={drive.path},format=raw,if=none,id=d{n}",
                    "-device", f"ide-hd,drive=d{n},bus=ide.{drive.index}"]  # fmt: skip
        else:
            raise ValueError(f"unknown drive interface {drive.interface!r}")
    if kernel is not None:
        cmd += ["-kernel", str(kernel)]
    return [*cmd, *extra]


def run_qemu(tmp: Path, *, timeout: float = 60.0, **options: object) -> QemuRun:
    """Run QEMU with ``qemu_command``'s ``options`` until the guest ends it (or ``timeout``
    seconds pass: a failure of the guest, raised as ``subprocess.TimeoutExpired``)."""
    console = tmp / "qemu-debugcon.out"
    console.write_bytes(b"")
    cmd = qemu_command(console, **options)  # type: ignore[arg-type]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                          check=False)  # fmt: skip
    return QemuRun(console.read_bytes(), proc.returncode, proc.stderr.decode(errors="replace"))
