"""The event log: what the hypervisor did, as JSON lines (``hv-emu run --events FILE``).

Models: the hypervisor's audit trail, the way BitVisor keeps a log ring that tools read from outside
the guest. Every event is one JSON object on one line with an ``"event"`` field naming its kind and
``"t"``, seconds since the machine was built; ``docs/EVENTS.md`` lists every kind and its fields.

Follows: JSON Lines (one UTF-8 JSON value per line, ``\\n``-terminated).

Leaves out: rotation and size limits of the file (a run is finite); the in-memory copy kept for
tests and the status text can be turned off with ``keep=False``.

Guest controls: values inside events (hypercall arguments, reasons); never their keys or kinds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TextIO

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
Event = dict[str, JsonValue]


class EventLog:
    """Writes events to ``sink`` (a text stream, flushed per line) and keeps them in ``records``."""

    def __init__(
        self,
        sink: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep: bool = True,
    ) -> None:
        self._sink = sink
        self._clock = clock
        self._t0 = clock()
        self._keep = keep
        self.records: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: JsonValue) -> Event:
        with self._lock:  # the vCPU thread and a database compile may emit at once
            record: Event = {"event": event, "t": round(self._clock() - self._t0, 6)}
            record.update(fields)
            if self._keep:
                self.records.append(record)
            if self._sink is not None:
                self._sink.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._sink.flush()
            return record

    def of(self, event: str) -> list[Event]:
        """The kept records of one kind, in order."""
        return [r for r in self.records if r["event"] == event]

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None
