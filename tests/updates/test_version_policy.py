"""One version policy for every path (docs/UPDATE-FORMAT.md, "Versions"): an update must be newer
than the newest accepted one, at most ``MAX_VERSION_JUMP`` newer, and not in the reserved top of
the u64 range. A validly signed update cannot fast-forward the hypervisor out of reach of every
later update, by VMCALL or by network, and both paths decide every version alike."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.encoding import carousel, encode_update
from hv_emu.events import EventLog
from hv_emu.hypercalls.abi import Rc
from hv_emu.hypercalls.spec import HypercallContext
from hv_emu.hypercalls.update_signatures import update_signatures
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState
from hv_emu.scanner.database import ActiveDatabase, SignatureDatabase
from hv_emu.updates import service
from hv_emu.updates.receiver import UpdateReceiver
from hv_emu.updates.service import UpdateService, acceptable_versions
from tests.rigs.netupdate import KEY, FakeClock, database_text, signed, trust_of
from tests.rigs.updates import Publisher, machine_for, run_update

U64_MAX = 2**64 - 1
JUMP = 1_000_000  # docs/UPDATE-FORMAT.md: the largest step forward one update may take
BUNDLE_AT, SIGNATURE_AT = 0x1000, 0x80000


def test_a_vmcall_cannot_fast_forward_out_of_reach(tmp_path: Path) -> None:
    """The issue: version 2**64-1 was accepted by VMCALL and then nothing could ever install,
    across restarts with ``--state``."""
    publisher = Publisher(tmp_path)
    state = tmp_path / "state"
    machine = machine_for(publisher, state_dir=state)
    top = publisher.sign(version=U64_MAX)
    assert run_update(machine, *top) == "hvupdate: rc=5 (STALE_VERSION)\n"
    rejected, = machine.events.of("update_rejected")
    assert rejected["error"] == "STALE_VERSION" and rejected["db_version"] == 0
    assert run_update(machine, *publisher.sign(version=2)) == "hvupdate: rc=0 (OK)\n"
    assert machine.database.current.version == 2
    restarted = machine_for(publisher, state_dir=state)
    assert restarted.database.current.version == 2
    assert run_update(restarted, *publisher.sign(version=3)) == "hvupdate: rc=0 (OK)\n"


def test_a_vmcall_jump_is_bounded_like_the_network_one(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path)
    machine = machine_for(publisher)
    too_far = publisher.sign(version=JUMP + 1)
    assert run_update(machine, *too_far) == "hvupdate: rc=5 (STALE_VERSION)\n"
    assert run_update(machine, *publisher.sign(version=JUMP)) == "hvupdate: rc=0 (OK)\n"
    assert run_update(machine, *publisher.sign(version=2 * JUMP)) == "hvupdate: rc=0 (OK)\n"
    assert machine.database.current.version == 2 * JUMP


def service_at(installed: int) -> UpdateService:
    """A service whose newest accepted version is ``installed`` (as after a restart)."""
    db = SignatureDatabase.empty().replace(version=installed)
    return UpdateService(trust_of(KEY), ActiveDatabase(db), EventLog(), max_size=16 << 20)


def by_vmcall(installed: int, bundle: bytes, signature: bytes) -> bool:
    """The ``update_signatures`` handler on guest memory holding the bundle and signature."""
    mem = GuestMemory(1 << 20)
    mem.write(BUNDLE_AT, bundle)
    mem.write(SIGNATURE_AT, signature)
    service = service_at(installed)
    ctx = HypercallContext((BUNDLE_AT, len(bundle), SIGNATURE_AT, 0, 0), 32,
                           PagingState(cr0=1, cr3=0, cr4=0, efer=0), mem)  # fmt: skip
    rc = update_signatures(service)(ctx).rax
    assert rc in (Rc.OK, Rc.STALE_VERSION), Rc(rc).name  # only the version can be refused
    assert service.wait_active(30)
    return rc == Rc.OK


def by_network(installed: int, bundle: bytes, signature: bytes, update_id: int) -> bool:
    """Every packet of two carousel rounds through the receiver."""
    service = service_at(installed)
    clock = FakeClock()
    receiver = UpdateReceiver(service, clock=clock, rng=random.Random(1))
    for payload in carousel(encode_update(bundle, signature, KEY, update_id=update_id), rounds=2):
        receiver.on_datagram(payload, ("10.0.2.2", 0xDB01))
        clock.now += 0.0005
        receiver.poll()
    assert service.wait_active(30)
    refused = receiver.counters["stale"] + receiver.counters["version_jump"]
    installed_now = service.installed_version != installed
    assert installed_now or refused, dict(receiver.counters)
    return installed_now


EDGES = [0, 1, 2, JUMP - 1, JUMP, JUMP + 1, 2**62, 2**63 - JUMP - 1, 2**63 - JUMP, 2**63 - 2,
         2**63 - 1, 2**63, 2**64 - JUMP - 1, 2**64 - 3, 2**64 - 2, U64_MAX]


@st.composite
def version_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """(installed, offered): anywhere in u64, mostly near each other and near the edges."""
    installed = draw(st.one_of(st.sampled_from(EDGES), st.integers(0, U64_MAX)))
    step = draw(st.one_of(
        st.integers(-3, 3), st.sampled_from([JUMP - 1, JUMP, JUMP + 1]),
        st.integers(-2 * JUMP, 2 * JUMP), st.just(None),
    ))  # fmt: skip
    if step is None:
        offered = draw(st.one_of(st.sampled_from(EDGES[1:]), st.integers(1, U64_MAX)))
    else:
        offered = min(max(installed + step, 1), U64_MAX)
    return installed, offered


@given(version_pairs())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_vmcall_and_network_decide_every_version_alike(pair: tuple[int, int]) -> None:
    installed, offered = pair
    bundle, signature = signed(offered, body=database_text(offered % 1000, lines=8))
    vmcall = by_vmcall(installed, bundle, signature)
    network = by_network(installed, bundle, signature, update_id=offered & 0xFFFFFFFF)
    assert vmcall == network, (installed, offered, vmcall, network)


def test_the_window_and_its_edges() -> None:
    assert (service.MAX_VERSION_JUMP, service.MAX_DB_VERSION) == (JUMP, 2**63 - 1)
    assert acceptable_versions(0) == range(1, JUMP + 1)
    assert acceptable_versions(7, max_jump=3) == range(8, 11)
    top = service.MAX_DB_VERSION
    assert acceptable_versions(top - 5) == range(top - 4, top + 1)  # cut at the reserved half
    assert len(acceptable_versions(top)) == 0 and len(acceptable_versions(U64_MAX)) == 0


def test_update_format_states_the_policy() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "UPDATE-FORMAT.md").read_text()
    section = doc.split("\n## Versions\n", 1)[1].split("\n## ", 1)[0]
    assert f"min(installed + {JUMP:,}, 2^63 - 1)" in section
    assert "`STALE_VERSION` (5)" in section and "UpdateService.acceptable_versions" in section
