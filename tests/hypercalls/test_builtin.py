"""Each built-in hypercall module lands in its slot and returns exactly the codes it declares."""

from __future__ import annotations

import pkgutil
import time
from importlib import import_module
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu import hypercalls
from hv_emu.events import EventLog
from hv_emu.exits import Hypercall
from hv_emu.hypercalls import get_status, get_vmmcall_number, update_signatures
from hv_emu.hypercalls.abi import SLOTS, Rc
from hv_emu.hypercalls.builtin import BUILTINS, NUMBERS
from hv_emu.hypercalls.spec import HypercallServices, HypercallSpec
from hv_emu.hypercalls.table import HypercallTable
from hv_emu.machine import Machine, MachineConfig
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates.format import HEADER_SIZE
from hv_emu.updates.service import UpdateService
from hv_emu.updates.state import STATE_FILE, StateDir
from tests.rigs.netupdate import KEY, signed, trust_of

FLAT32 = PagingState(cr0=0x11, cr3=0, cr4=0, efer=0)
RAM = 1 << 20
CAP = 64 * 1024
BUNDLE_VA, SIG_VA, BUF_VA = 0x10000, 0x80000, 0x90000


def built_table(state: StateDir | None = None) -> tuple[GuestMemory, HypercallTable]:
    """A table with every built-in registered as machine.py does, on a small service."""
    mem = GuestMemory(RAM)
    events = EventLog()
    updates = UpdateService(trust_of(KEY), ActiveDatabase(SignatureDatabase.empty()), events,
                            state=state, max_size=CAP)
    services = HypercallServices(status_text=lambda: "hv-emu test\nkey: value\n", updates=updates)
    table = HypercallTable(mem, events)
    for spec in BUILTINS:
        if spec.make is not None:
            assert table.register(spec.name, spec.make(services)) == NUMBERS[spec.name]
    return mem, table


def rax(table: HypercallTable, spec: HypercallSpec, *args: int) -> int:
    regs = (list(args) + [0] * 5)[:5]
    out = table.handle(Hypercall(NUMBERS[spec.name], (regs[0], regs[1], regs[2], regs[3], regs[4]),
                                 32, 0, FLAT32))
    return out.registers["rax"]


def test_builtins_are_the_modules_in_slot_order_and_only_slot_0_binds_itself() -> None:
    # Each built-in is the SPEC of the module named after it; every module here with a SPEC is
    # listed (a module without its line in BUILTINS is caught); get_vmmcall_number comes first.
    assert BUILTINS[0] is get_vmmcall_number.SPEC
    for spec in BUILTINS:
        assert import_module(f"hv_emu.hypercalls.{spec.name}").SPEC is spec
    for info in pkgutil.iter_modules(hypercalls.__path__):
        module = import_module(f"hv_emu.hypercalls.{info.name}")
        if isinstance(getattr(module, "SPEC", None), HypercallSpec):
            assert module.SPEC in BUILTINS, f"{info.name}.py has a SPEC but no line in BUILTINS"
    # The number is the position, in NUMBERS and in the live table.
    assert dict(NUMBERS) == {spec.name: nr for nr, spec in enumerate(BUILTINS)}
    assert [spec.make is None for spec in BUILTINS] == [True] + [False] * (len(BUILTINS) - 1)
    assert len({spec.name for spec in BUILTINS}) == len(BUILTINS)
    assert Machine(MachineConfig()).hypercalls.names() == dict(enumerate(s.name for s in BUILTINS))


def test_get_status_returns_each_code_it_declares_and_no_other() -> None:
    _, table = built_table()
    seen = {
        rax(table, get_status.SPEC, BUF_VA, 1024),  # OK
        rax(table, get_status.SPEC, BUF_VA, 0),  # UNREADABLE (BitVisor's 1): too small
        rax(table, get_status.SPEC, RAM + 0x1000, 1024),  # UNREADABLE: outside RAM
    }
    assert seen == get_status.SPEC.returns


def test_update_signatures_returns_each_code_it_declares_and_no_other(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    mem, table = built_table(state)
    spec = update_signatures.SPEC
    now = int(time.time())

    def submit(bundle: bytes, sig: bytes) -> int:
        mem.write(BUNDLE_VA, bundle)
        mem.write(SIG_VA, sig)
        return rax(table, spec, BUNDLE_VA, len(bundle), SIG_VA)

    def storage_failed() -> int:  # a directory where state.json should be: cannot persist
        (state.path / STATE_FILE).unlink()
        (state.path / STATE_FILE).mkdir()
        return submit(*signed(4))

    bundle, sig = signed(1)
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    seen = {
        rax(table, spec, BUNDLE_VA, CAP + 1, SIG_VA),  # TOO_LARGE, nothing read
        rax(table, spec, BUNDLE_VA, HEADER_SIZE - 1, SIG_VA),  # MALFORMED: shorter than a header
        rax(table, spec, RAM + 0x1000, HEADER_SIZE, SIG_VA),  # UNREADABLE
        submit(bundle, bytes(len(sig))),  # BAD_SIGNATURE
        submit(*signed(2, key=other)),  # UNTRUSTED_KEY
        submit(*signed(3, issued_at=now - 7200, expires_at=now - 3600)),  # EXPIRED
        submit(bundle, sig),  # OK
        submit(bundle, sig),  # STALE_VERSION: a replay
        storage_failed(),
    }
    assert seen == spec.returns


@settings(max_examples=200, deadline=None)
@given(
    nr=st.sampled_from(range(len(BUILTINS))),
    args=st.tuples(*[st.integers(0, 2**32 - 1)] * 5),
    garbage=st.binary(min_size=0, max_size=512),
)
def test_hostile_arguments_get_only_declared_codes(
    nr: int, args: tuple[int, int, int, int, int], garbage: bytes
) -> None:
    mem, table = built_table()
    for va in (BUNDLE_VA, SIG_VA, BUF_VA):
        mem.write(va, garbage)
    small = (args[0] % RAM, args[1] % 4096, args[2] % RAM, args[3], args[4])
    spec = BUILTINS[nr]
    for regs in (args, small, (BUNDLE_VA, len(garbage), SIG_VA, 0, 0)):
        got = rax(table, spec, *regs)
        if spec.returns:
            assert got in spec.returns, f"{spec.name} returned {got}, not declared"
        else:  # get_vmmcall_number: a slot number, 0 when nothing is found
            assert 0 <= got < SLOTS and (got == 0 or table.name(got) is not None)


@pytest.mark.parametrize("spec", [s for s in BUILTINS if s.returns], ids=lambda s: s.name)
def test_declared_codes_are_return_codes(spec: HypercallSpec) -> None:
    assert all(isinstance(code, Rc) for code in spec.returns)
