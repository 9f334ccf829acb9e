"""Inspection identical on both controllers: the same writes through bus-master IDE and through
AHCI (WRITE DMA EXT, or NCQ with slots completed out of LBA order) give the same detections, the
same events and the same image, for signatures that straddle a PRD entry, a sector and a
command, under warn, zero-fill and block."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.events import EventLog
from hv_emu.inspection import Inspector
from hv_emu.scanner.database import ActiveDatabase, compile_database
from tests.rigs.ahci import DATA, AhciRig, h2d, ncq, split
from tests.rigs.devices import Rig

SIG = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")  # 17 bytes
NDB = f"Test.Sig:0:*:{SIG.hex()}\n".encode()
SECTORS = 256
IDE_TABLE, IDE_DATA = 0x8000, 0x40000


@dataclass(frozen=True)
class Write:
    lba: int
    data: bytes
    pieces: int  # PRD entries


def planted(nbytes: int, at: int) -> bytes:
    body = bytearray((i * 31 + 7) & 0x7F for i in range(nbytes))
    body[at : at + len(SIG)] = SIG
    return bytes(body)


def straddling_a_command() -> list[Write]:
    """The signature's first 9 bytes end the first command, the rest start the second."""
    whole = planted(2048, 1024 - 9)
    return [Write(10, whole[:1024], 2), Write(12, whole[1024:], 3)]


#: name -> the writes of a scenario
SCENARIOS: dict[str, list[Write]] = {
    # 4 KiB in two PRD entries of 2 KiB: the signature crosses the entry (and a sector) boundary
    "prd-entry": [Write(20, planted(4096, 2048 - 5), 2)],
    # one PRD entry, the signature across sectors 1 and 2
    "sector": [Write(30, planted(2048, 1024 - 8), 1)],
    "command": straddling_a_command(),
    "twice": [Write(40, planted(1024, 3), 1), Write(40, planted(1024, 500), 4)],
}


def inspector_for(disk: object, actions: Sequence[str]) -> tuple[Inspector, EventLog]:
    db = compile_database(NDB, kind="ndb", version=1, source="test.ndb")
    events = EventLog()
    return Inspector(ActiveDatabase(db), disk, events, actions=actions), events  # type: ignore[arg-type]


def via_ide(writes: list[Write],
            actions: Sequence[str]) -> tuple[Inspector, EventLog, Rig, list[bool]]:  # fmt: skip
    rig = Rig(sectors=SECTORS)
    inspector, events = inspector_for(rig.disk, actions)
    rig.ata.observer = inspector
    errors = []
    for w in writes:
        entries = split(IDE_DATA, len(w.data), w.pieces)
        rig.mem.write(IDE_DATA, w.data)
        rig.prd_table(IDE_TABLE, [(p.address, p.nbytes, i == len(entries) - 1)
                                  for i, p in enumerate(entries)])  # fmt: skip
        rig.bm_setup(IDE_TABLE, to_memory=False)
        rig.lba48(0x35, w.lba, len(w.data) // 512)
        rig.bm_start(to_memory=False)
        errors.append(bool(rig.status() & 1))
    return inspector, events, rig, errors


def via_ahci(writes: list[Write], actions: Sequence[str],
             use_ncq: bool) -> tuple[Inspector, EventLog, AhciRig, list[bool]]:  # fmt: skip
    rig = AhciRig(sectors=SECTORS)
    inspector, events = inspector_for(rig.disk, actions)
    rig.hba.executor.observer = inspector
    rig.bring_up()
    errors = []
    for n, w in enumerate(writes):
        slot = 31 - n if use_ncq else n  # NCQ: a different slot and tag each time, descending
        rig.mem.write(DATA, w.data)
        sectors = len(w.data) // 512
        fis = ncq(True, slot, w.lba, sectors) if use_ncq else h2d(0x35, w.lba, sectors)
        rig.set_port(a.PX_IS, 0xFFFFFFFF)
        rig.prepare(slot, fis, split(DATA, len(w.data), w.pieces), write=True)
        rig.issue(1 << slot, sact=(1 << slot) if use_ncq else 0)
        failed = bool(rig.port(a.PX_IS) & a.IS_TFES)
        errors.append(failed)
        if failed:  # libahci's recovery: stop and restart the engine
            rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) & ~a.CMD_ST)
            rig.set_port(a.PX_CMD, rig.port(a.PX_CMD) | a.CMD_ST)
    return inspector, events, rig, errors


def detections(events: EventLog) -> list[tuple[object, ...]]:
    return [(e["signature"], e["lba"], e["offset"], e["length"])
            for e in events.records if e["event"] == "detection"]  # fmt: skip


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("actions", [("warn",), ("warn", "zero-fill"), ("warn", "block")])
@pytest.mark.parametrize("use_ncq", [False, True])
def test_ahci_is_inspected_exactly_as_ide(scenario: str, actions: tuple[str, ...],
                                          use_ncq: bool) -> None:  # fmt: skip
    writes = SCENARIOS[scenario]
    ide, ide_events, ide_rig, ide_errors = via_ide(writes, actions)
    ahci, ahci_events, ahci_rig, ahci_errors = via_ahci(writes, actions, use_ncq)
    assert ide.detections >= 1  # the scenario does plant something
    assert ahci.detections == ide.detections
    assert detections(ahci_events) == detections(ide_events)
    assert ahci_errors == ide_errors
    assert any(ide_errors) == ("block" in actions)
    image = ahci_rig.disk.read_sectors(0, SECTORS)
    assert image == ide_rig.disk.read_sectors(0, SECTORS)
    if "zero-fill" in actions:
        assert SIG not in image
    if actions == ("warn",):
        assert SIG in image or scenario == "command"  # split over two commands: no copy whole


def test_ncq_slots_completed_out_of_lba_order_break_the_run_as_ide_does() -> None:
    """Two halves of a signature written in descending LBA order (the second half first) are no
    run on either controller: neither finds it, as docs/STORAGE.md says of interleaved writes."""
    first, second = straddling_a_command()
    swapped = [second, first]
    ide, *_ = via_ide(swapped, ("warn",))
    ahci, *_ = via_ahci(swapped, ("warn",), use_ncq=True)
    assert ide.detections == ahci.detections == 0


def test_the_warning_box_names_the_ncq_command() -> None:
    from hv_emu import layout
    from hv_emu.devices.vga import VgaText

    rig = AhciRig(sectors=SECTORS)
    screen = VgaText(rig.mem, layout.VGA_TEXT_BASE)
    db = compile_database(NDB, kind="ndb", version=1, source="test.ndb")
    inspector = Inspector(ActiveDatabase(db), rig.disk, EventLog(), actions=("warn",),
                          screen=screen)  # fmt: skip
    rig.hba.executor.observer = inspector
    rig.bring_up()
    rig.mem.write(DATA, planted(1024, 100))
    rig.prepare(4, ncq(True, 4, 7, 2), split(DATA, 1024, 1), write=True)
    rig.issue(1 << 4, sact=1 << 4)
    assert inspector.detections == 1
    assert any("WRITE FPDMA QUEUED (DMA)" in row for row in screen.read_screen())
