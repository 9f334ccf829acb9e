"""The network's verifier thread (``GuestNetwork``): manifests are verified on it, never on the
I/O thread, and an update pushed in one go (even before the I/O thread reads it) installs."""

from __future__ import annotations

import io
import threading
import time

import pytest

from guest_tool.push import push
from hv_emu.net.attachment import GuestNetwork
from hv_emu.net.backends import UdpBackend
from hv_emu.net.config import NetConfig
from hv_emu.updates.packets import MANIFEST_DOMAIN
from hv_emu.updates.verify import TrustedKey
from tests.rigs.netupdate import SOURCE, encoded, rig

V = 5
PATIENCE = 10.0


@pytest.mark.parametrize("before_start", [False, True])
def test_manifests_are_verified_on_the_verifier_thread(
    monkeypatch: pytest.MonkeyPatch, before_start: bool
) -> None:
    threads: list[str] = []
    real = TrustedKey.verifies

    def recording(self: TrustedKey, message: bytes, signature: bytes) -> bool:
        # Manifest signatures only: installing calls UpdateService.submit, whose own check of
        # the bundle signature (one, for a decoded and hash-checked body) is the install's.
        if message.startswith(MANIFEST_DOMAIN):
            threads.append(threading.current_thread().name)
        return real(self, message, signature)

    r = rig(installed=2)
    r.receiver.clock = r.receiver.budget.clock = time.monotonic
    r.receiver.budget.stamp = time.monotonic()
    monkeypatch.setattr(TrustedKey, "verifies", recording)
    backend = UdpBackend(("127.0.0.1", 0))
    network = GuestNetwork(backend, NetConfig(), guest_mac=bytes.fromhex("525400000002"),
                           on_update=lambda d: r.receiver.on_datagram(d.payload, SOURCE),
                           poll=r.receiver.poll, checks=r.receiver)
    sender = UdpBackend(("127.0.0.1", 0), backend.local_address)
    try:
        if before_start:  # everything waits in the socket when the I/O thread starts
            push(encoded(V), sender, rounds=1, progress_to=io.StringIO(), sleep=lambda s: None)
        network.start()
        if not before_start:
            push(encoded(V), sender, rounds=2, progress_to=io.StringIO())
        end = time.monotonic() + PATIENCE
        while r.installed != V and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        sender.close()
        network.close()
    assert r.installed == V
    assert threads and set(threads) == {"hv-emu-verify"}, threads
    assert r.receiver.offloaded is False  # stopped: a last poll checks on its own thread


def test_a_dead_verifier_hands_the_checks_back_and_is_reported_as_a_bug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The verifier dies on its first check: the I/O thread's poll takes the checks over (the
    manifest in flight is forgotten, so sent again it is checked), the update installs, the
    event ``verifier_failed`` says why, and ``stop()`` raises the bug (not a user error)."""
    r = rig(installed=2)
    r.receiver.clock = r.receiver.budget.clock = time.monotonic
    r.receiver.budget.stamp = time.monotonic()
    real = type(r.receiver).check

    def dies_on_the_verifier(self: object, check: object) -> object:
        if threading.current_thread().name == "hv-emu-verify":
            raise ValueError("boom")
        return real(self, check)  # type: ignore[arg-type]

    monkeypatch.setattr(type(r.receiver), "check", dies_on_the_verifier)
    backend = UdpBackend(("127.0.0.1", 0))
    network = GuestNetwork(backend, NetConfig(), guest_mac=bytes.fromhex("525400000002"),
                           on_update=lambda d: r.receiver.on_datagram(d.payload, SOURCE),
                           poll=r.receiver.poll, checks=r.receiver)
    sender = UdpBackend(("127.0.0.1", 0), backend.local_address)
    try:
        network.start()
        end = time.monotonic() + PATIENCE
        while r.installed != V and time.monotonic() < end:
            push(encoded(V), sender, rounds=1, progress_to=io.StringIO())
            time.sleep(0.05)
    finally:
        sender.close()
        with pytest.raises(RuntimeError, match="verifier thread failed: ValueError: boom"):
            network.close()
    assert r.installed == V
    [event] = r.events.of("verifier_failed")
    assert event["problem"] == "ValueError: boom" and event["abandoned"] >= 1
    assert r.receiver.offloaded is False
