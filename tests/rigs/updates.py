"""Signed updates handed to the hypervisor by VMCALL: a publisher's key and the bundles it signs,
a machine trusting it, the update guest run to its end; and installed states to persist."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from guest_tool.bundle import make_bundle
from guest_tool.keys import generate_keypair, load_private_key
from guest_tool.programs import build_update_program
from hv_emu.exits import Halt
from hv_emu.machine import Machine, MachineConfig
from hv_emu.updates.format import BundleHeader, ContentType, SigAlg
from hv_emu.updates.state import InstalledState
from hv_emu.updates.verify import VerifiedUpdate

SAMPLE = (Path(__file__).resolve().parents[2] / "hv_emu" / "data" / "sample.db").read_bytes()
DAY = 86400

# ------------------------------------------------------------------------------ by VMCALL


class Publisher:
    """A signing key and the bundles it makes."""

    def __init__(self, workdir: Path, name: str = "demo", alg: str = "ed25519") -> None:
        self.key_path, self.pub = generate_keypair(workdir / name, alg)
        self.key = load_private_key(self.key_path)

    def sign(self, body: bytes = SAMPLE, *, version: int = 1, kind: str = "db",
             issued: int | None = None, expires: int | None = None) -> tuple[bytes, bytes]:
        now = int(time.time())
        issued = now if issued is None else issued
        return make_bundle(body, kind=kind, version=version, private_key=self.key,
                           issued_at=issued, expires_at=expires or issued + 30 * DAY)


def machine_for(publisher: Publisher, **kw: object) -> Machine:
    return Machine(MachineConfig(trust=[publisher.pub], timeout=20.0, **kw))  # type: ignore[arg-type]


def run_update(machine: Machine, bundle: bytes, signature: bytes, *, mode: int = 64,
               lookup: bool = True) -> str:
    machine.load(build_update_program(bundle, signature, mode=mode, lookup=lookup), mode=mode)
    printed = len(machine.debugcon.captured)
    result = machine.run()
    assert isinstance(result.exit, Halt), result.exit
    return machine.debugcon.captured[printed:].decode()


# ------------------------------------------------------------------------------ installed state

OLD_BODY = b"Old.Sig-1:0:*:0011223344\n"
NEW_BODY = b"New.Sig-1:0:*:5566778899\nNew.Sig-2:0:*:aabbccddee\n"


def update(body: bytes, version: int, issued_at: int) -> VerifiedUpdate:
    header = BundleHeader(
        db_version=version,
        issued_at=issued_at,
        expires_at=issued_at + 1000,
        key_id=bytes.fromhex("0102030405060708"),
        sig_alg=SigAlg.ED25519,
        content_type=ContentType.NDB,
        body_len=len(body),
        body_sha256=hashlib.sha256(body).digest(),
    )
    return VerifiedUpdate(header, body)


def installed(body: bytes, version: int, issued_at: int = 5000) -> InstalledState:
    return InstalledState.record(update(body, version, issued_at), now=9000, time_floor=0)
