"""The issue-14 rows against QEMU TCG: the same boot sector, whole processes, in the same run.

One 16-bit guest (``benchmarks/qemu_guest.s``) is assembled with keystone at 0x7c00 and run
unchanged by both machines: by ``qemu-system-x86_64 -accel tcg`` as the boot sector of a small raw
disk on the pc machine's PIIX3 IDE (SeaBIOS loads it and jumps to 0000:7c00; the guest ends QEMU
through the ``isa-debug-exit`` device), and by ``hv-emu run --mode 16`` as a flat image with the
same disk image on its own PIIX3-style IDE (the guest ends with HLT). The guest finds the bus
master through PCI BAR4 and polls ATA Status and bus-master Status, so one driver serves both.

Every figure is per unit = (T(N) - T(0)) / N, where T is the wall time of the whole process running
the image built for N units (and for 0): process start, firmware, Python imports, the database
compile all cancel. The median of ``REPEAT`` such pairs, each emulator in turn, is kept. N differs
per emulator (the code is the same, only the count in ``mov ebp, COUNT`` differs) so that each
difference is a few tenths of a second on either.

Rows: a port exit (``out 0x80, al``: QEMU's ``ioport80`` dummy, nothing on hv-emu), an ``in al, dx``
from a port neither decodes, PIO writes of 1 sector per WRITE SECTORS and WRITE MULTIPLE (256
sectors, 16-sector DRQ blocks) without a database, 64 KiB WRITE DMA commands (hv-emu with no
database and scanning with rfxn.ndb, QEMU never scans), and hv-emu's ``get_vmmcall_number``
VMCALL round trip, which TCG cannot run (VMCALL is #UD there), against QEMU's port exit.

Skipped, with a message on standard error and no rows, when ``qemu-system-x86_64`` is not on PATH.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Row
from benchmarks.disk import RFXN
from guest_tool.assemble import assemble
from guest_tool.programs import equate_lines, generated_prelude
from hv_emu import layout

ROOT = Path(__file__).resolve().parent.parent
GUEST = Path(__file__).resolve().parent / "qemu_guest.s"
QEMU = "qemu-system-x86_64"
#: The POST-code port: QEMU's pc machine has a do-nothing device there (``ioport80``); hv-emu none.
POST_PORT = 0x80
#: A port that neither QEMU's pc machine (``info mtree``: PCI I/O with nothing mapped) nor hv-emu
#: decodes: the IN reads all ones on both.
UNASSIGNED_PORT = 0x100
#: QEMU's ``isa-debug-exit`` device: a write of V ends QEMU with exit status V * 2 + 1.
EXIT_PORT = 0xF4
EXIT_OK, EXIT_FAILED = 1, 3
#: PCI configuration addresses (mechanism #1) of the PIIX3 IDE function 00:01.1: BAR4, command.
PCI_IDE = 0x8000_0000 | (1 << 11) | (1 << 8)
LBA_BASE = 2048
WINDOW_SECTORS = 32768  # 16 MiB of disk written over and over
DISK_BYTES = (LBA_BASE + WINDOW_SECTORS + 256) * 512
SECTOR = 512
MIB = 1 << 20
REPEAT = 5
TIMEOUT = 300.0


@dataclass(frozen=True)
class Case:
    """One kind of guest loop: ``kind`` as in qemu_guest.s, the bytes one unit writes (0: not a
    disk row), and its DRQ block shape."""

    kind: int
    sectors: int = 0
    blocks: int = 0
    block_bytes: int = SECTOR
    reads: bool = False  # reads the boot sector (LBA 0) back instead of writing the window

    @property
    def unit_bytes(self) -> int:
        return self.sectors * SECTOR

    @property
    def writes(self) -> int:
        """The bytes one unit writes to the disk (0 for the other rows)."""
        return 0 if self.reads else self.unit_bytes


OUT = Case(1)
IN = Case(2)
PIO = Case(3, sectors=1, blocks=1)
MULTIPLE = Case(4, sectors=256, blocks=16, block_bytes=16 * SECTOR)
DMA = Case(5, sectors=128)
VMCALL = Case(6)
PIO_READ = Case(7, sectors=1, blocks=1, reads=True)

#: Units per run, per emulator: enough that T(N) - T(0) is a few tenths of a second.
COUNTS_HV = {OUT: 2_000_000, IN: 2_000_000, PIO: 8192, MULTIPLE: 1024, DMA: 8192, VMCALL: 40_000,
             PIO_READ: 8192}
COUNTS_QEMU = {OUT: 10_000_000, IN: 10_000_000, PIO: 4096, MULTIPLE: 128, DMA: 8192,
               PIO_READ: 4096}


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def boot_sector(case: Case, count: int) -> bytes:
    """The guest for ``count`` units of ``case``: 512 bytes ending in 55 AA."""
    equates = {
        "KIND": case.kind, "COUNT": count, "SECTORS": case.sectors, "BLOCKS": case.blocks,
        "BLOCK_SHIFT": case.block_bytes.bit_length() - 1, "BLOCK_WORDS": case.block_bytes // 2,
        "LBA_SHIFT": max(case.sectors, 1).bit_length() - 1,
        "LBA_MASK": 0 if case.reads else WINDOW_SECTORS // max(case.sectors, 1) - 1,
        "LBA_BASE": 0 if case.reads else LBA_BASE, "DISK": int(case.unit_bytes > 0),
        "POST_PORT": POST_PORT, "UNASSIGNED_PORT": UNASSIGNED_PORT, "EXIT_PORT": EXIT_PORT,
        "PCI_ADDR_PORT": layout.PORT_PCI_CONFIG_ADDRESS,
        "PCI_DATA_PORT": layout.PORT_PCI_CONFIG_DATA,
        "PCI_IDE_BAR4": PCI_IDE | 0x20, "PCI_IDE_COMMAND": PCI_IDE | 0x04,
    }  # fmt: skip
    code = assemble(GUEST.read_text(), mode=16, address=layout.DEFAULT_LOAD_REAL,
                    prelude=generated_prelude() + equate_lines(equates))  # fmt: skip
    if len(code) > 446:  # keep clear of the partition table QEMU's geometry guess reads
        raise ValueError(f"the guest is {len(code)} bytes: more than a boot sector's code area")
    return code.ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True)
class Outcome:
    """How one process ended: its wall time, whether the guest reported success, and why not."""

    seconds: float
    ok: bool
    detail: str


Runner = Callable[[Case, int, Path, "Path | None"], Outcome]


def qemu_command(disk: Path) -> list[str]:
    return [QEMU, "-machine", "pc", "-accel", "tcg", "-m", "32", "-display", "none",
            "-monitor", "none", "-serial", "none", "-parallel", "none", "-no-reboot",
            "-drive", f"file={disk},format=raw,if=ide,index=0",
            "-device", f"isa-debug-exit,iobase={EXIT_PORT:#x},iosize=0x04"]  # fmt: skip


def hv_emu_command(image: Path, disk: Path | None, db: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "hv_emu", "run", "--mode", "16", "-q",
           "--timeout", str(TIMEOUT)]  # fmt: skip
    if disk is not None:
        cmd += ["--disk", str(disk)]
    if db is not None:
        cmd += ["--db", str(db)]
    return [*cmd, str(image)]


def _disk(path: Path, sector0: bytes) -> Path:
    with path.open("wb") as f:
        f.write(sector0)
        f.truncate(DISK_BYTES)
    return path


def run_qemu(case: Case, count: int, tmp: Path, db: Path | None = None) -> Outcome:
    """Boot the guest for ``count`` units in QEMU; the time of the whole process. QEMU has no
    scanner: ``db`` must be ``None``."""
    if db is not None:
        raise ValueError("QEMU does not scan")
    disk = _disk(tmp / "qemu.img", boot_sector(case, count))
    start = time.perf_counter()
    proc = subprocess.run(qemu_command(disk), stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=TIMEOUT, check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    detail = f"exit status {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}"
    return Outcome(elapsed, proc.returncode == EXIT_OK, detail)


def run_hv_emu(case: Case, count: int, tmp: Path, db: Path | None = None) -> Outcome:
    """Run the same guest for ``count`` units under ``hv-emu run``; the time of the process."""
    image = tmp / "boot.bin"
    sector = boot_sector(case, count)
    image.write_bytes(sector)
    # The disk QEMU boots from holds the boot sector at LBA 0; the read row reads it back.
    first = sector if case.reads else bytes(SECTOR)
    disk = _disk(tmp / "hv.img", first) if case.unit_bytes else None
    start = time.perf_counter()
    proc = subprocess.run(hv_emu_command(image, disk, db), stdin=subprocess.DEVNULL, cwd=ROOT,
                          capture_output=True, timeout=TIMEOUT + 30, check=False)  # fmt: skip
    elapsed = time.perf_counter() - start
    out = proc.stdout.decode(errors="replace")
    detail = f"exit status {proc.returncode}, output {out!r}: {proc.stderr.decode().strip()}"
    return Outcome(elapsed, proc.returncode == 0 and out == "K", detail)


def _timed(run: Runner, case: Case, count: int, tmp: Path, db: Path | None) -> float:
    outcome = run(case, count, tmp, db)
    if not outcome.ok:
        raise RuntimeError(f"the guest (kind {case.kind}, {count} units) failed: {outcome.detail}")
    return outcome.seconds


def per_unit(run: Runner, case: Case, count: int, tmp: Path, db: Path | None = None) -> float:
    """Seconds per unit from one pair of runs: (T(count) - T(0)) / count."""
    return (_timed(run, case, count, tmp, db) - _timed(run, case, 0, tmp, db)) / count


def _ms_per_mib(case: Case, seconds_per_unit: float) -> float:
    return seconds_per_unit * 1e3 * MIB / case.unit_bytes


def measure(repeat: int = REPEAT) -> dict[str, float]:
    """Seconds per unit, the median of ``repeat`` pairs, keyed ``emulator/row``. The repeats
    are the outer loop and the emulators alternate inside it, so both see the same machine."""
    scan = RFXN if RFXN.is_file() else None
    plan: list[tuple[str, Runner, Case, int, Path | None]] = []
    for case in (OUT, IN, PIO, MULTIPLE, DMA, PIO_READ):
        plan.append((f"qemu/{case.kind}", run_qemu, case, COUNTS_QEMU[case], None))
        plan.append((f"hv/{case.kind}", run_hv_emu, case, COUNTS_HV[case], None))
    if scan is not None:
        plan.append(("hv/scan", run_hv_emu, DMA, COUNTS_HV[DMA], scan))
    plan.append((f"hv/{VMCALL.kind}", run_hv_emu, VMCALL, COUNTS_HV[VMCALL], None))
    samples: dict[str, list[float]] = {key: [] for key, *_ in plan}
    with tempfile.TemporaryDirectory() as name:
        for _ in range(repeat):
            for key, runner, case, count, db in plan:
                samples[key].append(per_unit(runner, case, count, Path(name), db))
    return {key: statistics.median(values) for key, values in samples.items()}


def run(repeat: int = REPEAT) -> list[Row]:
    if qemu_path() is None:
        print(f"benchmarks.qemu: skipped, {QEMU} is not installed "
              "(Debian: apt-get install qemu-system-x86)", file=sys.stderr)  # fmt: skip
        return []
    m = measure(repeat)
    peer = f"QEMU {_qemu_version()} TCG, same guest"
    rows = [
        Row("port exit, out 0x80, al (16-bit guest)", m["hv/1"] * 1e9, "ns", peer,
            m["qemu/1"] * 1e9),
        Row("port exit, in al, dx (unassigned port)", m["hv/2"] * 1e9, "ns", peer,
            m["qemu/2"] * 1e9),
    ]  # fmt: skip
    for case, label in ((PIO, "PIO, 1 sector per WRITE SECTORS (rep outsw), no database"),
                        (MULTIPLE, "PIO, WRITE MULTIPLE (16-sector DRQ blocks), no database"),
                        (DMA, "DMA, 64 KiB commands, no database")):  # fmt: skip
        rows.append(Row(f"disk write, {label}", _ms_per_mib(case, m[f"hv/{case.kind}"]),
                        "ms/MiB", peer, _ms_per_mib(case, m[f"qemu/{case.kind}"])))  # fmt: skip
    rows.append(Row("disk read, PIO, 1 sector per READ SECTORS (rep insw)",
                    _ms_per_mib(PIO_READ, m[f"hv/{PIO_READ.kind}"]), "ms/MiB", peer,
                    _ms_per_mib(PIO_READ, m[f"qemu/{PIO_READ.kind}"])))  # fmt: skip
    if "hv/scan" in m:
        rows.append(Row("disk write, DMA, 64 KiB commands, rfxn.ndb scanning",
                        _ms_per_mib(DMA, m["hv/scan"]), "ms/MiB", f"{peer} (QEMU does not scan)",
                        _ms_per_mib(DMA, m[f"qemu/{DMA.kind}"])))  # fmt: skip
    rows.append(Row("get_vmmcall_number round trip (16-bit guest)", m[f"hv/{VMCALL.kind}"] * 1e9,
                    "ns", f"{peer}: its port exit, out 0x80, al", m["qemu/1"] * 1e9))  # fmt: skip
    return rows


def _qemu_version() -> str:
    proc = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False)
    words = proc.stdout.split()
    return words[3] if len(words) > 3 and words[:3] == ["QEMU", "emulator", "version"] else "?"


if __name__ == "__main__":
    for row in run():
        print(row.markdown())
