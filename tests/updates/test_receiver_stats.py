"""The update receiver's observability: ``stats()`` snapshots, the ``receiver_stats`` event at a
bounded rate (and once when polling stops), and the ``hv-emu run`` summary naming what arrived and
the top reasons for drops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from guest_tool.encoding import carousel
from hv_emu.updates.receiver_stats import PROGRESS_COUNTERS, STATS_INTERVAL, ReceiverStats
from tests.rigs.events import documented
from tests.rigs.netupdate import SOURCE, encoded, rig
from tests.rigs.nic import cli_run_receiving_update

V = 5


def stats_events(events: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events if e["event"] == "receiver_stats"]


def test_receiver_stats_are_logged_at_most_once_a_second_and_once_at_the_end() -> None:
    r = rig(installed=2)
    update = encoded(V, lines=400)
    packets = list(carousel(update, rounds=2))
    step = 0.05  # about 4 s of fake time for the ~80 packets
    start = r.clock.now
    r.feed(packets, step=step)
    elapsed = r.clock.now - start
    periodic = r.events.of("receiver_stats")
    assert 2 <= len(periodic) <= math.floor(elapsed / STATS_INTERVAL) + 1
    times = [e["t"] for e in periodic]
    assert all(not e["final"] for e in periodic)
    r.receiver.poll(final=True)
    (last,) = r.events.of("receiver_stats")[len(periodic):]
    stats = r.receiver.stats()
    assert last["final"] is True and last["datagrams"] == len(packets) == stats.datagrams
    assert last["installed"] == 1 and last["drops"] == stats.drops
    assert last["dropped"] == sum(stats.drops.values()) > 0  # the second round: duplicates
    # Nothing changed since: another final poll logs nothing; nor do idle polls.
    r.receiver.poll(final=True)
    r.clock.now += 10
    r.receiver.poll()
    assert len(r.events.of("receiver_stats")) == len(periodic) + 1
    assert times == sorted(times)


def test_a_final_poll_with_nothing_received_still_reports_once() -> None:
    r = rig()
    r.receiver.poll()
    r.receiver.poll(final=True)
    r.receiver.poll(final=True)
    (only,) = r.events.of("receiver_stats")
    assert only["datagrams"] == 0 and only["drops"] == {} and only["final"] is True


def test_the_event_has_exactly_the_documented_fields() -> None:
    r = rig()
    r.receiver.on_datagram(b"junk", SOURCE)
    r.receiver.poll(final=True)
    (event,) = r.events.of("receiver_stats")
    assert set(event) - {"event", "t"} == documented()["receiver_stats"]
    json.dumps(event)  # JSON as it is written to --events


def test_drops_hold_every_refusal_and_no_progress_counter() -> None:
    r = rig(installed=2)
    update = encoded(V)
    for payload in [b"x" * 10, b"y" * 2000, b"HVDB" + bytes(40), *update.symbols[:3]]:
        r.receiver.on_datagram(payload, SOURCE)
    r.feed(carousel(update, rounds=2))
    stats = r.receiver.stats()
    assert not set(stats.drops) & PROGRESS_COUNTERS
    refused = {k: v for k, v in r.receiver.counters.items() if k not in PROGRESS_COUNTERS}
    assert stats.drops == refused
    assert {"truncated", "oversize", "no_session", "duplicate"} <= set(stats.drops)
    assert list(stats.drops.values()) == sorted(stats.drops.values(), reverse=True)
    assert stats.installed == 1 and stats.sessions_open == 0 and stats.sessions_opened == 1
    assert stats.verifications == 1
    assert stats.symbols_accepted == r.receiver.counters["symbol_accepted"] > 0


def test_summary_names_the_top_reasons_and_sums_the_rest() -> None:
    stats = ReceiverStats(10, 1, 4, 1, 0, 1,
                          {"duplicate": 5, "stale": 2, "no_page_yet": 1, "bad_magic": 1,
                           "truncated": 1})  # fmt: skip
    assert stats.summary() == (
        "update receiver: 10 datagrams, 1 symbol accepted, 4 manifest checks, 1 installed; "
        "dropped 10: 5 duplicate, 2 stale, 1 no_page_yet, 2 for 2 other reasons"
    )
    clean = ReceiverStats(3, 2, 1, 1, 0, 1, {})
    assert clean.summary().endswith("1 installed; nothing dropped")
    lines = stats.status_lines()
    assert "update_datagrams_taken: 10" in lines and "update_manifest_checks: 4" in lines
    assert "update_drops: duplicate=5,stale=2,no_page_yet=1,bad_magic=1,truncated=1" in lines


def test_hv_emu_run_summary_and_events_say_what_arrived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``hv-emu run --net ... --events``: the NIC guest says hello, the peer pushes v7, waits for
    it to be accepted and answers; the summary line names the receiver's counts and drop reasons,
    and the events file ends its receiver_stats with the final one, before the halt."""
    codes, events = cli_run_receiving_update(tmp_path)
    assert codes == [0]
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("hv-emu: guest halted: ") and "database v7" in line
    assert "; update receiver: " in line and " 1 installed; dropped " in line, line
    records = [json.loads(text) for text in events.read_text().splitlines()]
    kinds = [r["event"] for r in records]
    stats = stats_events(records)
    assert stats and stats[-1]["final"] is True and all(not s["final"] for s in stats[:-1])
    assert kinds.index("update_accepted") < len(kinds) - 1 - kinds[::-1].index("receiver_stats")
    assert kinds.index("halt") > len(kinds) - 1 - kinds[::-1].index("receiver_stats")
    assert stats[-1]["installed"] == 1 and f"{stats[-1]['datagrams']} datagrams," in line
    top = next(iter(stats[-1]["drops"]))
    assert f"{stats[-1]['drops'][top]} {top}" in line
    duration = records[-1]["t"]
    assert len(stats) <= math.floor(duration / STATS_INTERVAL) + 2


def test_another_thread_reads_the_counters_under_the_networks_lock() -> None:
    """What ``get_status`` is to call from the vCPU thread while the I/O thread feeds the
    receiver: ``network.under_lock(receiver.stats)``."""
    from hv_emu.net.backends import UdpBackend
    from tests.rigs.nic import loopback_machine

    peer = UdpBackend(("127.0.0.1", 0))
    machine = loopback_machine(peer)
    try:
        assert machine.network is not None and machine.receiver is not None
        with machine.serving_network():
            peer.send_frame(b"not an update frame at all")
            snapshot = machine.network.under_lock(machine.receiver.stats)
        assert isinstance(snapshot, ReceiverStats) and snapshot.datagrams == 0
        # stopping the I/O thread logged the final receiver_stats
        assert [e["final"] for e in machine.events.of("receiver_stats")][-1] is True
    finally:
        machine.close()
        peer.close()
