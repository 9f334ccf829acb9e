"""Compiling off the vCPU path: the VMCALL returns at acceptance, the guest keeps running while
the automaton compiles, writes meanwhile meet the previous database, and the swap is logged."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.bundle import make_bundle
from guest_tool.keys import generate_keypair, load_private_key
from hv_emu.errors import DatabaseError
from hv_emu.exits import Exit, Hypercall, Outcome, PortOut, StopRequest
from hv_emu.hypercalls.abi import Rc
from hv_emu.layout import DEFAULT_LOAD
from hv_emu.machine import Machine, MachineConfig
from hv_emu.scanner.database import SignatureDatabase
from hv_emu.updates import compile_worker
from hv_emu.updates.state import StateDir
from tests.rigs.updates import Publisher, machine_for, run_update

#: The guest: hand over the update, then write to the debug console forever.
GUEST = """
    mov eax, 2                  # update_signatures(bundle, length, signature)
    lea rbx, [rip + blobs]
    mov ecx, {length}
    lea rdx, [rip + blobs + {sig_at}]
    vmcall
    mov r12, rax                # the return code, for the test to read
spin:
    mov al, 0x2e
    out 0xe9, al                # still running: one byte per loop
    jmp spin
    .p2align 4
blobs:
"""
WRITES_BEFORE_COMPILE = 50


def synthetic(count: int, seed: int = 4) -> bytes:
    rng = random.Random(seed)
    return b"".join(
        f"Bg.Synthetic-{i}:0:*:{rng.randbytes(rng.randint(16, 48)).hex()}\n".encode()
        for i in range(count)
    )


def update_guest(tmp_path: Path, body: bytes, version: int = 1) -> tuple[bytes, Path]:
    key_path, pub = generate_keypair(tmp_path / f"key{version}")
    now = int(time.time())
    bundle, signature = make_bundle(body, kind="ndb", version=version,
                                    private_key=load_private_key(key_path), issued_at=now,
                                    expires_at=now + 86400)  # fmt: skip
    sig_at = (len(bundle) + 15) // 16 * 16
    code = assemble(GUEST.format(length=len(bundle), sig_at=sig_at), mode=64,
                    address=DEFAULT_LOAD)  # fmt: skip
    blobs = bundle + bytes(sig_at - len(bundle)) + signature
    return code + blobs, pub


def test_the_guest_runs_while_the_database_compiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, pub = update_guest(tmp_path, synthetic(5000))
    machine = Machine(MachineConfig(trust=[pub], timeout=60.0, state_dir=tmp_path / "state"))
    guest_wrote = threading.Event()
    real_compile = compile_worker.compile_signatures

    def gated_compile(*args: object, **kwargs: object) -> SignatureDatabase:
        # The compile cannot finish before the guest has run on after its VMCALL: that makes
        # "the guest keeps running" a fact of the test, not of the machine's speed.
        assert guest_wrote.wait(30), "the guest did not run after its VMCALL returned"
        return real_compile(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(compile_worker, "compile_signatures", gated_compile)
    seen = {"version_after_vmcall": -1, "writes_before_active": 0}

    def observe(exit_: Exit, outcome: Outcome, seconds: float) -> None:
        version = machine.database.current.version
        if isinstance(exit_, Hypercall) and exit_.nr == 2:
            seen["version_after_vmcall"] = version
            # Accepted and persisted already, while the old database still scans.
            assert StateDir(tmp_path / "state").load() is not None
        elif isinstance(exit_, PortOut) and version == 0:
            seen["writes_before_active"] += 1
            if seen["writes_before_active"] >= WRITES_BEFORE_COMPILE:
                guest_wrote.set()
        elif isinstance(exit_, PortOut):
            machine.vcpu.request_stop("the new database is active")

    machine.exit_observers.append(observe)
    machine.load(image)
    result = machine.run()
    assert isinstance(result.exit, StopRequest), result.exit
    assert machine.vcpu.reg("r12") == Rc.OK
    assert seen["version_after_vmcall"] == 0  # the VMCALL returned before the swap
    assert seen["writes_before_active"] >= WRITES_BEFORE_COMPILE
    accepted, = machine.events.of("update_accepted")
    active, = machine.events.of("database_active")
    assert (accepted["db_version"], accepted["signatures"]) == (1, 5000)
    assert (active["db_version"], active["previous_version"], active["signatures"]) == (1, 0, 5000)
    events = [r["event"] for r in machine.events.records]
    assert events.index("update_accepted") < events.index("database_active")
    assert machine.database.current.count == 5000
    # A restart comes back on what was accepted.
    restarted = Machine(MachineConfig(trust=[pub], state_dir=tmp_path / "state"))
    assert (restarted.database.current.version, restarted.database.current.count) == (1, 5000)


def test_run_waits_for_the_compile_before_it_returns(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    machine = machine_for(publisher)
    body = synthetic(300)
    assert run_update(machine, *publisher.sign(body, version=3, kind="ndb")) == (
        "hvupdate: rc=0 (OK)\n")
    # run() returned, so the compile is done and in force; a stale replay is still refused.
    assert (machine.database.current.version, machine.database.current.count) == (3, 300)
    assert machine.updates.wait_active(0)
    out = run_update(machine, *publisher.sign(body, version=3, kind="ndb"))
    assert out == "hvupdate: rc=5 (STALE_VERSION)\n"


def test_a_refused_compile_keeps_the_old_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> SignatureDatabase:
        raise DatabaseError("update v2", 0, 0, "Hyperscan cannot compile it: out of memory")

    monkeypatch.setattr(compile_worker, "compile_signatures", refuse)
    publisher = Publisher(tmp_path)
    machine = machine_for(publisher)
    assert run_update(machine, *publisher.sign(version=2)) == "hvupdate: rc=0 (OK)\n"
    failed, = machine.events.of("database_failed")
    assert failed["db_version"] == 2 and failed["active_version"] == 0
    assert "out of memory" in str(failed["reason"])
    assert machine.database.current.version == 0
    assert machine.events.of("database_active") == []


def test_a_compile_overtaken_by_a_newer_acceptance_never_lands_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 3 is accepted while version 2 compiles: version 3 waits for the one compile worker
    (it does not compile beside version 2); version 2 goes in force when it is done (it is still
    newer than what scans), then version 3, never the other way round."""
    release_v2 = threading.Event()
    compiling_v2 = threading.Event()
    real_compile = compile_worker.compile_signatures

    def slow_v2(signatures, kind, version, *rest):  # type: ignore[no-untyped-def]
        if version == 2:
            compiling_v2.set()
            assert release_v2.wait(30)
        return real_compile(signatures, kind, version, *rest)

    monkeypatch.setattr(compile_worker, "compile_signatures", slow_v2)
    publisher = Publisher(tmp_path)
    machine = machine_for(publisher)
    assert machine.updates.submit(*publisher.sign(version=2), source="test") == Rc.OK
    # Version 3 arrives once version 2's compile has started (had it not, it would be dropped
    # before it started: tests/updates/test_compile_worker.py).
    assert compiling_v2.wait(30)
    assert machine.updates.submit(*publisher.sign(version=3), source="test") == Rc.OK
    assert machine.updates.installed_version == 3
    # Version 2 is accepted, so an older or equal one is stale even before anything is active.
    assert machine.updates.submit(*publisher.sign(version=2), source="test") == Rc.STALE_VERSION
    assert not machine.updates.wait_active(0.01)  # version 2 is still compiling
    release_v2.set()
    assert machine.updates.wait_active(30)
    assert machine.database.current.version == 3
    assert [e["db_version"] for e in machine.events.of("database_active")] == [2, 3]
