"""Storage inspection: the scanner on every sector the guest writes, and what happens on a find.

Models: BitVisor's storage hook with a body-signature scanner behind it, the way the 2012 design
meant it: every write the ATA channel publishes (one DRQ block of PIO, or one whole gathered DMA
transfer) is fed to a streaming scan before it reaches the disk image, and the channel obeys the
verdict (commit, commit zero-filled data, or refuse with ERR/ABRT). Reads are seen and counted.

Streaming: writes to consecutive LBAs form one *run*, scanned as one stream, so a signature
straddling two sectors, two PIO commands or two DMA commands is found. The stream carries the
scanner's own state (Hyperscan stream state or the Aho-Corasick iterator, plus the scanner's
bounded verification history), never the written data. A write that does not continue the run
(any other LBA) closes the stream and opens a new one: one stream per disk, so the state is
bounded by the database, never by the guest.

Database updates: a write checks ``ActiveDatabase.current``; when a new database is in force, the
run goes on under it from that write: a new stream is opened and primed with the run's last
``widest - 1`` bytes (the widest single part of the new database, at most ``MAX_REPRIME``) read back
from the disk image, so a signature that began before the update and ends in the write is found.
Nothing costs anything on the write path until an update actually happens. When the database in
force is only recompiled (same signatures, a faster literal finder: the second stage of a sharded
activation), the run's stream goes on and only its literal finder is replaced, primed the same
way, so nothing found so far, not even a chain of parts, is forgotten.

Actions (``--on-detect``, default ``warn,cut-network,zero-fill``):
- warn: an event ``detection`` per match (at most ``MAX_DETECTION_EVENTS`` a write) and a warning
  box on the VGA text screen;
- cut-network: ``cut_network(reason)``, the machine's flag the NIC obeys;
- zero-fill: exactly the matched bytes are zeroed: those in this write before it is committed,
  those in earlier (already committed) sectors of the same run directly in the image;
- block: the whole write (the DRQ block or DMA transfer) is refused; the run ends. Earlier,
  committed sectors of the run stay as written (block wins over zero-fill).

Follows: BitVisor ``storage.c`` / ``ata_core.c`` for where the hook sits; ClamAV body-signature
semantics through ``hv_emu.scanner``; docs/STORAGE.md states exactly what is and is not found.

Leaves out: files fragmented across non-consecutive LBAs (each run is scanned on its own), offsets
anchored to a file's start (ndb offsets count from the first byte of a run, or from the re-prime
point after an update), multi-part signatures whose earlier parts were written before the update
that brought them (unless within the re-prime window), and interleaved runs (only the latest is
followed).

Guest controls: the LBAs, the order and the data of every write (a hostile guest can only make the
scan slower, or break its own runs to hide fragments: see docs/STORAGE.md); never the actions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hv_emu.devices.storage.disk import Disk
from hv_emu.devices.storage.observer import (
    COMMIT,
    SECTOR_SIZE,
    StorageRead,
    StorageWrite,
    Verdict,
)
from hv_emu.devices.vga import VgaText
from hv_emu.errors import ConfigError
from hv_emu.events import EventLog
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.scanner.engine import Match, ScanStream

#: Every action ``--on-detect`` accepts, in the order they are applied.
ACTIONS = ("warn", "cut-network", "zero-fill", "block")
DEFAULT_ACTIONS = ("warn", "cut-network", "zero-fill")
#: The most bytes read back from the image to prime a stream under a newly installed database.
MAX_REPRIME = 64 * 1024
#: The most ``detection`` events one write logs: a guest can pack a 32 MiB write with hundreds of
#: thousands of copies of a signature, and each is still counted and zero-filled, but logging
#: every one would cost seconds and hundreds of MiB per write. ``in_write`` gives the total.
MAX_DETECTION_EVENTS = 64
#: ATA opcodes by name, for the warning box (the rest show as hex).
_COMMAND_NAMES = {0x30: "WRITE SECTORS", 0x31: "WRITE SECTORS", 0x34: "WRITE SECTORS EXT",
                  0x39: "WRITE MULTIPLE EXT", 0xC5: "WRITE MULTIPLE", 0xCA: "WRITE DMA",
                  0xCB: "WRITE DMA", 0x35: "WRITE DMA EXT", 0x3D: "WRITE DMA FUA EXT",
                  0x61: "WRITE FPDMA QUEUED"}


def parse_actions(text: str) -> tuple[str, ...]:
    """``"warn,block"`` -> ``("warn", "block")`` in ``ACTIONS`` order; ``ConfigError`` otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ACTIONS]
    if unknown or not names:
        what = f"unknown action {unknown[0]!r}" if unknown else "no action given"
        raise ConfigError(f"--on-detect: {what} (choose from {','.join(ACTIONS)})")
    return tuple(action for action in ACTIONS if action in names)


@dataclass(frozen=True)
class Detection:
    """A signature found in the written data: ``length`` bytes from byte ``offset`` of ``lba``."""

    signature: str
    lba: int
    offset: int
    length: int
    transport: str
    command: int


class Inspector:
    """The ``StorageObserver`` of hv-emu's disk: scan, then warn, cut, zero-fill or block."""

    def __init__(
        self,
        database: ActiveDatabase,
        disk: Disk,
        events: EventLog,
        *,
        actions: Sequence[str] = DEFAULT_ACTIONS,
        screen: VgaText | None = None,
        cut_network: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.disk = disk
        self.events = events
        self.actions = tuple(action for action in ACTIONS if action in actions)
        self.screen = screen
        self.cut_network = cut_network
        self.detections = 0
        self.sectors_written = 0
        self.sectors_read = 0
        #: The last host I/O error met while zero-filling or re-priming (never raised).
        self.host_error: OSError | None = None
        # The run being followed: its stream, the database it scans with, the image offset of the
        # stream's byte 0, where the run began, and where the next write must start to continue it.
        self._stream: ScanStream | None = None
        self._db: SignatureDatabase | None = None
        self._origin = 0
        self._first = 0
        self._next = -1

    # ------------------------------------------------------------------ the observer contract
    def on_write(self, w: StorageWrite) -> Verdict:
        """Scan ``w`` as the continuation of the current run (or the start of a new one)."""
        self.sectors_written += w.sector_count
        position = w.lba * SECTOR_SIZE
        db = self.database.current
        if self._stream is None or position != self._next or db is not self._db:
            self._follow(db, position)
        assert self._stream is not None
        matches = self._stream.feed(w.data)
        self._next = position + len(w.data)
        if not matches:
            return COMMIT
        return self._act(w, position, matches)

    def on_read(self, r: StorageRead) -> None:
        """Reads are not scanned (the data was scanned on its way in); they are counted."""
        self.sectors_read += r.sector_count

    # ------------------------------------------------------------------ runs and streams
    def _follow(self, db: SignatureDatabase, position: int) -> None:
        """Open the stream for a write at ``position``: a new run, or the same run under the
        database that has just come into force (primed with the run's last bytes)."""
        continues = self._stream is not None and position == self._next
        if continues and self._db is not None and db.program is self._db.program:
            # The same database with its literal finder recompiled (the second stage of a
            # sharded activation): the stream goes on, only its finder changes under it.
            assert self._stream is not None
            literals = None if db.matcher is None else db.matcher.open()
            if literals is not None:
                self._stream.switch_literals(literals, self._carried(db, position))
                self._db = db
                return
        if self._stream is not None:
            self._stream.close()
        if not continues:
            self._first = position
        carried = self._carried(db, position) if continues else b""
        self._stream, self._db = db.open_stream(), db
        self._origin = position - len(carried)
        if carried:
            # Matches that end here lie wholly in data written before this database was in force.
            self._stream.feed(carried)

    def _carried(self, db: SignatureDatabase, position: int) -> bytes:
        """The run's last bytes before ``position`` that a signature of ``db`` ending in the next
        write could start in, read back from the image (as committed: zero-filled bytes are 0)."""
        want = min(max(db.program.widest - 1, 0), position - self._first, MAX_REPRIME)
        if want == 0:
            return b""
        lba = (position - want) // SECTOR_SIZE
        count = position // SECTOR_SIZE - lba
        try:
            data = self.disk.read_sectors(lba, count)
        except OSError as error:
            self.host_error = error
            return b""
        return data[len(data) - want :]

    def _end_run(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream, self._db, self._next = None, None, -1

    # ------------------------------------------------------------------ actions
    def _act(self, w: StorageWrite, position: int, matches: list[Match]) -> Verdict:
        # Every match is counted and acted on; only the first ones are described and logged.
        found = [self._detection(w, m) for m in matches[:MAX_DETECTION_EVENTS]]
        self.detections += len(matches)
        for d in found:
            self.events.emit(
                "detection", signature=d.signature, lba=d.lba, offset=d.offset, length=d.length,
                actions=list(self.actions), in_write=len(matches),
            )  # fmt: skip
        if "warn" in self.actions and self.screen is not None:
            self.screen.draw_box(self._warning(found, len(matches)))
        if "cut-network" in self.actions and self.cut_network is not None:
            self.cut_network(f"{found[0].signature} written at LBA {found[0].lba}")
        if "block" in self.actions:
            # The refused data never reaches the image: the run cannot go on past it.
            self._end_run()
            return Verdict.refuse(f"signature {found[0].signature}")
        if "zero-fill" in self.actions:
            return Verdict.commit_modified(self._zero_fill(w.data, position, matches), "zero-fill")
        return COMMIT

    def _detection(self, w: StorageWrite, match: Match) -> Detection:
        start = self._origin + match.start
        return Detection(match.name, start // SECTOR_SIZE, start % SECTOR_SIZE,
                         match.end - match.start, w.transport, w.command)  # fmt: skip

    def _zero_fill(self, data: bytes, position: int, matches: list[Match]) -> bytes:
        """``data`` with every matched byte zeroed; matched bytes before ``position`` (earlier
        sectors of the run, already in the image) are zeroed in the image now."""
        filled = bytearray(data)
        for m in matches:
            start, end = self._origin + m.start, self._origin + m.end  # image byte offsets
            inside = max(start, position)
            filled[inside - position : end - position] = bytes(end - inside)
            if start < position:
                self._zero_committed(start, min(end, position))
        return bytes(filled)

    def _zero_committed(self, start: int, end: int) -> None:
        """Zero image bytes ``[start, end)`` (whole sectors read, patched, written back)."""
        lba = start // SECTOR_SIZE
        count = (end + SECTOR_SIZE - 1) // SECTOR_SIZE - lba
        try:
            sectors = bytearray(self.disk.read_sectors(lba, count))
            base = lba * SECTOR_SIZE
            sectors[start - base : end - base] = bytes(end - start)
            self.disk.write_sectors(lba, bytes(sectors))
        except OSError as error:
            self.host_error = error

    def _warning(self, found: list[Detection], total: int) -> list[str]:
        first = found[0]
        command = _COMMAND_NAMES.get(first.command, f"command {first.command:#04x}")
        lines = [
            "hv-emu: MALWARE SIGNATURE IN A DISK WRITE",
            "",
            f"signature: {first.signature}",
            f"where:     LBA {first.lba}, byte {first.offset}, {first.length} bytes",
            f"how:       {command} ({first.transport.upper()})",
            f"actions:   {', '.join(self.actions)}",
        ]
        if total > 1:
            lines.append(f"(and {total - 1} more in the same write)")
        return lines
