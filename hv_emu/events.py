"""The event log: what the hypervisor did, as JSON lines (``hv-emu run --events FILE``).

Models: the hypervisor's audit trail, the way BitVisor keeps a log ring that tools read from outside
the guest. Every event is one JSON object on one line with an ``"event"`` field naming its kind and
``"t"``, seconds since the machine was built; ``docs/EVENTS.md`` lists every kind and its fields.

Follows: JSON Lines (one UTF-8 JSON value per line, ``\\n``-terminated).

Bounds: a guest looping on VMCALL makes an event per call (100 to 160 bytes each), so the sink holds
at most ``max_bytes`` (``hv-emu run --events-max``, default 64 MiB; None: no limit) in three
tiers. Routine events (``ROUTINE``: ``hypercall``) stop at ``max_bytes - max_bytes // 4``; every
other kind (detections, update results, database changes) goes on into that last quarter, less
``END_RESERVE`` bytes kept for how the run ended (``halt``, ``fault``, ``timeout``, ``stop``); and
``TRUNCATION_RESERVE`` bytes stay for one ``events_truncated`` record, written at ``close``, that
counts what was dropped, by kind. So the file never exceeds ``max_bytes``, and a truncated log
says so at its end. Dropped events are counted, never aggregated or summarised further.

Failures of the host: a write to the sink that fails (``OSError``: a full disk) never raises from
``emit``, whichever thread emits; the error is kept (``write_error``), nothing more is written,
the events from then on are counted as dropped, and ``close`` raises it once as a ``HostError``.

Listeners: ``listeners`` (a run report's recorder) are called with every event, written or not,
under the log's lock, whatever the cap and ``keep``; they must be quick and must not emit.

Leaves out: rotation of the file (a run is finite); the in-memory copy kept for tests and the
status text (not capped) can be turned off with ``keep=False``.

Guest controls: values inside events (hypercall arguments, reasons) and how many there are; never
their keys or kinds, nor the size of the file past ``max_bytes``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import TextIO

from hv_emu.errors import HostError

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
Event = dict[str, JsonValue]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MIN_MAX_BYTES = 64 * 1024  # room for the reserves below and some events
#: One per guest action, as many as the guest likes: the first kinds dropped past the cap.
ROUTINE = frozenset({"hypercall"})
#: How the run ended: at most one per run, kept while ``TRUNCATION_RESERVE`` bytes remain.
ENDINGS = frozenset({"halt", "fault", "timeout", "stop"})
END_RESERVE = 8 * 1024  # a fault record with its registers is under 1 KiB
TRUNCATION_RESERVE = 1024  # the events_truncated record: a count per kind that was dropped


class EventLog:
    """Writes events to ``sink`` (a text stream, flushed per line) and keeps them in ``records``."""

    def __init__(
        self,
        sink: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep: bool = True,
        max_bytes: int | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES}, not {max_bytes}")
        self._sink = sink
        self._clock = clock
        self._t0 = clock()
        self._keep = keep
        self._max_bytes = max_bytes
        self._written = 0  # bytes written to the sink
        self._dropped: dict[str, int] = {}  # kind -> events not written for want of room
        self._first_dropped_t: JsonValue = None
        self.records: list[Event] = []
        #: The error that stopped writes to the sink (a full disk), if one did; ``close`` raises it.
        self.write_error: OSError | None = None
        #: Called with each event, written or dropped, under the log's lock (a run report's
        #: recorder): they must be quick and must not emit.
        self.listeners: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: JsonValue) -> Event:
        with self._lock:  # the vCPU thread and a database compile may emit at once
            return self._emit(event, **fields)

    def _emit(self, event: str, **fields: JsonValue) -> Event:
        """``emit`` with ``_lock`` held. A sink that cannot be written (a full disk) never raises
        here, on whichever thread emits: the error is kept, nothing more is written, every event
        from then on is counted as dropped, and ``close`` reports it."""
        record: Event = {"event": event, "t": round(self._clock() - self._t0, 6)}
        record.update(fields)
        if self._keep:
            self.records.append(record)
        for listener in self.listeners:
            listener(record)
        if self._sink is not None:
            line = json.dumps(record, separators=(",", ":")) + "\n"  # ASCII: chars = bytes
            if self.write_error is None and self._written + len(line) <= self._room(event):
                try:
                    self._sink.write(line)
                    self._sink.flush()
                except OSError as err:
                    self.write_error = err
                else:
                    self._written += len(line)
                    return record
            self._dropped[event] = self._dropped.get(event, 0) + 1
            if self._first_dropped_t is None:
                self._first_dropped_t = record["t"]
        return record

    def _room(self, event: str) -> float:
        """Where events of this kind stop: the tiers of the module docstring."""
        if self._max_bytes is None:
            return math.inf
        if event == "events_truncated":
            return self._max_bytes
        if event in ENDINGS:
            return self._max_bytes - TRUNCATION_RESERVE
        if event in ROUTINE:
            return self._max_bytes - self._max_bytes // 4
        return self._max_bytes - TRUNCATION_RESERVE - END_RESERVE

    @property
    def dropped(self) -> int:
        """Events not written to the sink for want of room."""
        return sum(self._dropped.values())

    def of(self, event: str) -> list[Event]:
        """The kept records of one kind, in order."""
        return [r for r in self.records if r["event"] == event]

    def close(self) -> None:
        """Write the ``events_truncated`` record if anything was dropped, then close the sink.

        Raises ``HostError`` (one line: the file, the error, how many events were lost) if a write
        to the sink failed during the run or fails now; the sink is closed either way."""
        with self._lock:
            sink, self._sink = self._sink, None
            if sink is None:
                return
            if self._dropped and self.write_error is None:
                by_kind: dict[str, JsonValue] = {kind: n for kind, n in self._dropped.items()}
                self._sink = sink  # for this last record only
                self._emit("events_truncated", max_bytes=self._max_bytes, dropped=self.dropped,
                           dropped_by_kind=by_kind,
                           first_dropped_t=self._first_dropped_t)  # fmt: skip
                self._sink = None
            try:
                sink.close()
            except OSError as err:  # buffered text that cannot be flushed
                if self.write_error is None:
                    self.write_error = err
            error, dropped = self.write_error, self.dropped
        if error is not None:
            name = getattr(sink, "name", "the events file")
            why = error.strerror or str(error)
            raise HostError(f"cannot write events to {name}: {why}; {dropped} events not "
                            "written (the file ends where the error began)")  # fmt: skip
