"""The spine end to end: guest programs hand signed updates to the hypervisor by VMCALL.

Every test boots a real guest on the real vCPU; the database in force is checked after each.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hv_emu.exits import Halt
from hv_emu.hypercalls.abi import Rc
from hv_emu.layout import PAGE_SIZE
from hv_emu.machine import Machine
from hv_emu.memory.tables import PageTableBuilder
from hv_emu.memory.walk import PagingMode
from tests.conftest import boot_asm
from tests.rigs.updates import DAY, SAMPLE, Publisher, machine_for, run_update


@pytest.fixture
def publisher(tmp_path: Path) -> Publisher:
    return Publisher(tmp_path)


@pytest.mark.parametrize("mode", [16, 32, 64])
@pytest.mark.parametrize("lookup", [True, False])
def test_update_from_every_mode_replaces_the_database(
    publisher: Publisher, mode: int, lookup: bool
) -> None:
    machine = machine_for(publisher)
    assert machine.database.current.version == 0
    out = run_update(machine, *publisher.sign(version=7), mode=mode, lookup=lookup)
    assert out == "hvupdate: rc=0 (OK)\n"
    db = machine.database.current
    assert (db.version, db.count) == (7, 5)
    accepted = machine.events.of("update_accepted")
    assert accepted[0]["db_version"] == 7 and accepted[0]["signatures"] == 5
    assert accepted[0]["source"] == "vmcall"
    calls = [c["name"] for c in machine.events.of("hypercall")]
    assert calls == (["get_vmmcall_number"] if lookup else []) + ["update_signatures"]
    # the new database is the one in force: it finds what it should
    eicar = bytes.fromhex(SAMPLE.decode().split("Eicar-Test-Signature=")[1].split()[0])
    assert [m.name for m in db.scan(b"junk" + eicar + b"junk")] == ["Eicar-Test-Signature"]


def test_rsa_pss_keys_work_too(tmp_path: Path) -> None:
    rsa = Publisher(tmp_path, "rsa", "rsa-pss-3072")
    machine = machine_for(rsa)
    assert run_update(machine, *rsa.sign(version=3)) == "hvupdate: rc=0 (OK)\n"
    assert machine.database.current.version == 3


def expect_rejected(machine: Machine, bundle: bytes, signature: bytes, code: Rc) -> None:
    before = machine.database.current
    out = run_update(machine, bundle, signature)
    assert out == f"hvupdate: rc={int(code)} ({code.name})\n"
    assert machine.database.current is before, "the database in force must stay"
    rejected = machine.events.of("update_rejected")[-1]
    assert rejected["code"] == code and rejected["error"] == code.name


def test_tampered_body_is_rejected(publisher: Publisher) -> None:
    bundle, sig = publisher.sign()
    tampered = bytearray(bundle)
    tampered[-5] ^= 0x20
    expect_rejected(machine_for(publisher), bytes(tampered), sig, Rc.BAD_SIGNATURE)


def test_tampered_header_and_signature_are_rejected(publisher: Publisher) -> None:
    bundle, sig = publisher.sign()
    machine = machine_for(publisher)
    header = bytearray(bundle)
    header[20] ^= 0x01  # inside issued_at
    expect_rejected(machine, bytes(header), sig, Rc.BAD_SIGNATURE)
    bad_sig = bytes([sig[0] ^ 1]) + sig[1:]
    expect_rejected(machine, bundle, bad_sig, Rc.BAD_SIGNATURE)


def test_wrong_key_is_rejected(publisher: Publisher, tmp_path: Path) -> None:
    stranger = Publisher(tmp_path, "stranger")
    expect_rejected(machine_for(publisher), *stranger.sign(), Rc.UNTRUSTED_KEY)


def test_stale_version_and_replay_are_rejected(publisher: Publisher) -> None:
    machine = machine_for(publisher)
    v5 = publisher.sign(version=5)
    assert run_update(machine, *v5) == "hvupdate: rc=0 (OK)\n"
    expect_rejected(machine, *v5, Rc.STALE_VERSION)  # replay
    expect_rejected(machine, *publisher.sign(version=4), Rc.STALE_VERSION)  # rollback
    assert machine.database.current.version == 5


def test_expired_and_future_updates_are_rejected(publisher: Publisher) -> None:
    machine = machine_for(publisher)
    now = int(time.time())
    expect_rejected(machine, *publisher.sign(issued=now - 10 * DAY, expires=now - DAY),
                    Rc.EXPIRED)
    expect_rejected(machine, *publisher.sign(issued=now + DAY), Rc.EXPIRED)


def test_malformed_database_is_rejected_after_a_valid_signature(publisher: Publisher) -> None:
    expect_rejected(machine_for(publisher), *publisher.sign(b"Broken=zz\n"), Rc.MALFORMED)


def test_garbage_bundle_is_malformed(publisher: Publisher) -> None:
    expect_rejected(machine_for(publisher), b"\x00" * 100, b"\x00" * 64, Rc.MALFORMED)


def test_oversize_length_is_refused_before_reading(publisher: Publisher) -> None:
    machine = machine_for(publisher, max_update=4096)
    expect_rejected(machine, *publisher.sign(SAMPLE * 40), Rc.TOO_LARGE)


def hand_call(machine: Machine, rbx: int, rcx: int, rdx: int, *, mode: int = 64) -> int:
    """One update_signatures VMCALL with the given registers; returns RAX."""
    _, result = boot_asm(f"""
        mov eax, 2
        mov rbx, {rbx:#x}
        mov rcx, {rcx:#x}
        mov rdx, {rdx:#x}
        vmcall
        hlt
    """, machine=machine)
    assert isinstance(result.exit, Halt)
    return machine.vcpu.reg("rax")


def test_unreadable_addresses_and_huge_lengths(publisher: Publisher) -> None:
    machine = machine_for(publisher)
    bundle, sig = publisher.sign()
    machine.mem.write(0x300000, bundle)
    machine.mem.write(0x380000, sig)
    # data beyond RAM (the identity map covers RAM only), signature beyond RAM, wrapping length
    assert hand_call(machine, 0x7FFF0000, len(bundle), 0x380000) == Rc.UNREADABLE
    assert hand_call(machine, 0x300000, len(bundle), 0x7FFF0000) == Rc.UNREADABLE
    assert hand_call(machine, 0x300000, 2**64 - 1, 0x380000) == Rc.TOO_LARGE
    assert hand_call(machine, 0x300000, 10, 0x380000) == Rc.MALFORMED
    assert machine.database.current.version == 0
    assert hand_call(machine, 0x300000, len(bundle), 0x380000) == Rc.OK
    assert machine.database.current.version == 1


def test_page_crossing_update_at_a_non_identity_virtual_address(publisher: Publisher) -> None:
    """The guest builds its own page tables: the bundle sits at a high virtual address, across
    four pages that map to scattered, descending physical pages; the hypervisor walks them."""
    machine = machine_for(publisher)
    bundle, sig = publisher.sign()
    tables = PageTableBuilder(machine.mem, PagingMode.LONG, 0x200000, 0x280000)
    tables.map(0, 0, machine.mem.size, page_size=0x200000)  # keep running where we are
    va = 0xFFFF_8000_1234_5000 - 0x30  # starts 48 bytes before a page boundary
    pages = (len(bundle) + 0x30 + PAGE_SIZE - 1) // PAGE_SIZE + 1
    physical = [0x3F0000 - i * 0x11000 for i in range(pages)]  # scattered, going down
    first = va & ~(PAGE_SIZE - 1)
    for i, pa in enumerate(physical):
        tables.map(first + i * PAGE_SIZE, pa, PAGE_SIZE)
    for i in range(len(bundle)):  # place each byte where the guest's mapping puts it
        off = (va - first) + i
        machine.mem.write(physical[off // PAGE_SIZE] + off % PAGE_SIZE, bundle[i : i + 1])
    machine.mem.write(0x500000, sig)
    _, result = boot_asm(f"""
        mov rax, {tables.cr3:#x}
        mov cr3, rax             # switch to the guest's own tables
        mov eax, 2
        mov rbx, {va:#x}
        mov ecx, {len(bundle)}
        mov edx, 0x500000
        vmcall
        hlt
    """, machine=machine)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.vcpu.reg("rax") == Rc.OK
    assert machine.database.current.version == 1


def test_get_status_reports_the_database(publisher: Publisher) -> None:
    machine = machine_for(publisher)
    run_update(machine, *publisher.sign(version=9))
    machine.mem.write(0x300000, b"\xaa" * 4096)  # so that a NUL written would show
    _, result = boot_asm("""
        mov eax, 1
        mov ebx, 0x300000
        mov ecx, 4            # too small
        vmcall
        mov r12, rax
        mov r13, rcx          # the text's length
        mov eax, 1
        mov ebx, 0x300000
        mov rcx, r13          # exactly that: enough, as in BitVisor
        vmcall
        hlt
    """, machine=machine)
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("r12") == 1  # BitVisor's failure value (Rc.UNREADABLE)
    length = machine.vcpu.reg("r13")
    assert machine.vcpu.reg("rax") == Rc.OK and machine.vcpu.reg("rcx") == length
    text = machine.mem.read(0x300000, length + 1)
    assert text[-1] == 0xAA and b"\0" not in text  # no NUL written: the byte after is as it was
    status = dict(line.split(": ", 1) for line in text[:-1].decode().splitlines()[1:])
    assert status["db_version"] == "9" and status["signatures"] == "5"
    assert status["updates_accepted"] == "1"


def test_state_dir_survives_a_restart_and_refuses_rollback(
    publisher: Publisher, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = machine_for(publisher, state_dir=state)
    assert run_update(first, *publisher.sign(version=3)) == "hvupdate: rc=0 (OK)\n"
    again = machine_for(publisher, state_dir=state)  # a restart
    assert again.database.current.version == 3 and again.database.current.count == 5
    expect_rejected(again, *publisher.sign(version=2), Rc.STALE_VERSION)
