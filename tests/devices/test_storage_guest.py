"""The storage path end to end: guests built from ``asm/`` drive the ATA channel by PIO and DMA on
the real vCPU, with a database loaded; the whole disk image is compared with what it must hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest_tool.disk_programs import build_disk_write_program, build_identify_program
from hv_emu.devices.storage.observer import SECTOR_SIZE
from hv_emu.machine import Machine, MachineConfig

SIG = bytes.fromhex("0f3b5e8b7d0c31c0cd80b801000000cd80")  # 17 bytes, three of them zero
NDB = f"Test.Sig:0:*:{SIG.hex()}\n"
DISK_MIB = 1


def machine(tmp_path: Path, actions: tuple[str, ...] = ("warn", "cut-network", "zero-fill"),
            db: bool = True, **config: object) -> Machine:  # fmt: skip
    sigs = tmp_path / "test.ndb"
    sigs.write_text(NDB)
    return Machine(MachineConfig(timeout=10.0, disk=tmp_path / "disk.img", disk_size_mib=DISK_MIB,
                                 db=sigs if db else None, on_detect=actions,
                                 **config))  # type: ignore[arg-type]  # fmt: skip


def run(m: Machine, image: bytes) -> str:
    m.load(image)
    result = m.run()
    assert result.halted, result.exit
    return m.debugcon.text()


def payload(at: int, sectors: int) -> bytes:
    data = bytearray(bytes(range(1, 256)) * (sectors * SECTOR_SIZE // 255 + 1))[
        : sectors * SECTOR_SIZE
    ]
    data[at : at + len(SIG)] = SIG
    return bytes(data)


def expected_image(lba: int, data: bytes, zero: tuple[int, int] | None) -> bytes:
    out = bytearray(DISK_MIB << 20)
    out[lba * SECTOR_SIZE : lba * SECTOR_SIZE + len(data)] = data
    if zero is not None:
        start, end = lba * SECTOR_SIZE + zero[0], lba * SECTOR_SIZE + zero[1]
        out[start:end] = bytes(end - start)
    return bytes(out)


CASES = {
    # name: (via, sectors, per_command, prd_bytes, where the signature starts)
    "pio, across a sector and a command boundary": ("pio", 3, 1, 65536, SECTOR_SIZE - 7),
    "pio, across a sector boundary in one command": ("pio", 3, 3, 65536, 2 * SECTOR_SIZE - 3),
    "dma, across a sector boundary in one command": ("dma", 4, 4, 65536, SECTOR_SIZE - 9),
    "dma, across two DMA commands": ("dma", 4, 2, 65536, 2 * SECTOR_SIZE - 4),
    "dma, 1-sector commands, odd-sized PRD entries": ("dma", 3, 1, 130, SECTOR_SIZE - 1),
    "dma, 64 PRD entries in one command": ("dma", 16, 16, 128, 5 * SECTOR_SIZE - 8),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_split_signature_is_found_and_exactly_its_bytes_are_zeroed(
    tmp_path: Path, case: str
) -> None:
    via, sectors, per_command, prd_bytes, at = CASES[case]
    data = payload(at, sectors)
    m = machine(tmp_path)
    built = build_disk_write_program(data, 40, via, per_command=per_command, prd_bytes=prd_bytes)  # type: ignore[arg-type]
    out = run(m, built.image)
    assert f"{sectors} sectors via {via} in {built.commands} commands: ok" in out
    assert "read back: 14 bytes differ" in out  # 17 matched bytes, 3 of them already zero
    [event] = m.events.of("detection")
    assert (event["lba"], event["offset"], event["length"]) == (
        40 + at // SECTOR_SIZE, at % SECTOR_SIZE, len(SIG))
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(40, data, (at, at + len(SIG)))
    assert m.detections == 1 and m.network_cut
    assert "detections: 1\nnetwork: cut\n" in m.status_text()


def test_block_leaves_the_image_untouched_and_the_guest_sees_abrt(tmp_path: Path) -> None:
    m = machine(tmp_path, ("block",))
    data = payload(SECTOR_SIZE - 7, 2)
    out = run(m, build_disk_write_program(data, 40, "dma").image)
    assert out == ("diskwrite: LBA 40, 2 sectors via dma in 1 commands: "
                   "refused at LBA 40 (error 4)\n")
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == bytes(DISK_MIB << 20)
    assert not m.network_cut


def test_block_by_pio_keeps_the_blocks_committed_before_the_find(tmp_path: Path) -> None:
    m = machine(tmp_path, ("block",))
    data = payload(SECTOR_SIZE - 7, 3)
    out = run(m, build_disk_write_program(data, 40, "pio").image)
    assert out.endswith("refused at LBA 41 (error 4)\n")  # the second block completed the match
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(40, data[:SECTOR_SIZE], None)


def test_warn_alone_draws_the_box_and_commits_the_data(tmp_path: Path) -> None:
    m = machine(tmp_path, ("warn",))
    data = payload(100, 1)
    out = run(m, build_disk_write_program(data, 7, "pio").image)
    assert "read back: 0 bytes differ" in out
    screen = "\n".join(m.vga.read_screen())
    assert "signature: Test.Sig" in screen and "LBA 7, byte 100, 17 bytes" in screen
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(7, data, None)
    assert not m.network_cut and m.events.of("network_cut") == []


def test_nothing_is_found_without_a_database(tmp_path: Path) -> None:
    m = machine(tmp_path, db=False)
    out = run(m, build_disk_write_program(payload(SECTOR_SIZE - 7, 2), 40, "pio").image)
    assert "read back: 0 bytes differ" in out and m.detections == 0
    assert "MALWARE" not in "\n".join(m.vga.read_screen())
    m.close()


@pytest.mark.parametrize("via", ["pio", "dma"])
def test_lba48_commands_through_the_machine(tmp_path: Path, via: str) -> None:
    """EXT commands at a small LBA, and a real 48-bit address on a sparse 129 GiB image."""
    m = machine(tmp_path)
    data = payload(SECTOR_SIZE - 3, 2)
    built = build_disk_write_program(data, 40, via, lba48=True)  # type: ignore[arg-type]
    assert "read back: 14 bytes differ" in run(m, built.image)
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(40, data, (SECTOR_SIZE - 3,
                                                                            SECTOR_SIZE + 14))
    big = tmp_path / "big"
    big.mkdir()
    (big / "test.ndb").write_text(NDB)
    high = (1 << 28) + 5  # beyond LBA28's reach
    m = Machine(MachineConfig(timeout=10.0, disk=big / "disk.img", disk_size_mib=129 * 1024,
                              db=big / "test.ndb"))  # fmt: skip
    built = build_disk_write_program(data, high, via)  # type: ignore[arg-type]
    assert built.lba48
    assert "read back: 14 bytes differ" in run(m, built.image)
    [event] = m.events.of("detection")
    assert event["lba"] == high
    assert m.disk is not None
    assert m.disk.read_sectors(high, 2) == bytes(data[: SECTOR_SIZE - 3]) + bytes(17) + data[
        SECTOR_SIZE + 14 :
    ]
    m.close()


def test_a_database_installed_by_vmcall_applies_to_the_rest_of_the_run(tmp_path: Path) -> None:
    """First half of the signature written, then the update guest installs the database that
    knows it, then the second half: found, and the first half zeroed in the image too."""
    from guest_tool.bundle import make_bundle
    from guest_tool.keys import generate_keypair, load_private_key
    from guest_tool.programs import build_update_program

    key, pub = generate_keypair(tmp_path / "k")
    bundle, sig = make_bundle(NDB.encode(), kind="ndb", version=1,
                              private_key=load_private_key(key), issued_at=0,
                              expires_at=2**40)  # fmt: skip
    m = machine(tmp_path, db=False, trust=[pub])
    data = payload(SECTOR_SIZE - 7, 2)
    run(m, build_disk_write_program(data[:SECTOR_SIZE], 40, "pio", readback=False).image)
    assert "rc=0 (OK)" in run(m, build_update_program(bundle, sig))
    run(m, build_disk_write_program(data[SECTOR_SIZE:], 41, "dma", readback=False).image)
    [event] = m.events.of("detection")
    assert (event["lba"], event["offset"]) == (40, SECTOR_SIZE - 7)
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(
        40, data, (SECTOR_SIZE - 7, SECTOR_SIZE + 10))


def test_identify_through_the_machine(tmp_path: Path) -> None:
    m = machine(tmp_path)
    assert run(m, build_identify_program()) == (
        f"identify: HV-EMU HARDDISK, {DISK_MIB * 2048} sectors (LBA48 yes, DMA yes)\n")
    m.close()


def test_cut_network_tells_its_listeners_once(tmp_path: Path) -> None:
    m = machine(tmp_path)
    heard: list[str] = []
    m.network_cut_listeners.append(heard.append)
    built = build_disk_write_program(payload(10, 1) + payload(20, 1), 3, "pio", per_command=1)
    run(m, built.image)
    assert m.detections == 2
    assert heard == ["Test.Sig written at LBA 3"] and len(m.events.of("network_cut")) == 1
    m.close()


def test_a_real_rfxn_signature_across_two_64k_dma_commands(tmp_path: Path, rfxn: Path) -> None:
    """The shared rfxn.ndb in force; one of its literal bodies planted across the boundary of
    two 64 KiB WRITE DMA commands: found, and exactly its bytes zeroed in the image."""
    import re

    literal = re.compile(r"(?:[0-9a-f]{2}){24,}")  # a plain body of 24 bytes or more
    lines = rfxn.read_text(encoding="utf-8", errors="replace").splitlines()
    name, body = next(
        (fields[0], bytes.fromhex(fields[3]))
        for fields in (line.split(":") for line in lines)
        if len(fields) == 4 and fields[1:3] == ["0", "*"] and literal.fullmatch(fields[3])
    )
    data = bytearray(256 * SECTOR_SIZE)
    at = 128 * SECTOR_SIZE - len(body) // 2
    data[at : at + len(body)] = body
    m = Machine(MachineConfig(timeout=10.0, disk=tmp_path / "disk.img", disk_size_mib=DISK_MIB,
                              db=rfxn, mem_mib=16))  # fmt: skip
    built = build_disk_write_program(bytes(data), 64, "dma", per_command=128)
    out = run(m, built.image)
    assert "256 sectors via dma in 2 commands: ok" in out
    [event] = m.events.of("detection")
    assert (event["signature"], event["lba"], event["offset"]) == (
        name, 64 + at // SECTOR_SIZE, at % SECTOR_SIZE)
    m.close()
    assert (tmp_path / "disk.img").read_bytes() == expected_image(
        64, bytes(data), (at, at + len(body)))
