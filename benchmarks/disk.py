"""Emulated disk write throughput, scanner off and on, through the real guest driver.

A guest built by ``guest-tool build --write`` (``asm/programs/diskwrite64.s``, no read-back) writes
a payload of random bytes to a raw image file (in the page cache) on a machine with the storage
path wired: PIO with one sector per command, and bus-master DMA with 64 KiB and 1 MiB commands.
Each is run with no database (the inspector is there but has nothing to look for: the peer) and with
the shared rfxn.ndb in force; the ratio is the scanner's overhead on the guest's write time,
measured in the same run. The time is the whole ``Machine.run`` of the guest: port exits, the
gather, the scan, the ``pwrite``.

The PIO rows (1 sector per WRITE SECTORS, and WRITE MULTIPLE with 16-sector DRQ blocks, a guest of
this file's own: 256 sectors per command, Status polled before each block) also run with no
database against a bare Unicorn engine whose no-op OUT hook takes the same ``rep outsw`` of the
whole payload one word per call: the floor of any VMM that handles each element of a string
instruction in a Python hook, measured in the same run.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from pathlib import Path

import unicorn
from unicorn import x86_const as X

from benchmarks.common import Row, seconds
from guest_tool.assemble import assemble
from guest_tool.disk_programs import build_disk_write_program
from hv_emu import layout
from hv_emu.machine import Machine, MachineConfig

RFXN = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rfxn.ndb"
#: (label, transport, bytes written, sectors per command)
CASES = (
    ("PIO, 1 sector per command", "pio", 1 << 20, 1),
    ("DMA, 64 KiB commands", "dma", 16 << 20, 128),
    ("DMA, 1 MiB commands", "dma", 16 << 20, 2048),
)
REPEAT = 7
LOAD = 0x100000
#: WRITE MULTIPLE (0xC5) of {commands} x 256 sectors from LBA 0 after SET MULTIPLE 16 (0xC6):
#: per 16-sector DRQ block, wait for DRQ, then one rep outsw of 4096 words. The payload follows.
WRITE_MULTIPLE = """
    cld
    lea rsi, [rip + payload]
    mov dx, {ata} + 2
    mov al, 16
    out dx, al
    mov dx, {ata} + 7
    mov al, 0xc6
    out dx, al
    xor r12d, r12d                  # LBA of the next command
    mov r13d, {commands}
command:
    mov dx, {ata} + 6
    mov eax, r12d
    shr eax, 24
    or al, 0xe0
    out dx, al
    mov dx, {ata} + 2
    xor eax, eax                    # 0 = 256 sectors
    out dx, al
    mov eax, r12d
    mov dx, {ata} + 3
    out dx, al
    shr eax, 8
    mov dx, {ata} + 4
    out dx, al
    shr eax, 8
    mov dx, {ata} + 5
    out dx, al
    mov dx, {ata} + 7
    mov al, 0xc5
    out dx, al
    mov r14d, 16                    # DRQ blocks of 16 sectors per command
block:
    mov dx, {ata} + 7
wait:
    in al, dx
    test al, 0x80
    jnz wait
    test al, 0x08
    jz fail
    mov dx, {ata}
    mov ecx, 4096
    rep outsw
    dec r14d
    jnz block
    add r12d, 256
    dec r13d
    jnz command
    mov dx, {ata} + 7
    in al, dx
fail:
    hlt
    .p2align 4
payload:
"""


def write_multiple_program(payload: bytes) -> bytes:
    """The WRITE MULTIPLE guest for ``payload`` (a multiple of 128 KiB)."""
    code = assemble(WRITE_MULTIPLE.format(ata=layout.PORT_ATA_PRIMARY,
                                          commands=len(payload) // (256 * 512)),
                    mode=64, address=LOAD)  # fmt: skip
    return code + payload


def bare_rep_outsw_ms_per_mib(nbytes: int) -> float:
    """A bare engine, a no-op OUT hook, ``rep outsw`` of ``nbytes``: milliseconds per MiB."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 8 << 20)
    code = assemble(f"cld\n mov esi, 0x200000\n mov ecx, {nbytes // 2}\n mov edx, 0x1f0\n"
                    " rep outsw\n hlt", mode=64, address=LOAD)  # fmt: skip
    uc.mem_write(LOAD, code)

    def on_out(_uc: unicorn.Uc, _port: int, _size: int, _value: int, _ud: object) -> None:
        return None

    uc.hook_add(unicorn.UC_HOOK_INSN, on_out, None, 1, 0, X.UC_X86_INS_OUT)
    timer = threading.Timer(600, uc.emu_stop)
    timer.start()
    try:
        return seconds(lambda: uc.emu_start(LOAD, 2**64 - 1)) * 1e3 / (nbytes / (1 << 20))
    finally:
        timer.cancel()


def pio_rows(payload: bytes, disk: Path, repeat: int = 5) -> list[Row]:
    """PIO writes of 1 MiB with no database, each against the bare per-word floor."""
    nbytes = 1 << 20
    single = build_disk_write_program(payload[:nbytes], 0, "pio", per_command=1,
                                      readback=False).image  # fmt: skip
    multiple = write_multiple_program(payload[:nbytes])
    rows = []
    for label, image in (("1 sector per WRITE SECTORS", single),
                         ("WRITE MULTIPLE, 16-sector DRQ blocks", multiple)):  # fmt: skip
        ours, bare = [], []
        for _ in range(repeat):
            ours.append(write_ms_per_mib(image, nbytes, disk, None))
            bare.append(bare_rep_outsw_ms_per_mib(nbytes))
        rows.append(Row(f"disk write, PIO, {label}, no database", sorted(ours)[repeat // 2],
                        "ms/MiB", "bare Unicorn OUT hook, one per word of rep outsw",
                        sorted(bare)[repeat // 2]))
    return rows


def write_ms_per_mib(image: bytes, nbytes: int, disk: Path, db: Path | None) -> float:
    """Run the write guest once on a fresh machine; milliseconds per MiB written."""
    machine = Machine(MachineConfig(disk=disk, db=db, timeout=600.0, mem_mib=128))
    try:
        machine.load(image)
        start = time.perf_counter()
        result = machine.run()
        elapsed = time.perf_counter() - start
    finally:
        machine.close()
    if not result.halted or machine.detections:
        raise RuntimeError(f"the write guest did not run cleanly: {result.exit}")
    return elapsed * 1e3 / (nbytes / (1 << 20))


def run() -> list[Row]:
    rows = []
    payload = random.Random(2012).randbytes(max(n for _, _, n, _ in CASES))
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(b"")
        with disk.open("r+b") as f:
            f.truncate(32 << 20)
        rows += pio_rows(payload, disk)
        if not RFXN.is_file():
            return rows
        for label, via, nbytes, per_command in CASES:
            built = build_disk_write_program(payload[:nbytes], 0, via, per_command=per_command,  # type: ignore[arg-type]
                                             lba48=per_command > 256, readback=False)  # fmt: skip
            off: list[float] = []
            on: list[float] = []
            for _ in range(REPEAT):  # interleaved, so both see the same machine state
                off.append(write_ms_per_mib(built.image, nbytes, disk, None))
                on.append(write_ms_per_mib(built.image, nbytes, disk, RFXN))
            rows.append(Row(f"disk write, {label}, rfxn.ndb scanning", sorted(on)[REPEAT // 2],
                            "ms/MiB", "the same, no database", sorted(off)[REPEAT // 2]))
    return rows


if __name__ == "__main__":
    import sys

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disk.img"
        path.write_bytes(bytes(32 << 20))
        data = random.Random(2012).randbytes(1 << 20)
        for row in pio_rows(data, path, repeat=int(sys.argv[1]) if len(sys.argv) > 1 else 5):
            print(row.markdown())
