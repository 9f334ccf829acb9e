"""The disk chapter of ``hv-emu demo``: a file written before and after the update that knows it.

Models: the storage path as a user would watch it. One machine with a disk and the sample
database in force; the guest runs three programs in turn, as a shell would: it writes a file that
carries the body of ``Demo.New-Virus-1`` (nothing found: the database in force does not know it),
installs version 2 by VMCALL, then writes the file again, through PIO and through DMA, with the
body straddling a sector boundary: detection, the warning box on the guest's screen, the network
cut, and the matched bytes read back from the image as zeros.

Follows: docs/STORAGE.md (what the inspection does), the README's walkthrough.

Leaves out: everything the update chapter already showed (keys, refusals).

Guest controls: nothing; the demo builds its own guests and file.
"""

from __future__ import annotations

from pathlib import Path

from guest_tool.disk_programs import build_disk_write_program
from hv_emu.devices.storage.observer import SECTOR_SIZE
from hv_emu.machine import Machine, MachineConfig
from hv_emu.usage import plural

#: The body of the signature the demo's version 2 adds (``story.NEW_SIGNATURE``).
VIRUS_BODY = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")
#: Where the body sits in the demo's file: across the boundary of its first and second sectors.
BODY_AT = SECTOR_SIZE - 6


def demo_file() -> bytes:
    """Two sectors of a harmless-looking file with the virus body across the sector boundary."""
    text = b"hv-emu demo file: an innocent-looking program with a known virus body inside.\n"
    data = bytearray((text * (2 * SECTOR_SIZE // len(text) + 1))[: 2 * SECTOR_SIZE])
    data[BODY_AT : BODY_AT + len(VIRUS_BODY)] = VIRUS_BODY
    return bytes(data)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def _write(machine: Machine, lba: int, via: str, per_command: int) -> None:
    """The guest writes the demo file at ``lba``; tell what the hypervisor did."""
    seen = len(machine.events.records)
    printed = len(machine.debugcon.text())
    built = build_disk_write_program(demo_file(), lba, via, per_command=per_command)  # type: ignore[arg-type]
    machine.load(built.image)
    result = machine.run()
    if not result.halted:
        raise SystemExit(f"hv-emu demo: the disk guest did not halt: {result.exit}")
    for line in machine.debugcon.text()[printed:].splitlines():
        _say(f"    guest | {line}")
    found = False
    for event in machine.events.records[seen:]:
        if event["event"] == "detection":
            found = True
            _say(f"    vmm   | DETECTED {event['signature']} at LBA {event['lba']}, byte "
                 f"{event['offset']} ({event['length']} bytes): {', '.join(event['actions'])}")  # type: ignore[arg-type]
        elif event["event"] == "network_cut":
            _say(f"    vmm   | network cut: {event['reason']}")
    if not found:
        _say("    vmm   | scanned every sector: nothing found")
        return
    assert machine.disk is not None
    start = lba * SECTOR_SIZE + BODY_AT - 4
    image = machine.disk.read_sectors(start // SECTOR_SIZE, 2)[start % SECTOR_SIZE :]
    _say(f"    disk  | written: {_hex(demo_file()[BODY_AT - 4 : BODY_AT + len(VIRUS_BODY) + 4])}")
    _say(f"    disk  | on disk: {_hex(image[: len(VIRUS_BODY) + 8])}")


def _status(machine: Machine, *keys: str) -> None:
    """The lines of ``get_status`` with these keys, in its order."""
    for line in machine.status_text().splitlines():
        if line.split(": ", 1)[0] in keys:
            _say(f"    state | {line}")


def storage_story(work: Path, trust: Path, sample_db: Path, update_guest: bytes) -> None:
    """Steps 7-10 of the demo: ``update_guest`` installs the database that knows the body."""
    disk = work / "disk.img"
    disk.unlink(missing_ok=True)
    machine = Machine(MachineConfig(trust=[trust], db=sample_db, disk=disk, disk_size_mib=4,
                                    state_dir=work / "disk-state", timeout=10.0))  # fmt: skip
    try:
        _say("7. The disk: every sector the guest writes is scanned before it lands")
        _say("   (hv-emu run write-guest.bin --disk disk.img --db sample.db --trust demo.pub)")
        _say("   the guest writes a file carrying Demo.New-Virus-1's body; the database in force")
        _say(f"   ({plural(machine.database.current.count, 'signature')}) does not know it yet:")
        _write(machine, 100, "pio", 1)
        _say()
        _say("8. The guest installs version 2 by VMCALL")
        printed = len(machine.debugcon.text())
        machine.load(update_guest)
        machine.run()
        for line in machine.debugcon.text()[printed:].splitlines():
            _say(f"    guest | {line}")
        _say("   OK came at acceptance; the run waited for the compile, so v2 now scans writes:")
        _status(machine, "db_version", "db_active_version", "db_state")
        _say()
        _say("9. It writes the file again, by PIO, one sector per command: the body straddles")
        _say("   two commands, and is found all the same")
        _write(machine, 200, "pio", 1)
        _say()
        _say("10. And by bus-master DMA, both sectors in one command:")
        _write(machine, 300, "dma", 2)
        _say()
        _say("   What the guest's screen shows (hv-emu run --screen FILE):")
        for row in machine.vga.read_screen():
            if row.strip():
                _say(f"    screen| {row.rstrip()}")
        _say()
        _say("   get_status now says:")
        _status(machine, "detections", "network")
    finally:
        machine.close()
