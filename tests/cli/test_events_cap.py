"""``hv-emu run --events-max``: a guest cannot grow the event log without bound (docs/EVENTS.md)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from hv_emu.cli.main import main
from hv_emu.errors import HostError
from hv_emu.events import EventLog


class Sink(io.StringIO):
    """A text sink that keeps its text after close, as a file on disk would."""

    def close(self) -> None:
        self.kept = self.getvalue()
        super().close()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_past_the_cap_routine_events_are_dropped_and_counted() -> None:
    sink = Sink()
    ticks = iter(range(100_000))
    log = EventLog(sink, keep=False, max_bytes=65536, clock=lambda: float(next(ticks)))
    for n in range(2000):  # ~100 bytes each: about 200 000 bytes asked for
        log.emit("hypercall", nr=0, name="get_status", args=[n, 0, 0], ret=0)
    log.emit("update_rejected", source="vmcall", code=5, error="BAD_SIGNATURE", reason="x" * 50,
             db_version=1)  # fmt: skip
    log.emit("detection", signature="Demo", lba=1, offset=2, length=3, actions=["warn"],
             in_write=1)  # fmt: skip
    log.emit("halt", mode=64, rip=0x100005)
    log.close()
    text = sink.kept
    assert len(text.encode()) <= 65536
    records = lines(text)
    kinds = [r["event"] for r in records]
    # The rare kinds are kept past the cap on routine events; the truncation record comes last.
    assert kinds[-4:] == ["update_rejected", "detection", "halt", "events_truncated"]
    written = kinds.count("hypercall")
    assert 0 < written < 2000
    last = records[-1]
    assert last["dropped"] == 2000 - written
    assert last["dropped_by_kind"] == {"hypercall": 2000 - written}
    assert last["max_bytes"] == 65536
    assert last["first_dropped_t"] == records[written - 1]["t"] + 1  # the one after the last kept


def test_no_cap_and_no_drops_mean_no_truncation_record() -> None:
    for cap in (None, 1 << 20):
        sink = Sink()
        log = EventLog(sink, keep=False, max_bytes=cap)
        for n in range(100):
            log.emit("hypercall", nr=0, name=None, args=[n, 0, 0], ret=0)
        log.close()
        assert [r["event"] for r in lines(sink.kept)] == ["hypercall"] * 100


def test_rare_kinds_are_bounded_too() -> None:
    """A guest that writes an infected sector in a loop: detections fill their own reserve, then
    are dropped and counted, and the end of the run is still recorded."""
    sink = Sink()
    log = EventLog(sink, keep=False, max_bytes=65536)
    for n in range(5000):
        log.emit("detection", signature="Demo", lba=n, offset=0, length=8, actions=["warn"],
                 in_write=1)  # fmt: skip
    log.emit("timeout", seconds=1.0, mode=64, rip=0)
    log.close()
    assert len(sink.kept.encode()) <= 65536
    records = lines(sink.kept)
    assert [r["event"] for r in records[-2:]] == ["timeout", "events_truncated"]
    assert records[-1]["dropped_by_kind"] == {"detection": 5000 - len(records) + 2}


def test_a_guest_looping_on_vmcall_stays_under_the_cap(tmp_path: Path) -> None:
    guest = tmp_path / "guest.bin"
    guest.write_bytes(assemble("mov ecx, 20000\n again: xor eax, eax\n vmcall\n loop again\n hlt",
                               mode=64, address=0x100000))  # fmt: skip
    events = tmp_path / "events.jsonl"
    code = main(["run", str(guest), "--quiet", "--events", str(events), "--events-max", "65536"])
    assert code == 0
    assert events.stat().st_size <= 65536
    records = lines(events.read_text())
    assert [r["event"] for r in records[-2:]] == ["halt", "events_truncated"]
    kept = sum(r["event"] == "hypercall" for r in records)
    assert records[-1]["dropped_by_kind"] == {"hypercall": 20000 - kept}


def test_events_max_is_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for bad in ("1000", "-1", "lots"):
        with pytest.raises(SystemExit) as usage:
            main(["run", str(tmp_path / "guest.bin"), "--events-max", bad])
        assert usage.value.code == 2
        assert "--events-max" in capsys.readouterr().err


class FullDisk(Sink):
    """A sink on a disk that fills after ``room`` lines: every write from then on fails (ENOSPC)."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.name = "full.jsonl"

    def write(self, text: str) -> int:
        if self.room <= 0:
            raise OSError(28, "No space left on device")
        self.room -= 1
        return super().write(text)


def test_a_write_error_stops_the_log_and_is_reported_once_at_close() -> None:
    """A full disk under --events: emit never raises (on the vCPU, compile or network thread);
    what could not be written is counted as dropped, and ``close`` says so in one HostError."""
    sink = FullDisk(room=3)
    log = EventLog(sink, keep=False)
    for n in range(10):
        log.emit("hypercall", nr=0, name=None, args=[n, 0, 0], ret=0)  # no exception
    assert isinstance(log.write_error, OSError)
    assert log.dropped == 7
    with pytest.raises(HostError) as reported:
        log.close()
    message = str(reported.value)
    assert "\n" not in message
    assert "full.jsonl" in message and "No space left on device" in message
    assert "7 events" in message
    assert [r["args"] for r in lines(sink.kept)] == [[n, 0, 0] for n in range(3)]  # no record after
    log.close()  # once: a second close has nothing to say
    log.emit("halt", mode=64, rip=0)  # after close: nothing written, nothing raised


def test_events_on_a_full_device_end_the_run_with_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    guest = tmp_path / "guest.bin"
    guest.write_bytes(assemble("xor eax, eax\n vmcall\n hlt", mode=64, address=0x100000))
    code = main(["run", str(guest), "--quiet", "--events", "/dev/full"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "internal error" not in err
    assert "cannot write events to /dev/full: No space left on device" in err
