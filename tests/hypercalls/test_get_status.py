"""``get_status`` tells the accepted database from the one scanning writes (issue 12, item 6).

Right after ``update_signatures`` returns ``OK`` the new database may still be compiling: status
says which version was accepted (``db_version``), which one scans disk writes now
(``db_active_version``) and how far the newest one got (``db_state``). With ``sync_updates``
(``hv-emu run --sync-updates``) the VMCALL returns only once the compile worker is done with it.

Deterministic: the compile function is replaced by one that waits for a gate the test opens; no
assertion depends on how long anything takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from hv_emu.exits import Exit, Hypercall, Outcome
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.builtin import NUMBERS
from hv_emu.machine import Machine, MachineConfig
from hv_emu.scanner.database import SignatureDatabase
from hv_emu.testing import Hypervisor
from hv_emu.updates import compile_worker
from tests.rigs.netupdate import KEY, signed, trust_of

WAIT = 30  # seconds: a bound on waiting for the other thread, never a measurement
BUNDLE_PA, SIG_PA, STATUS_PA = 0x400000, 0x480000, 0x300000

#: update_signatures(bundle, length, signature), then get_status(buffer, 4096); RAX of each kept.
GUEST = """
    mov eax, HC_UPDATE_SIGNATURES
    mov ebx, {bundle:#x}
    mov ecx, {length}
    mov edx, {signature:#x}
    vmcall
    mov r12, rax
    mov eax, HC_GET_STATUS
    mov ebx, {status:#x}
    mov ecx, 4096
    vmcall
    mov r13, rax
    hlt
"""


class Gate:
    """Stands in for ``compile_signatures``: says it began, then waits for ``release``."""

    def __init__(self) -> None:
        self.real = compile_worker.compile_signatures
        self.began = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: object, **kwargs: object) -> SignatureDatabase:
        self.began.set()
        assert self.release.wait(WAIT), "the test never released the compile"
        return self.real(*args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    gated = Gate()
    monkeypatch.setattr(compile_worker, "compile_signatures", gated)
    yield gated
    gated.release.set()  # never leave the worker blocked behind a failed test


def bench(sync: bool = False) -> tuple[Hypervisor, str]:
    """A bench that trusts the test key, with version 1 of the test database in guest RAM, and
    the guest that hands it over."""
    hv = Hypervisor()
    if sync:
        hv.sync_updates = True
    hv.machine.updates.trust = trust_of(KEY)
    bundle, signature = signed(1)
    hv.machine.mem.write(BUNDLE_PA, bundle)
    hv.machine.mem.write(SIG_PA, signature)
    guest = GUEST.format(bundle=BUNDLE_PA, length=len(bundle), signature=SIG_PA,
                         status=STATUS_PA)  # fmt: skip
    return hv, guest


def status_of(machine: Machine) -> dict[str, str]:
    text = machine.mem.read(STATUS_PA, 4096).split(b"\0", 1)[0].decode()
    return dict(line.split(": ", 1) for line in text.splitlines()[1:])


def on_hypercall(machine: Machine, name: str, then: Callable[[], None]) -> None:
    def observe(exit_: Exit, outcome: Outcome, seconds: float) -> None:
        if isinstance(exit_, Hypercall) and exit_.nr == NUMBERS[name]:
            then()

    machine.exit_observers.append(observe)


def test_status_right_after_ok_names_the_accepted_and_the_active_database(gate: Gate) -> None:
    """The window of issue 12: OK, then get_status while the compile is held at its gate."""
    hv, guest = bench()
    # The compile may finish only once the guest's get_status has been answered.
    on_hypercall(hv.machine, "get_status", gate.release.set)
    run = hv.run_asm(guest)
    assert run.halted, run.exit
    assert (run.registers["r12"], run.registers["r13"]) == (Rc.OK, Rc.OK)
    status = status_of(hv.machine)
    assert status["db_version"] == "1"  # accepted and persisted: what rollback checks compare to
    assert status["db_active_version"] == "0"  # still the database scanning writes
    assert status["db_state"] == "compiling"
    assert status["signatures"] == "40"  # db_version's, as are db_sha256's
    # run() waited for the compile: at the end the two agree.
    after = dict(line.split(": ", 1) for line in hv.machine.status_text().splitlines()[1:])
    assert (after["db_version"], after["db_active_version"], after["db_state"]) == (
        "1", "1", "active")
    hv.close()


def test_sync_updates_answers_the_vmcall_only_once_the_database_is_active(gate: Gate) -> None:
    hv, guest = bench(sync=True)
    returned = threading.Event()
    on_hypercall(hv.machine, "update_signatures", returned.set)
    held: list[bool] = []

    def release_when_compiling() -> None:
        assert gate.began.wait(WAIT)
        held.append(returned.is_set())  # the compile is held: the VMCALL cannot have returned
        gate.release.set()

    opener = threading.Thread(target=release_when_compiling)
    opener.start()
    run = hv.run_asm(guest)
    opener.join(WAIT)
    assert run.halted, run.exit
    assert held == [False]
    assert (run.registers["r12"], run.registers["r13"]) == (Rc.OK, Rc.OK)
    status = status_of(hv.machine)
    assert (status["db_version"], status["db_active_version"], status["db_state"]) == (
        "1", "1", "active")
    kinds = [e["event"] for e in run.events]
    assert kinds.index("database_active") < kinds.index("hypercall")  # active before the answer
    hv.close()


def test_the_knob_is_in_machine_config_and_on_the_bench() -> None:
    assert MachineConfig().sync_updates is False
    hv = Hypervisor()
    assert hv.sync_updates is False
    hv.sync_updates = True  # e.g. on the ``hv`` fixture, before running a guest
    assert hv.machine.config.sync_updates is True
    hv.close()
    for bench_ in (Hypervisor(MachineConfig(sync_updates=True)), Hypervisor(sync_updates=True)):
        assert bench_.sync_updates is True and bench_.machine.config.sync_updates is True
        bench_.close()
