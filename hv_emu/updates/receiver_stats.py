"""What the update receiver reports: a snapshot of its counters, and when to log it.

Models: the receiver's observability (``docs/PROTOCOL.md``, "Check order", last paragraph):
``ReceiverStats`` is a consistent snapshot of the counters (what arrived, what was dropped and
why, verifications, sessions) for the end-of-run summary and ``get_status``; ``StatsReporter``
logs it as the event ``receiver_stats`` (``docs/EVENTS.md``) at most once per
``STATS_INTERVAL`` of the receiver's clock while the counters change, and once more when its
caller stops polling.

Follows: ``docs/EVENTS.md`` (``receiver_stats``), ``docs/PROTOCOL.md`` (the counter names).

Leaves out: rates (events carry totals; a reader subtracts two of them).

Network controls: the counts (how many datagrams of each kind arrive), never the number of
events: at most one per ``STATS_INTERVAL`` plus the final one.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from hv_emu.events import EventLog, JsonValue
from hv_emu.usage import plural

#: Counters that record progress; every other counter names a reason something was dropped or
#: refused (a datagram, a candidate manifest at ``poll``, or a session).
PROGRESS_COUNTERS = frozenset({
    "datagrams", "manifest_queued", "verifications", "session_opened", "page_accepted",
    "symbol_accepted", "block_decoded", "installed",
})  # fmt: skip
#: Seconds (of the receiver's clock) between two ``receiver_stats`` events, at least.
STATS_INTERVAL = 1.0
#: Drop reasons named in the end-of-run summary; the rest are summed.
SUMMARY_REASONS = 3


@dataclass(frozen=True)
class ReceiverStats:
    """A snapshot of the receiver's counters: what arrived, what was dropped and why."""

    datagrams: int
    symbols_accepted: int
    verifications: int
    sessions_opened: int
    sessions_open: int
    installed: int
    #: Drop and refusal counts by reason (the counter names of ``docs/PROTOCOL.md``), largest
    #: first; reasons never seen are absent.
    drops: dict[str, int]

    @classmethod
    def of(cls, counters: collections.Counter[str], sessions_open: int) -> ReceiverStats:
        drops = {k: v for k, v in counters.items() if k not in PROGRESS_COUNTERS and v}
        ordered = dict(sorted(drops.items(), key=lambda item: (-item[1], item[0])))
        return cls(
            counters["datagrams"], counters["symbol_accepted"], counters["verifications"],
            counters["session_opened"], sessions_open, counters["installed"], ordered,
        )  # fmt: skip

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def summary(self) -> str:
        """One phrase for the end-of-run line: what arrived, and the top reasons for drops."""
        text = (
            f"update receiver: {plural(self.datagrams, 'datagram')}, "
            f"{plural(self.symbols_accepted, 'symbol')} accepted, "
            f"{plural(self.verifications, 'manifest check')}, {self.installed} installed"
        )
        if not self.drops:
            return text + "; nothing dropped"
        top = list(self.drops.items())[:SUMMARY_REASONS]
        text += f"; dropped {self.dropped}: " + ", ".join(f"{n} {reason}" for reason, n in top)
        rest = list(self.drops.values())[SUMMARY_REASONS:]
        if rest:
            text += f", {sum(rest)} for {len(rest)} other reason{'s' if len(rest) > 1 else ''}"
        return text

    def status_lines(self) -> list[str]:
        """``key: value`` lines in the style of ``get_status`` (for whoever wires it there)."""
        drops = ",".join(f"{reason}={n}" for reason, n in self.drops.items()) or "none"
        return [
            f"update_datagrams_taken: {self.datagrams}",
            f"update_symbols_accepted: {self.symbols_accepted}",
            f"update_manifest_checks: {self.verifications}",
            f"update_sessions: {self.sessions_open} open, {self.sessions_opened} opened",
            f"update_installed: {self.installed}",
            f"update_drops: {drops}",
        ]


class StatsReporter:
    """Logs ``receiver_stats`` from snapshots, rate-limited on ``clock``."""

    def __init__(self, events: EventLog, clock: Callable[[], float]) -> None:
        self.events, self.clock = events, clock
        # The counters last logged, when, and how many times.
        self._reported: dict[str, int] = {}
        self._reported_at = clock()
        self._reports = 0

    def report(self, counters: collections.Counter[str], sessions_open: int, final: bool) -> None:
        """Log: at most once per ``STATS_INTERVAL`` while the counters change; when ``final``,
        if they changed since the last one (or none was logged yet)."""
        now = self.clock()
        if not final and now - self._reported_at < STATS_INTERVAL:
            return
        if dict(counters) == self._reported and (self._reports or not final):
            return
        self._reported, self._reported_at = dict(counters), now
        self._reports += 1
        stats = ReceiverStats.of(counters, sessions_open)
        drops: dict[str, JsonValue] = dict(stats.drops)
        self.events.emit(
            "receiver_stats", datagrams=stats.datagrams, symbols_accepted=stats.symbols_accepted,
            verifications=stats.verifications, sessions_opened=stats.sessions_opened,
            sessions_open=stats.sessions_open, installed=stats.installed,
            dropped=stats.dropped, drops=drops, final=final,
        )  # fmt: skip
