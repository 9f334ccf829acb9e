"""``hv-emu scan``: the hypervisor's disk scanner as a clamscan-like command.

Models: ``clamscan --allmatch`` in raw mode, over the same engine the hypervisor runs on its guest's
disk writes. Files, directories (walked recursively) and disk images are read in chunks of
``CHUNK`` bytes and fed, in order, into one scan stream per file, opened with the file's length
(so ``EOF-n`` offsets apply); a file of any size is scanned whole, with memory bounded by the chunk
and the stream's state. Output, on standard output, is one line ``PATH: NAME FOUND`` per (file,
signature) and ``PATH: OK`` for a clean file (unless ``--infected``); or, with ``--json``, one JSON
object per file (JSON Lines). A path that cannot be read is one line ``hv-emu: PATH: why`` on
standard error (a ``"status": "error"`` object with ``--json``). A summary goes to standard error,
with a progress line while a long scan runs on a terminal.

Exit status, as clamscan 1.4.6's (measured): 1 when something was found (even if some path could
not be read), else 2 on an error (a bad database or option, a path that cannot be read), else 0.

Follows: clamscan 1.4's output lines and exit codes, and the raw-mode semantics of
docs/SIGNATURES.md (every name, every layout, no file typing or decoding).

Leaves out: clamscan's file typing, normalisation and unpacking (docs/SIGNATURES.md lists the
differences), hash signatures (``.hdb``), and following symbolic links met inside a directory
(links named on the command line are followed, as clamscan does by default). FIFOs, sockets and
device nodes met inside a directory are skipped (a FIFO would block, /dev/zero never end); named on
the command line, they are read like any file.

User controls: the paths and databases; the files' bytes are anyone's (every error is one line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from hv_emu.scanner.database import ENGINES, SignatureDatabase, compile_files

CHUNK = 1024 * 1024  # read size: large enough that per-call overhead vanishes
PROGRESS_AFTER = 1.0  # seconds before a progress line appears: short scans stay quiet
PROGRESS_EVERY = 0.25  # seconds between progress updates
EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2
#: The options that put ``clamscan -d DB`` in raw mode, the mode this command agrees with: every
#: name, no normalisation, no decoders, no size cut-off (docs/SIGNATURES.md). The agreement tests
#: and the benchmarks run clamscan with exactly these.
CLAMSCAN_RAW_MODE = (
    "--no-summary", "--allmatch=yes", "--normalize=no",
    "--scan-html=no", "--scan-mail=no", "--scan-pe=no", "--scan-elf=no", "--scan-ole2=no",
    "--scan-pdf=no", "--scan-swf=no", "--scan-xmldocs=no", "--scan-hwp3=no", "--scan-onenote=no",
    "--scan-archive=no", "--scan-image=no", "--scan-image-fuzzy-hash=no",
    "--heuristic-alerts=no", "--bytecode=no", "--max-filesize=2000M", "--max-scansize=2000M",
)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``hv-emu scan`` and its options."""
    scan = sub.add_parser(
        "scan", help="scan files, directories and disk images like clamscan --allmatch",
        description="Scan files, directories (recursively) and disk images with the hypervisor's "
        "signature engine. Exit status: 0 clean, 1 found, 2 error.",
    )  # fmt: skip
    scan.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="what to scan")
    scan.add_argument("--db", type=Path, action="append", required=True, metavar="FILE",
                      help="a .db or .ndb signature database (repeatable)")
    scan.add_argument("--engine", choices=ENGINES, default="auto",
                      help="literal finder: hyperscan when it imports (auto), or pyahocorasick")
    scan.add_argument("--json", action="store_true", help="one JSON object per file on stdout")
    scan.add_argument("-i", "--infected", action="store_true", help="print only infected files")


@dataclass
class FileResult:
    """What scanning one file found: its signature names in order of first match."""

    path: str
    size: int = 0
    names: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Summary:
    files: int = 0
    infected: int = 0
    errors: int = 0
    scanned: int = 0  # bytes
    matches: int = 0  # (file, name) pairs


def walk(paths: Sequence[Path]) -> Iterator[tuple[Path, str | None]]:
    """Every file to scan, in a stable order, with an error message where a path is unusable."""
    for path in paths:
        try:
            mode = path.stat().st_mode  # follows a link named on the command line
        except OSError as error:
            yield path, f"cannot access: {error.strerror}"
            continue
        if not stat.S_ISDIR(mode):
            yield path, None
            continue
        failures: list[OSError] = []
        for root, dirs, files in os.walk(path, onerror=failures.append):
            dirs.sort()
            for name in sorted(files):
                child = Path(root) / name
                if _is_regular(child):  # not a link, and no FIFO or device to block or run forever
                    yield child, None
            for failure in failures:
                yield Path(failure.filename), f"cannot list directory: {failure.strerror}"
            failures.clear()


def _is_regular(path: Path) -> bool:
    """Whether ``path`` itself (a link is not followed) is a regular file."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return True  # gone or unreadable meanwhile: scanning it reports why, as for any file


class Progress:
    """A one-line progress bar on a terminal: shown only after ``PROGRESS_AFTER`` seconds."""

    def __init__(self, out: TextIO, total: int, clock: Callable[[], float]) -> None:
        self._out = out
        self._total = total
        self._clock = clock
        self._start = clock()
        self._done = 0
        self._shown_at: float | None = None
        self._visible = False
        self.enabled = out.isatty()

    def advance(self, size: int, current: Path) -> None:
        """``size`` more bytes of ``current`` were scanned."""
        self._done += size
        if not self.enabled:
            return
        now = self._clock()
        elapsed = now - self._start
        if elapsed < PROGRESS_AFTER:
            return
        if self._shown_at is not None and now - self._shown_at < PROGRESS_EVERY:
            return
        self._shown_at, self._visible = now, True
        fraction = min(self._done / self._total, 1.0) if self._total else 1.0
        bar = "#" * int(fraction * 30)
        rate = self._done / elapsed / 1e6
        name = str(current)
        name = name if len(name) <= 40 else "..." + name[-37:]
        self._out.write(f"\r[{bar:<30}] {fraction:6.1%} {rate:8.1f} MB/s {name:<40}")
        self._out.flush()

    def clear(self) -> None:
        """Wipe the bar before a result line is printed (it comes back on the next update)."""
        if self._visible:
            self._visible = False
            self._out.write("\r" + " " * 100 + "\r")
            self._out.flush()


def scan_file(
    db: SignatureDatabase, path: Path, on_chunk: Callable[[int], None] | None = None
) -> FileResult:
    """Scan one file (or disk image, or device) whole, chunk by chunk, as one stream."""
    result = FileResult(str(path))
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            # A regular file's length places EOF-n offsets; a device's is unknown, as on a disk.
            stream = db.open_stream(info.st_size if stat.S_ISREG(info.st_mode) else None)
            try:
                while chunk := handle.read(CHUNK):
                    result.size += len(chunk)
                    for match in stream.feed(chunk):
                        if match.name not in result.names:
                            result.names.append(match.name)
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            finally:
                stream.close()
    except OSError as error:
        result.error = f"cannot read: {error.strerror}"
    return result


def _total_bytes(files: Sequence[tuple[Path, str | None]]) -> int:
    total = 0
    for path, problem in files:
        if problem is None:
            with contextlib.suppress(OSError):  # reported when it is scanned
                total += path.stat().st_size
    return total


def run_scan(
    db: SignatureDatabase,
    paths: Sequence[Path],
    *,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
    infected_only: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Scan ``paths`` with ``db``; write results to ``out``, progress and summary to ``err``."""
    started = clock()
    files = list(walk(paths))
    progress = Progress(err, _total_bytes(files) if err.isatty() else 0, clock)
    summary = Summary()
    for path, problem in files:
        if problem is not None:
            result = FileResult(str(path), error=problem)
        else:
            result = scan_file(db, path, partial(progress.advance, current=path))
        summary.files += 1
        summary.scanned += result.size
        summary.matches += len(result.names)
        summary.infected += bool(result.names)
        summary.errors += result.error is not None
        progress.clear()
        _report(out, err, result, as_json=as_json, infected_only=infected_only)
    elapsed = clock() - started
    rate = summary.scanned / elapsed / 1e6 if elapsed > 0 else 0.0
    err.write(
        "----------- SCAN SUMMARY -----------\n"
        f"Known viruses: {db.count}\n"
        f"Engine: hv-emu ({db.engine})\n"
        f"Scanned files: {summary.files - summary.errors}\n"
        f"Infected files: {summary.infected}\n"
        f"Signatures found: {summary.matches}\n"
        f"Total errors: {summary.errors}\n"
        f"Data scanned: {summary.scanned / 1e6:.2f} MB\n"
        f"Time: {elapsed:.3f} sec ({rate:.1f} MB/s)\n"
    )
    if summary.infected:  # clamscan too says "found" over "error" when it has both
        return EXIT_FOUND
    return EXIT_ERROR if summary.errors else EXIT_CLEAN


def _report(
    out: TextIO, err: TextIO, result: FileResult, *, as_json: bool, infected_only: bool
) -> None:
    if as_json:
        status = "error" if result.error else "found" if result.names else "clean"
        record = {"path": result.path, "status": status, "names": result.names,
                  "bytes": result.size, "error": result.error}  # fmt: skip
        out.write(json.dumps(record) + "\n")
        return
    if result.error is not None:
        err.write(f"hv-emu: {result.path}: {result.error}\n")
    for name in result.names:
        out.write(f"{result.path}: {name} FOUND\n")
    if not result.names and result.error is None and not infected_only:
        out.write(f"{result.path}: OK\n")


def cmd_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``hv-emu scan``: load the databases (errors are one line, exit 2), then scan."""
    db = compile_files(args.db, engine=args.engine)
    for warning in db.not_applied:
        err.write(f"hv-emu: warning: {warning}\n")
    return run_scan(db, args.paths, out=out, err=err, as_json=args.json,
                    infected_only=args.infected)  # fmt: skip
