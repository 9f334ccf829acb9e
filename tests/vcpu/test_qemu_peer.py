"""The QEMU rig itself, against hv-emu: the same boot sector prints the same bytes on the debug
console of both machines (the ground the differential tests of devices and firmware stand on)."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.testing import Hypervisor
from tests.rigs.qemu import EXIT_PORT, needs_qemu, run_qemu

SOURCE = f"""
    mov si, msg
next:
    lodsb
    test al, al
    jz done
    out {layout.PORT_DEBUGCON:#x}, al
    jmp next
done:
    mov al, 7
    out {EXIT_PORT:#x}, al
    hlt
msg: .asciz "same on both\\n"
"""


def boot_sector() -> bytes:
    code = assemble(SOURCE, mode=16, address=layout.DEFAULT_LOAD_REAL)
    return code.ljust(510, b"\0") + b"\x55\xaa"


@needs_qemu
def test_a_boot_sector_prints_the_same_on_qemu_and_hv_emu(tmp_path: Path) -> None:
    disk = tmp_path / "boot.img"
    disk.write_bytes(boot_sector() + bytes(64 * 512))
    qemu = run_qemu(tmp_path, boot_disk=disk)
    assert qemu.exit_value == 7, qemu
    hv = Hypervisor()
    try:
        run = hv.run_image(boot_sector(), mode=16)
    finally:
        hv.close()
    assert run.halted
    assert run.output.encode() == qemu.console == b"same on both\n"
