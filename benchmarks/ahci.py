"""AHCI write throughput (issue 16): 64 KiB and 1 MiB WRITE DMA EXT commands, scanner off and on,
against bus-master IDE's DMA rows and against QEMU q35's own ICH9 AHCI.

One 32-bit guest (``GUEST`` below, a Multiboot kernel as ``asm/programs/ahci32.s`` is) finds the
AHCI function at 00:1f.2, reads the ABAR from BAR5, brings port 0 up (AE, CLB/FB, FRE, ST), then
issues ``count`` WRITE DMA EXT commands from slot 0, each moving the payload appended to the image
(64 KiB or 1 MiB, random bytes) through 64 KiB PRD entries to the next LBAs of a 16 MiB window,
polling PxCI; it ends with ``out 0xf4, al`` (QEMU's isa-debug-exit) and HLT (hv-emu).

Rows, each a ratio measured in the same run:
- hv-emu, in process (the time of ``Machine.run``, as ``benchmarks/disk.py`` measures IDE), with
  rfxn.ndb scanning against no database, and with no database against the IDE DMA guest of
  ``benchmarks/disk.py`` writing the same bytes in commands of the same size;
- hv-emu against QEMU 7.2 TCG (``-machine q35``, the disk on its AHCI), whole processes on both:
  per MiB = (T(N) - T(0)) / N MiB, T the wall time of the process running the image built for N
  commands and for 0, so start-up, SeaBIOS, imports and the database compile cancel; the median of
  ``REPEAT`` pairs, the emulators alternating. Skipped, with a message on standard error, when
  ``qemu-system-x86_64`` is not installed (or rfxn.ndb, for the scanning rows, is missing).
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import Row
from benchmarks.disk import RFXN, write_ms_per_mib
from guest_tool.assemble import assemble
from guest_tool.disk_programs import build_disk_write_program
from guest_tool.programs import generated_prelude
from hv_emu.machine import Machine, MachineConfig

ROOT = Path(__file__).resolve().parent.parent
LOAD = 0x100000
MIB = 1 << 20
WINDOW_SECTORS = 32768  # the 16 MiB of disk written over and over
DISK_BYTES = 80 * MIB  # room for the IDE peer's 64 MiB
REPEAT = 5
#: Bytes each in-process run writes (the IDE peer writes as many, distinct, from LBA 0).
IN_PROCESS_BYTES = 64 * MIB
#: (label, bytes per command, commands a QEMU process runs, commands an hv-emu process runs)
CASES = (("64 KiB commands", 64 << 10, 8192, 8192), ("1 MiB commands", MIB, 1024, 1024))
GUEST = """
start0:
    jmp start
.p2align 2
    .long 0x1badb002, 0x00010000, 0xe4514ffe    # Multiboot, a.out kludge
    .long {load} + 4, {load}, 0, 0, start
start:
    mov esp, 0x9f000
    cld
    mov eax, 0x8000fa04                 # 00:1f.2 command: memory space, bus master
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    or eax, 6
    out dx, eax
    mov eax, 0x8000fa24                 # BAR5 = ABAR
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    and eax, 0xfffff000
    mov ebp, eax
    mov dword ptr [ebp + 0x04], 0x80000000
    and dword ptr [ebp + 0x118], 0xffffffee
stop:
    test dword ptr [ebp + 0x118], 0xc000
    jnz stop
    mov dword ptr [ebp + 0x100], 0x400000  # CLB
    mov dword ptr [ebp + 0x104], 0
    mov dword ptr [ebp + 0x108], 0x401000  # FB
    mov dword ptr [ebp + 0x10c], 0
    mov dword ptr [ebp + 0x130], 0xffffffff
    or dword ptr [ebp + 0x118], 0x10
ready:
    test dword ptr [ebp + 0x120], 0x88
    jnz ready
    or dword ptr [ebp + 0x118], 0x01
    # slot 0: CFL 5, W, {entries} PRD entries of 64 KiB; the table at 0x402000
    mov dword ptr [0x400000], 0x45 | ({entries} << 16)
    mov dword ptr [0x400008], 0x402000
    mov dword ptr [0x40000c], 0
    mov edi, 0x402000
    xor eax, eax
    mov ecx, 0x20
    rep stosd
    mov byte ptr [0x402000], 0x27
    mov byte ptr [0x402001], 0x80
    mov byte ptr [0x402002], 0x35
    mov byte ptr [0x402007], 0x40
    mov word ptr [0x40200c], {sectors}
    mov edi, 0x402080
    mov esi, payload
    mov ecx, {entries}
prd:
    mov [edi], esi
    mov dword ptr [edi + 4], 0
    mov dword ptr [edi + 8], 0
    mov dword ptr [edi + 12], 0xffff
    add esi, 0x10000
    add edi, 16
    loop prd
    xor ebx, ebx                        # LBA
    mov ecx, {count}
    test ecx, ecx
    jz done
command:
    mov [0x402004], bx                  # LBA 15:0
    mov eax, ebx
    shr eax, 16
    mov [0x402006], al                  # LBA 23:16
    mov dword ptr [ebp + 0x110], 0xffffffff
    mov dword ptr [ebp + 0x138], 1
busy:
    test dword ptr [ebp + 0x110], 0x40000000
    jnz failed
    test dword ptr [ebp + 0x138], 1
    jnz busy
    add ebx, {sectors}
    cmp ebx, {window}
    jb next
    xor ebx, ebx
next:
    loop command
done:
    xor eax, eax
    out 0xf4, al
    hlt
failed:
    mov al, 1
    out 0xf4, al
    hlt
    .p2align 4
payload:
"""


def ahci_program(payload: bytes, count: int) -> bytes:
    """The guest writing ``payload`` (a multiple of 64 KiB) ``count`` times."""
    source = GUEST.format(load=LOAD, entries=len(payload) >> 16, sectors=(len(payload) // 512),
                          count=count, window=WINDOW_SECTORS)  # fmt: skip
    return assemble(source, mode=32, address=LOAD, prelude=generated_prelude()) + payload


def in_process_ms_per_mib(image: bytes, nbytes: int, disk: Path, db: Path | None) -> float:
    machine = Machine(MachineConfig(disk=disk, db=db, timeout=600.0, mem_mib=64,
                                    disk_controller="ahci"))  # fmt: skip
    try:
        machine.load(image, mode=32)
        start = time.perf_counter()
        result = machine.run()
        elapsed = time.perf_counter() - start
    finally:
        machine.close()
    if not result.halted or machine.detections or machine.debugcon.text():
        raise RuntimeError(f"the AHCI write guest did not run cleanly: {result.exit}")
    return elapsed * 1e3 / (nbytes / MIB)


def qemu_path() -> str | None:
    return shutil.which("qemu-system-x86_64")


def _process_seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600,
                          check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):  # hv-emu: 0 (HLT); QEMU: 1 (isa-debug-exit, value 0)
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-300:]!r}")
    return elapsed


def qemu_command(kernel: Path, disk: Path) -> list[str]:
    return [str(qemu_path()), "-machine", "q35", "-accel", "tcg", "-m", "64", "-display", "none",
            "-monitor", "none", "-serial", "none", "-parallel", "none", "-no-reboot",
            "-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", "ide-hd,drive=d0,bus=ide.0",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-kernel", str(kernel)]  # fmt: skip


def hv_emu_command(image: Path, disk: Path) -> list[str]:
    return [sys.executable, "-m", "hv_emu", "run", str(image), "--mode", "32", "--disk", str(disk),
            "--disk-controller", "ahci", "-q", "--timeout", "600"]  # fmt: skip


def process_ms_per_mib(make: Callable[[Path, Path], list[str]], payload: bytes, count: int,
                       tmp: Path) -> float:  # fmt: skip
    """(T(count) - T(0)) per MiB for the command builder ``make`` (``qemu_command`` or
    ``hv_emu_command``)."""
    times = []
    for n in (count, 0):
        image = tmp / f"ahci-{n}.bin"
        image.write_bytes(ahci_program(payload, n))
        disk = tmp / "disk.img"
        disk.write_bytes(b"")
        with disk.open("r+b") as f:
            f.truncate(DISK_BYTES)
        times.append(_process_seconds(make(image, disk)))
    return (times[0] - times[1]) * 1e3 / (count * len(payload) / MIB)


def run(repeat: int = REPEAT) -> list[Row]:
    rows = []
    ide_payload = random.Random(2012).randbytes(IN_PROCESS_BYTES)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        disk = tmp / "inproc.img"
        disk.write_bytes(b"")
        with disk.open("r+b") as f:
            f.truncate(DISK_BYTES)
        for label, size, qemu_count, hv_count in CASES:
            payload = ide_payload[:size]
            count = IN_PROCESS_BYTES // size
            image = ahci_program(payload, count)
            ide = build_disk_write_program(ide_payload, 0, "dma", per_command=size // 512,
                                           lba48=True, readback=False).image  # fmt: skip
            off, on, ide_off = [], [], []
            for _ in range(repeat):  # interleaved, so all see the same machine state
                off.append(in_process_ms_per_mib(image, IN_PROCESS_BYTES, disk, None))
                ide_off.append(write_ms_per_mib(ide, IN_PROCESS_BYTES, disk, None))
                if RFXN.is_file():
                    on.append(in_process_ms_per_mib(image, IN_PROCESS_BYTES, disk, RFXN))
            rows.append(Row(f"AHCI write, {label}, no database", statistics.median(off), "ms/MiB",
                            f"IDE DMA, {label}, no database", statistics.median(ide_off)))
            if on:
                rows.append(Row(f"AHCI write, {label}, rfxn.ndb scanning", statistics.median(on),
                                "ms/MiB", "the same, no database", statistics.median(off)))
            if qemu_path() is None:
                continue
            ours, theirs = [], []
            for _ in range(repeat):
                ours.append(process_ms_per_mib(hv_emu_command, payload, hv_count, tmp))
                theirs.append(process_ms_per_mib(qemu_command, payload, qemu_count, tmp))
            rows.append(Row(f"AHCI write, {label}, no database, whole process",
                            statistics.median(ours), "ms/MiB", "QEMU 7.2 TCG q35, its ICH9 AHCI",
                            statistics.median(theirs)))  # fmt: skip
    if qemu_path() is None:
        print("benchmarks/ahci.py: qemu-system-x86_64 is not installed: no QEMU rows",
              file=sys.stderr)  # fmt: skip
    if not RFXN.is_file():
        print(f"benchmarks/ahci.py: {RFXN} is missing: no scanning rows", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for row in run(int(sys.argv[1]) if len(sys.argv) > 1 else REPEAT):
        print(row.markdown())
