"""``hv-emu demo`` (what ``make demo`` runs): the VMCALL update path, end to end, in seconds.

Models: a short story told with the real pieces: a publisher makes a key and signs the sample
database; a guest program hands it to the hypervisor with VMCALL; the hypervisor verifies and
installs it; then a tampered update and a replayed older one are refused while the installed
database stays in force. Every step runs a real guest on the real vCPU, with the state persisted in
a directory, exactly as ``hv-emu run --state DIR`` would: a temporary one, or ``--workdir DIR``,
which is created if missing (its parent must exist: only the last component is made, as by
``mkdir`` without ``-p``) and, if it exists, used only when it holds none of ``DEMO_FILES``: the
demo never overwrites a file it did not write.

Follows: the README's walkthrough, step for step.

Leaves out: nothing of the three paths: the disk chapter is ``storage.py``, the network
chapter ``network.py``.

Guest controls: nothing; the demo builds its own guests.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from guest_tool.bundle import write_bundle
from guest_tool.keys import generate_keypair
from guest_tool.programs import build_update_program
from hv_emu import SAMPLE_DB
from hv_emu.cli.demo.network import network_story
from hv_emu.cli.demo.storage import storage_story
from hv_emu.errors import ConfigError
from hv_emu.machine import Machine, MachineConfig
from hv_emu.usage import plural

#: The update's new signature (a made-up body, in the original design's ``new_virus1=0f3b...``
#: spirit).
NEW_SIGNATURE = "Demo.New-Virus-1=0f3b5e8b7d0c31c0cd80b801000000cd80\n"
#: Every file and directory the demo writes in its working directory (the chapters' files too);
#: tests/cli/test_story.py checks that a run writes nothing else.
DEMO_FILES = (
    "demo.key", "demo.pub", "v1.hvdb", "v1.hvdb.sig", "v2.db", "v2.hvdb", "v2.hvdb.sig",
    "v2-tampered.hvdb", "state",  # this chapter
    "disk.img", "disk-state",  # storage.py
    "v3.hvdb", "v3.hvdb.sig", "v4.hvdb", "v4.hvdb.sig",  # network.py
)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _run_guest(workdir: Path, image: bytes, trust: Path, title: str) -> Machine:
    """One ``hv-emu run update-guest.bin --trust demo.pub --state state/`` with a short report."""
    machine = Machine(MachineConfig(trust=[trust], state_dir=workdir / "state", timeout=10.0))
    before = machine.database.current
    machine.load(image)
    result = machine.run()
    after = machine.database.current
    _say(f"  {title}")
    for event in machine.events.records:
        if event["event"] == "hypercall":
            _say(f"    vmm   | VMCALL nr={event['nr']} ({event['name']}) -> RAX={event['ret']}")
        elif event["event"] == "update_accepted":
            _say(f"    vmm   | update accepted: database v{event['db_version']}, "
                 f"{event['signatures']} signatures; OK now, v{event['active_version']} scans "
                 "until its compile is done")
        elif event["event"] == "update_rejected":
            _say(f"    vmm   | update REJECTED ({event['error']}): {event['reason']}")
    for line in machine.debugcon.text().splitlines():
        _say(f"    guest | {line}")
    kept = "replaced" if after.version != before.version else "unchanged"
    _say(f"    state | database in force: v{after.version}, {plural(after.count, 'signature')} "
         f"({kept})")
    if not result.halted:
        raise SystemExit(f"hv-emu demo: the guest did not halt: {result.exit}")
    return machine


def run_demo(workdir: Path | None = None) -> int:
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="hv-emu-demo-") as tmp:
            return _demo(Path(tmp))
    prepare_workdir(workdir)
    return _demo(workdir)


def prepare_workdir(path: Path) -> None:
    """Make ``--workdir`` ready, or raise a one-line ``ConfigError``: create it if missing (only
    the last component), and refuse a path that is not a directory, a directory the user cannot
    write, and one holding any of ``DEMO_FILES``, which the demo would overwrite."""
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise ConfigError(f"--workdir {path}: not a directory")
        taken = [name for name in DEMO_FILES
                 if (path / name).exists() or (path / name).is_symlink()]
        if taken:
            raise ConfigError(f"--workdir {path} already holds {', '.join(taken)}, which the demo "
                              "would overwrite: give it a new or an empty directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"--workdir {path}: not writable")
        return
    if not path.parent.is_dir():
        raise ConfigError(f"--workdir {path}: {path.parent} is not a directory (the demo creates "
                          "only the last component, as mkdir does without -p)")
    try:
        path.mkdir()
    except OSError as err:
        raise ConfigError(f"--workdir {path}: cannot create it: {err.strerror}") from None


def _demo(work: Path) -> int:
    _say("hv-emu demo: a guest updates its hypervisor's malware signatures with VMCALL")
    _say(f"  (files in {work})\n")

    _say("1. The publisher makes an Ed25519 key pair      guest-tool keygen demo")
    key, pub = generate_keypair(work / "demo")
    _say(f"  wrote {key.name} and {pub.name}\n")

    _say("2. ...and signs the sample database as version 1  guest-tool bundle --db sample.db ...")
    v1, _ = write_bundle(SAMPLE_DB, version=1, key_path=key, out=work / "v1.hvdb")
    _say(f"  {SAMPLE_DB.name}: Aircop, Burghofer, Burglar, Carnage and the EICAR test string")
    _say(f"  wrote {v1.name} ({v1.stat().st_size} bytes) and {v1.name}.sig\n")

    def guest_for(bundle: Path, signature: Path | None = None) -> bytes:
        sig = (signature or Path(f"{bundle}.sig")).read_bytes()
        return build_update_program(bundle.read_bytes(), sig)

    _say("3. A guest program hands it over: get_vmmcall_number, then VMCALL with")
    _say("   RAX=2, RBX=data, RCX=length, RDX=signature")
    _say("   (hv-emu run update-guest.bin --trust demo.pub)")
    _run_guest(work, guest_for(v1), pub, "the hypervisor verifies the signature and installs v1:")
    _say()

    _say("4. Version 2 adds a signature; an attacker flips one byte of it on the way")
    v2_db = work / "v2.db"
    v2_db.write_text(SAMPLE_DB.read_text() + NEW_SIGNATURE)
    v2, v2_sig = write_bundle(v2_db, version=2, key_path=key, out=work / "v2.hvdb")
    tampered = bytearray(v2.read_bytes())
    tampered[-10] ^= 0x01
    (work / "v2-tampered.hvdb").write_bytes(tampered)
    _run_guest(work, guest_for(work / "v2-tampered.hvdb", v2_sig), pub,
               "the body no longer matches what was signed:")
    _say()

    _say("5. The genuine version 2 arrives")
    _run_guest(work, guest_for(v2), pub, "accepted, and persisted with its version counter:")
    _say()

    _say("6. An attacker replays the old, validly signed version 1 (a rollback)")
    _run_guest(work, guest_for(v1), pub, "refused before any signature check:")
    _say()
    storage_story(work, pub, SAMPLE_DB, guest_for(v2))
    _say()
    network_story(work, key, pub, v2_db)
    _say()
    _say("The hypervisor kept its database through a tampered and a replayed update, caught the")
    _say("signature in PIO and DMA writes, and took updates from the network while the guest was")
    _say("cut off. Next: docs/TUTORIAL.md, a guided tour in which you run each piece yourself.")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
