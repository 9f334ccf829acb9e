"""The run recorder (``hv_emu/debug/recorder.py``): what each feed makes, guest time, and the bounds
whatever the guest does."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.debug.recorder import LANES, MAX_TEXT, RunRecorder
from hv_emu.devices.storage.observer import StorageWrite, Verdict
from hv_emu.events import EventLog
from hv_emu.exits import Cpuid, Failed, Fault, Halt, Handled, Hypercall, PortIn, PortOut, Stopped
from hv_emu.layout import PORT_ATA_PRIMARY
from hv_emu.machine import Machine, MachineConfig
from hv_emu.memory.walk import PagingState
from hv_emu.vcpu.deliver import Injection
from hv_emu.vcpu.injection import Delivered, EventType, Refused
from hv_emu.vcpu.injection import Event as InjectedEvent
from tests.conftest import boot_asm

PAGING = PagingState(cr0=0, cr3=0, cr4=0, efer=0)


def vmcall(nr: int, rbx: int = 0) -> Hypercall:
    return Hypercall(nr=nr, args=(rbx, 0, 0, 0, 0), mode=64, rip=0x100003, paging=PAGING)


def names(nr: int) -> str | None:
    return {0: "get_vmmcall_number", 2: "update_signatures"}.get(nr)


def test_each_exit_is_a_mark_and_counted_by_reason() -> None:
    rec = RunRecorder(hypercall_name=names)
    rec.on_exit(PortOut(0xE9, 1, 0x41), Handled(), 2e-6)
    rec.on_exit(PortOut(0xE9, 1, 0x42), Handled(), 4e-6)
    rec.on_exit(PortIn(0x1F7, 1), Handled(value=0x50), 1e-6)
    rec.on_exit(Cpuid(1, 0), Handled(), 3e-6)
    rec.on_exit(Halt(64, 0x100010), Stopped("halt"), 1e-6)
    assert [m.label for m in rec.marks["exit"]] == ["IO_INSTRUCTION"] * 3 + ["CPUID", "HLT"]
    assert [m.exit_no for m in rec.marks["exit"]] == [1, 2, 3, 4, 5]
    io = rec.reasons["IO_INSTRUCTION"]
    assert io.count == 3 and io.total == pytest.approx(7e-6)
    assert io.least == pytest.approx(1e-6) and io.most == pytest.approx(4e-6)
    assert io.mean == pytest.approx(7e-6 / 3)
    assert rec.marks["exit"][1].detail("value") == "0x42"
    assert rec.marks["exit"][1].detail("port") == "0xe9"
    assert rec.final is rec.marks["exit"][-1] and rec.final.detail("action") == "stop: halt"


def test_a_hypercall_is_an_exit_and_a_hypercall_mark_with_its_return_code() -> None:
    rec = RunRecorder(hypercall_name=names)
    rec.on_exit(vmcall(0, rbx=0x1000), Handled(registers={"rax": 2}), 1e-5)
    rec.on_exit(vmcall(2), Handled(registers={"rax": 5}), 1e-5)
    rec.on_exit(vmcall(99), Handled(registers={"rax": 0}), 1e-5)
    lookup, update, unknown = rec.marks["hypercall"]
    # get_vmmcall_number answers a number, not a code: no code's name.
    assert lookup.label == "get_vmmcall_number -> 0x2" and lookup.detail("rc") is None
    assert lookup.detail("rbx") == "0x1000"
    assert update.label == "update_signatures -> STALE_VERSION" and update.detail("rc") == (
        "STALE_VERSION")
    assert unknown.label == "#99 -> 0x0" and unknown.detail("name") == "(none)"
    assert [m.label for m in rec.marks["exit"]] == ["VMCALL"] * 3


def test_events_become_detection_and_update_marks_and_the_rest_is_ignored() -> None:
    rec = RunRecorder()
    log = EventLog()
    log.listeners.append(rec.on_event)
    log.emit("hypercall", nr=0, name="x", args=[0, 0, 0], ret=0)  # the exit says it
    log.emit("detection", signature="Burghofer", lba=7, offset=3, length=15,
             actions=["warn", "zero-fill"], in_write=1)  # fmt: skip
    log.emit("network_cut", reason="Burghofer written at LBA 7")
    log.emit("update_accepted", source="vmcall", db_version=7, previous_version=0,
             active_version=0, signatures=5, sha256="ab", key_id="cd")  # fmt: skip
    log.emit("update_rejected", source="network", code=5, error="STALE_VERSION", reason="old",
             db_version=7, active_version=7)  # fmt: skip
    log.emit("database_active", db_version=7, previous_version=0, signatures=5, literals=9,
             engine="hyperscan", compile_seconds=0.1, shards=1)  # fmt: skip
    log.emit("database_failed", db_version=8, reason="too big", active_version=7)
    assert [m.label for m in rec.marks["detection"]] == ["Burghofer", "network cut"]
    detection = rec.marks["detection"][0]
    assert detection.detail("lba") == "7" and detection.detail("actions") == "warn,zero-fill"
    assert [m.label for m in rec.marks["update"]] == [
        "v7 accepted", "refused: STALE_VERSION", "v7 in force", "v8 failed to compile"]
    assert rec.marks["hypercall"] == [] and rec.marks["exit"] == []


def test_disk_writes_carry_lba_sectors_and_the_verdict() -> None:
    rec = RunRecorder()
    rec.on_disk_write(StorageWrite(100, bytes(1024), "dma", 0xCA), Verdict.commit())
    rec.on_disk_write(StorageWrite(0, bytes(512), "pio", 0x30),
                      Verdict.commit_modified(bytes(512), "zero-filled"))  # fmt: skip
    rec.on_disk_write(StorageWrite(5, bytes(512), "pio", 0x30), Verdict.refuse("blocked"))
    first, second, third = rec.marks["disk_write"]
    assert first.label == "LBA 100 +2" and first.detail("transport") == "dma"
    assert first.detail("command") == "0xca" and first.detail("verdict") == "written"
    assert second.detail("verdict") == "written modified"
    assert second.detail("reason") == "zero-filled"
    assert third.detail("verdict") == "refused" and third.detail("sectors") == "1"


def test_injections_in_vt_x_terms() -> None:
    rec = RunRecorder()
    rec.record_injection(14, 3, error_code=0x2)
    rec.record_injection(0x20, "external interrupt")
    rec.record_injection(0x80, 4)
    pf, timer, soft = rec.marks["injected"]
    assert pf.label == "#PF (14)" and pf.detail("type") == "hardware exception"
    assert pf.detail("error_code") == "0x2"
    assert timer.label == "vector 0x20" and timer.detail("error_code") is None
    assert soft.detail("type") == "software interrupt"
    for bad in ((256, 0), (-1, 0), (3, 1), (3, 8), (3, "interrupt")):
        with pytest.raises(ValueError):
            rec.record_injection(*bad)  # type: ignore[arg-type]
    assert len(rec.marks["injected"]) == 3


def test_the_vcpus_injections_become_marks_with_how_each_went() -> None:
    rec = RunRecorder()
    tick = Injection((InjectedEvent(8, EventType.EXTERNAL_INTERRUPT),), Delivered(0xF000, 0x1080))
    chain = Injection((InjectedEvent(14, EventType.HARDWARE_EXCEPTION, 2, cr2=0x5000),
                       InjectedEvent(8, EventType.HARDWARE_EXCEPTION, 0)), None)  # fmt: skip
    refused = Injection((InjectedEvent(0x21, EventType.SOFTWARE_INTERRUPT),), Refused("no gate"))
    for injection in (tick, chain, refused):
        rec.on_injection(injection, 0x10, 0x1234)
    marks = rec.marks["injected"]
    assert [m.label for m in marks] == ["vector 0x08", "#PF (14)", "#DF (8)", "vector 0x21"]
    assert [m.detail("result") for m in marks] == [
        "delivered -> f000:1080", "faulted while delivered", "triple fault", "refused: no gate"]
    assert marks[1].detail("error_code") == "0x2" and marks[0].detail("at") == "0010:1234"


def test_guest_time_is_the_exit_ordinal_unless_a_clock_is_given() -> None:
    rec = RunRecorder()
    rec.record_injection(0x20, 0)  # before any exit
    rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    rec.record_injection(0x20, 0)
    # Between exits, a mark belongs to the exit that comes next: the first exit not finished.
    assert [m.t for m in rec.marks["injected"]] == [1.0, 3.0]
    assert rec.t_max == 3.0
    now = iter([0.5, 1.25, 9.0])
    timed = RunRecorder(clock=lambda: next(now), clock_unit="guest seconds")
    timed.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    timed.record_injection(0x20, 0)
    timed.on_exit(Halt(64, 0), Stopped("halt"), 0.0)
    assert [m.t for m in timed.marks["exit"]] == [0.5, 9.0]
    assert timed.marks["injected"][0].t == 1.25
    assert timed.marks["injected"][0].exit_no == 2  # the ordinal is kept beside the clock
    hosts = [m.host for m in timed.marks["exit"]]
    assert 0 <= hosts[0] <= hosts[1]


def test_a_clock_that_stood_still_leaves_the_axis_to_the_exits() -> None:
    # hv-emu run's clock is virtual guest time, which moves only while a timer is armed.
    now = [0.0]
    rec = RunRecorder(clock=lambda: now[0], clock_unit="milliseconds")
    rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    rec.on_exit(PortOut(0x80, 1, 0), Handled(), 0.0)
    assert not rec.timed and rec.unit == "exits" and rec.t_max == 2.0
    assert [rec.when(m) for m in rec.marks["exit"]] == [1.0, 2.0]
    now[0] = 54.9
    rec.record_injection(8, 0)
    assert rec.timed and rec.unit == "milliseconds" and rec.t_max == 54.9
    assert [rec.when(m) for m in rec.marks["exit"]] == [0.0, 0.0]


def test_the_axis_follows_an_armed_timer_not_the_clocks_value() -> None:
    """``hv-emu run`` says whether a timer was armed (the PIT's ``armed``): a clock that moved
    with no timer (interrupt-window budgets while IRQ14 waits for IF = 1) leaves the axis to the
    exits, and a timer armed before the clock moved puts it on the clock."""
    now, armed = [0.0], [False]
    rec = RunRecorder(clock=lambda: now[0], clock_unit="milliseconds",
                      timer_armed=lambda: armed[0])  # fmt: skip
    rec.on_exit(PortOut(0x1F0, 2, 0), Handled(), 0.0)
    now[0] = 0.00004  # forty nanoseconds: a few instructions' worth
    rec.on_exit(PortOut(0x1F0, 2, 0), Handled(), 0.0)
    assert not rec.timed and rec.unit == "exits"
    assert [rec.when(m) for m in rec.marks["exit"]] == [1.0, 2.0]
    armed[0] = True
    assert rec.timed and rec.unit == "milliseconds"
    assert [rec.when(m) for m in rec.marks["exit"]] == [0.0, 0.00004]


def test_what_an_exits_handler_does_carries_that_exits_ordinal() -> None:
    # The machine calls its exit observers after the handler returns: an update the handler of
    # the second exit accepted reaches the recorder before that exit does, and is stamped 2.
    rec = RunRecorder()
    rec.on_exit(vmcall(0), Handled({"rax": 0}), 0.0)
    rec.on_event({"event": "update_accepted", "db_version": 7})
    rec.on_exit(vmcall(2), Handled({"rax": 0}), 0.0)
    (accepted,) = rec.marks["update"]
    second = rec.marks["exit"][1]
    assert accepted.exit_no == second.exit_no == 2 and accepted.t == second.t == 2.0
    assert [m.exit_no for m in rec.marks["hypercall"]] == [1, 2]


def test_each_lane_keeps_its_first_marks_and_counts_the_rest_by_label() -> None:
    rec = RunRecorder(max_marks=3)
    for i in range(10):
        rec.on_exit(PortOut(0xE9, 1, i), Handled(), 1e-6)
    rec.on_exit(Cpuid(0, 0), Handled(), 1e-6)
    rec.on_exit(Fault("#GP", 0, 13, 64, 0x18, 0x1000, 0x1000, "ud2"), Failed(
        Fault("#GP", 0, 13, 64, 0x18, 0x1000, 0x1000, "ud2")), 1e-6)
    assert len(rec.marks["exit"]) == 3
    assert [m.detail("value") for m in rec.marks["exit"]] == ["0x0", "0x1", "0x2"]
    assert rec.dropped["exit"] == {"IO_INSTRUCTION": 7, "CPUID": 1, "EXCEPTION_NMI": 1}
    assert rec.total("exit") == 12 and rec.exits == 12
    # The summary counts every exit; the end of the run is kept though its lane was full.
    assert rec.reasons["IO_INSTRUCTION"].count == 10
    assert rec.final is not None and rec.final.label == "EXCEPTION_NMI"
    assert rec.final.detail("fault") == "#GP" and rec.final.exit_no == 12
    assert rec.t_max == 12.0


def test_strings_are_cut() -> None:
    rec = RunRecorder()
    rec.on_event({"event": "detection", "t": 0.0, "signature": "S" * 10_000, "lba": 0,
                  "reason": "r" * 10_000, "actions": ["warn"] * 10_000})  # fmt: skip
    mark = rec.marks["detection"][0]
    assert len(mark.label) == MAX_TEXT and mark.label.endswith("\u2026")
    assert all(len(value) <= MAX_TEXT for _, value in mark.details)
    rec.capture_console(b"x" * 1_000_000)
    assert len(rec.console) == 64 * 1024 and rec.console_total == 1_000_000


#: (what, a number, another number, a string): the guest's exits, writes, injections and finds.
FEEDS = st.lists(st.tuples(
    st.sampled_from(["out", "vmcall", "write", "inject", "detect"]),
    st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.text(max_size=300),
), max_size=60)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(feeds=FEEDS, cap=st.integers(0, 5))
def test_no_feed_grows_a_lane_past_its_cap_and_nothing_is_lost_from_the_counts(
        feeds: list[tuple[str, int, int, str]], cap: int) -> None:  # fmt: skip
    rec = RunRecorder(hypercall_name=names, max_marks=cap)
    sent = dict.fromkeys(LANES, 0)
    for kind, a, b, text in feeds:
        match kind:
            case "out":
                rec.on_exit(PortOut(a & 0xFFFF, 1, b & 0xFF), Handled(), 1e-6)
                sent["exit"] += 1
            case "vmcall":
                rec.on_exit(vmcall(a), Handled(registers={"rax": b}), 1e-6)
                sent["exit"] += 1
                sent["hypercall"] += 1
            case "write":
                rec.on_disk_write(StorageWrite(a, bytes(512 * (1 + b % 4)), "pio", 0x30),
                                  Verdict.commit())  # fmt: skip
                sent["disk_write"] += 1
            case "inject":
                rec.record_injection(a & 0xFF, (0, 2, 3, 4, 5, 6, 7)[b % 7], b if b % 2 else None)
                sent["injected"] += 1
            case "detect":
                rec.on_event({"event": "detection", "t": 0.0, "signature": text, "lba": a})
                sent["detection"] += 1
    for lane in LANES:
        assert len(rec.marks[lane]) == min(cap, sent[lane])
        assert rec.total(lane) == sent[lane]
    assert sum(s.count for s in rec.reasons.values()) == sent["exit"] == rec.exits


def test_feeds_from_several_threads_are_all_counted() -> None:
    rec = RunRecorder(max_marks=50)

    def exits() -> None:
        for _ in range(2000):
            rec.on_exit(PortOut(0xE9, 1, 0), Handled(), 1e-6)

    def events() -> None:
        for _ in range(2000):
            rec.on_event({"event": "database_active", "t": 0.0, "db_version": 1})

    threads = [threading.Thread(target=f) for f in (exits, events, exits)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert rec.exits == 4000 and rec.reasons["IO_INSTRUCTION"].count == 4000
    assert rec.total("exit") == 4000 and rec.total("update") == 2000
    assert len(rec.marks["exit"]) == 50


def test_a_machine_feeds_it_exits_events_disk_writes_and_its_screen(tmp_path: Path) -> None:
    sigs = tmp_path / "t.ndb"
    sigs.write_text("Test.Sig:0:*:0f3b5e8b7d0c31c0cd80b801000000cd80\n")
    machine = Machine(MachineConfig(timeout=10.0, disk=tmp_path / "d.img", disk_size_mib=1,
                                    db=sigs))  # fmt: skip
    rec = RunRecorder(hypercall_name=machine.hypercalls.name)
    machine.exit_observers.append(rec.on_exit)
    machine.events.listeners.append(rec.on_event)
    machine.watch_disk_writes(rec.on_disk_write)
    # Write one sector holding the signature by PIO at LBA 3, say hello on the screen, halt.
    source = """
        mov word ptr [0xb8000], 0x1f48      # 'H', bright white on blue
        mov dx, ATA_PORT + 6
        mov al, 0xe0
        out dx, al
        mov dx, ATA_PORT + 2
        mov al, 1
        out dx, al
        mov dx, ATA_PORT + 3
        mov al, 3
        out dx, al
        xor al, al
        mov dx, ATA_PORT + 4
        out dx, al
        mov dx, ATA_PORT + 5
        out dx, al
        mov dx, ATA_PORT + 7
        mov al, 0x30
        out dx, al
        lea rsi, [rip + data]
        mov ecx, 256
        mov dx, ATA_PORT
        rep outsw
        hlt
    data:
        .byte 0x0f,0x3b,0x5e,0x8b,0x7d,0x0c,0x31,0xc0,0xcd,0x80,0xb8,0x01,0,0,0,0xcd,0x80
        .fill 495, 1, 0
    """.replace("ATA_PORT", hex(PORT_ATA_PRIMARY))
    _, result = boot_asm(source, machine=machine)
    assert result.halted
    rec.capture_screen(machine.vga)
    (write,) = rec.marks["disk_write"]
    assert write.label == "LBA 3 +1" and write.detail("verdict") == "written modified"
    (detection, cut) = rec.marks["detection"]
    assert detection.label == "Test.Sig" and detection.detail("lba") == "3"
    assert cut.label == "network cut"
    # Six OUTs and 256 words of REP OUTSW: each is an exit once someone watches exits.
    assert rec.reasons["IO_INSTRUCTION"].count == 6 + 256 and rec.reasons["HLT"].count == 1
    assert rec.final is not None and detection.exit_no < rec.final.exit_no
    assert rec.screen is not None and rec.screen.cells[:2] == b"H\x1f"


def test_counts_past_the_cap_stay_bounded_when_the_guest_varies_every_label() -> None:
    """A guest that calls a new hypercall number at every exit makes a new label each time:
    past ``MAX_LABELS`` they are counted together, and nothing is lost from the totals."""
    from hv_emu.debug.recorder import MAX_LABELS, OTHER_LABELS

    rec = RunRecorder(hypercall_name=names, max_marks=0)
    for nr in range(3 * MAX_LABELS):
        rec.on_exit(vmcall(nr), Handled(registers={"rax": nr}), 1e-6)
    assert len(rec.dropped["hypercall"]) == MAX_LABELS + 1
    assert rec.dropped["hypercall"][OTHER_LABELS] == 2 * MAX_LABELS
    assert rec.total("hypercall") == 3 * MAX_LABELS
