"""Emulated disk write throughput, scanner off and on, through the real guest driver.

A guest built by ``guest-tool build --write`` (``asm/programs/diskwrite64.s``, no read-back) writes
a payload of random bytes to a raw image file (in the page cache) on a machine with the storage
path wired: PIO with one sector per command, and bus-master DMA with 64 KiB and 1 MiB commands.
Each is run with no database (the inspector is there but has nothing to look for: the peer) and with
the shared rfxn.ndb in force; the ratio is the scanner's overhead on the guest's write time,
measured in the same run. The time is the whole ``Machine.run`` of the guest: port exits, the
gather, the scan, the ``pwrite``.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from benchmarks.common import Row
from guest_tool.disk_programs import build_disk_write_program
from hv_emu.machine import Machine, MachineConfig

RFXN = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rfxn.ndb"
#: (label, transport, bytes written, sectors per command)
CASES = (
    ("PIO, 1 sector per command", "pio", 1 << 20, 1),
    ("DMA, 64 KiB commands", "dma", 16 << 20, 128),
    ("DMA, 1 MiB commands", "dma", 16 << 20, 2048),
)
REPEAT = 7


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
    if not RFXN.is_file():
        return []
    rows = []
    payload = random.Random(2012).randbytes(max(n for _, _, n, _ in CASES))
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(b"")
        with disk.open("r+b") as f:
            f.truncate(32 << 20)
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
