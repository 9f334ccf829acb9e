"""Helpers for the firmware's tests: a machine with the BIOS installed (and a disk, a database),
a firmware call made by hand, and boot sectors assembled at 0000:7C00."""

from __future__ import annotations

from pathlib import Path

from guest_tool.assemble import assemble
from guest_tool.programs import macro_prelude
from hv_emu import layout
from hv_emu.exits import FirmwareCall, Handled, Outcome
from hv_emu.firmware.frame import CF, ZF
from hv_emu.machine import Machine, MachineConfig

#: A 17-byte body signature, as in the storage tests.
SIG = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")
NDB = f"Test.Sig:0:*:{SIG.hex()}\n"
#: Where the tests' calls keep their stack (SS=0): the caller's FLAGS image is at SP+4.
SP = 0x6F00


def machine(tmp_path: Path, disk: bytes | None = None, *, db: bool = False,
            actions: tuple[str, ...] = ("warn", "zero-fill"), mem_mib: int = 32,
            timeout: float = 10.0) -> Machine:  # fmt: skip
    """A machine with ``disk`` (bytes, written to a file) on the primary channel, the firmware
    installed (a 16-bit image of one HLT is loaded)."""
    path = None
    if disk is not None:
        path = tmp_path / "disk.img"
        path.write_bytes(disk)
    sigs = None
    if db:
        sigs = tmp_path / "test.ndb"
        sigs.write_text(NDB)
    m = Machine(MachineConfig(timeout=timeout, disk=path, db=sigs, on_detect=actions,
                              mem_mib=mem_mib))  # fmt: skip
    m.load(b"\xf4", mode=16)
    return m


def call(m: Machine, vector: int, flags: int = 0x0202, **registers: int) -> tuple[Handled, int]:
    """Call ``vector``'s service as the stub would, with ``registers`` (``rax``, ``es``...) and a
    caller's FLAGS image of ``flags``; the outcome and the FLAGS the caller gets back."""
    m.mem.write_u16(SP + 4, flags)
    regs = {"rsp": SP, "ss": 0, "ds": 0, "es": 0, "rflags": 0x2, **registers}
    assert m.firmware is not None
    outcome: Outcome = m.firmware.handle(FirmwareCall(vector, 0, regs))
    assert isinstance(outcome, Handled), outcome
    return outcome, outcome.registers.get("rflags", 0) & 0xFFFF


def cf(flags: int) -> bool:
    return bool(flags & CF)


def zf(flags: int) -> bool:
    return bool(flags & ZF)


def ah(outcome: Handled) -> int:
    return (outcome.registers.get("rax", 0) >> 8) & 0xFF


def assemble16(source: str, address: int) -> bytes:
    """16-bit ``source`` at ``address``, with the macros of ``asm/include/macros16.s``."""
    return assemble(source, mode=16, address=address, prelude=macro_prelude(16))


def boot_sector(source: str, tail: bytes = b"") -> bytes:
    """``source`` assembled at 0000:7C00 (with the CALL16/RET16 macros of
    ``asm/include/macros16.s``), padded to a sector ending in 55 AA, then ``tail``."""
    code = assemble16(source, layout.BOOT_SECTOR_ADDR)
    assert len(code) <= 510, len(code)
    return code.ljust(510, b"\0") + b"\x55\xaa" + tail
