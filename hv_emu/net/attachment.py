"""The guest's network attachment: NIC, switch, backend, capture, and the I/O thread serving them.

Models: what a VMM's network back end does between the guest's card and the host socket, the way
QEMU's main loop (or a vhost thread) does: frames the guest transmits go through the hypervisor's
switch to the backend at once (on the vCPU thread); frames arriving on the backend are read by an
I/O thread, which passes each through the switch first (update datagrams go to the hypervisor's
update receiver and never to the guest) and queues the rest in the NIC. The same thread drives the
update receiver's ``poll`` (after every frame while no verifier thread runs the checks, else once
a turn; at least every ``POLL_INTERVAL`` when idle: its verification budget refills with time, not
with packets), and stops cleanly when the run ends,
with one last ``poll(final=True)`` so the receiver logs the counters it has not logged yet.
Signature checks of candidate manifests run on a second thread, the *verifier*: it takes a batch
from the receiver under the lock (``take_checks``: no crypto), verifies it without the lock
(``check``; ``cryptography`` releases the GIL, so it runs on another core), and hands the verdicts
back under the lock (``finish_checks``), so the I/O thread never verifies and keeps draining the
socket under a flood of forged manifests (it waits for a verdict, at most ``HANDOFF_WAIT``, only
while no forgery was refused for a second: see ``_serve``). The receiver's CPU budget
(``updates/admission.py``) decides how many checks a batch holds; the verifier sleeps until the
budget refills (at least ``CHECK_PERIOD``), or, idle, until the I/O thread says candidates wait.
With a backend that reads batches (``read_batch``: one ``recvmmsg`` of up to 1,024 datagrams)
and nothing to run after each frame (the verifier runs the checks), the I/O thread hands each
batch to the switch whole (``NetSwitch.from_wire_batch``: the update port's drops judged by
array operations, the rest frame by frame, in order; ``triage.py``), and stops early to hand a
candidate to the verifier, the rest of the batch waiting for its next turn. While it runs, the
interpreter's thread switch interval is at most 0.5 ms (``switch_interval.py``): a flooded
I/O thread holds the GIL nearly all the time, and the other threads (the vCPU's, the
verifier's) would wait 5 ms for it at each wake-up.
Cutting the network (``Machine.cut_network``) sets the switch's ``cut`` flag and takes the card's
link down: the guest sends and receives nothing afterwards while the hypervisor still takes
updates from the wire.
If the verifier dies (a bug), it hands the checks back under the lock (``ManifestChecks.
verifier_failed``: ``offloaded`` off, the checks in flight forgotten, the event
``verifier_failed``), so the I/O thread's ``poll`` runs them from then on and updates still
install; ``stop()`` then reports the bug as the I/O thread's own: a ``RuntimeError``, not an
``HvEmuError`` (a bug of ours: the CLI says "internal error", exit status 70).

Follows: BitVisor's netapi split (include/net/netapi.h: the "virt" endpoint is the NIC, the "phys"
endpoint the backend, the module between them decides), QEMU's NetClientState pairing of a NIC
and a netdev, ``hv_emu/net/switch.py`` for every forwarding decision.

Leaves out: interrupts (the guest polls its card), several NICs, hot-plugging the backend,
back-pressure to the backend (a full NIC queue drops, as hardware does).

Network controls: every frame read from the backend; the guest controls every frame it transmits.
Thread safety: one lock serialises the switch, the capture file and the update receiver between
the vCPU thread (transmit) and the I/O thread (receive, poll); the NIC guards its own queue and is
never called back while that lock is held by the NIC's caller. Threats:

| Threat                                          | Mitigation                                    |
|-------------------------------------------------|-----------------------------------------------|
| Flood on the backend starves the thread         | at most ``RX_BATCH`` frames a turn, then poll |
|                                                 | (a batch: 1,024 at most, drops by array)      |
| A flooded I/O thread starves the others of GIL  | a 0.5 ms switch interval while it runs        |
| Forged manifests stall the I/O thread on crypto | verified on the verifier thread, off the lock |
| Verification eats the host                      | the receiver's CPU budget sizes every batch   |
| Flood fills host memory                         | bounded NIC queue; the switch keeps nothing   |
| A bug in the receiver kills the thread silently | kept; ``stop()`` raises it (internal error)   |
| A bug kills the verifier and, with it, updates  | ``poll`` takes the checks back; an event says |
| The thread outliving the run                    | ``stop()`` wakes it (socket pair) and joins   |
"""

from __future__ import annotations

import collections
import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from hv_emu.devices.nic import Nic
from hv_emu.errors import ConfigError, HostError
from hv_emu.net import switch_interval
from hv_emu.net.backends import FrameBackend
from hv_emu.net.config import NetConfig, format_mac
from hv_emu.net.frames import UdpDatagram
from hv_emu.net.pcap import PcapWriter
from hv_emu.net.recvmmsg import FrameBatch
from hv_emu.net.switch import Direction, NetSwitch, PayloadSink
from hv_emu.net.triage import UpdateBatch

#: Frames read from the backend per turn of the I/O thread before it polls the receiver again.
RX_BATCH = 64
#: Longest the I/O thread sleeps with nothing to read: the receiver's poll period.
POLL_INTERVAL = 0.02
#: Longest the I/O thread waits for the verifier's verdict on a lone candidate (see ``_serve``).
HANDOFF_WAIT = 0.02
#: How long ``stop()`` waits for the I/O thread to finish its turn.
JOIN_TIMEOUT = 5.0
#: Shortest sleep of the verifier once the budget is spent (the next batch then holds a few
#: checks' worth of budget, not one); also its longest idle sleep between two looks.
CHECK_PERIOD = 0.005

UpdateSink = Callable[[UdpDatagram], None]
_T = TypeVar("_T")


class Poll(Protocol):
    """The update receiver's ``poll``: ``final`` on the last call before the I/O thread stops."""

    def __call__(self, *, final: bool = False) -> None: ...


@runtime_checkable
class ManifestChecks(Protocol):
    """The update receiver's checks, split so the crypto runs off the lock (``UpdateReceiver``):
    ``take_checks`` and ``finish_checks`` under the lock, ``check`` on any thread without it;
    ``offloaded`` tells its ``poll`` to leave the checks to the verifier."""

    offloaded: bool

    def take_checks(self) -> list[Any]: ...
    def check(self, check: Any) -> Any: ...
    def finish_checks(self, results: list[Any]) -> None: ...
    def check_wait(self) -> float: ...
    def pending_checks(self) -> int: ...
    def awaits_verdict(self) -> bool: ...
    def verifier_failed(self, problem: str) -> None: ...


class GuestNetwork:
    """The guest's card on the port bus, wired through the switch to ``backend``.

    ``on_update`` receives every update datagram the switch consumes; ``poll`` (if given) is
    called by the I/O thread at least every ``POLL_INTERVAL`` seconds while it runs, and once
    with ``final=True`` when ``stop()`` has stopped it. ``checks`` (by default the owner of
    ``poll`` when it is a ``ManifestChecks``, i.e. the update receiver) get the verifier thread.
    ``on_update_payload`` (the receiver's ``on_payload``), if given, takes the update port's
    common frames on the switch's raw front path instead of ``on_update`` (``switch.py``).
    """

    def __init__(
        self,
        backend: FrameBackend,
        config: NetConfig,
        *,
        guest_mac: bytes,
        on_update: UpdateSink,
        poll: Poll | None = None,
        checks: ManifestChecks | None = None,
        capture: Path | None = None,
        on_update_payload: PayloadSink | None = None,
        update_batch: UpdateBatch | None = None,
    ) -> None:
        if guest_mac == config.hv_mac or len(guest_mac) != 6 or guest_mac[0] & 1:
            raise ConfigError(
                f"guest MAC {format_mac(guest_mac)} must be unicast and not the hypervisor's"
            )
        self.backend = backend
        self._lock = threading.Lock()
        self._poll = poll
        self._checks = checks
        self._verifier: threading.Thread | None = None
        self._candidates = threading.Event()  # set by the I/O thread: candidates are pending
        self._verdicts = threading.Event()  # set by the verifier: verdicts are in
        self.capture = PcapWriter.create(str(capture)) if capture is not None else None
        self.nic = Nic(guest_mac, self._guest_transmitted)
        self.switch = NetSwitch(
            config, to_guest=self._to_guest, to_wire=backend.send_frame,
            on_update_datagram=on_update, tap=self._tap if self.capture else None,
            on_update_payload=on_update_payload, update_batch=update_batch,
        )  # fmt: skip
        self._thread: threading.Thread | None = None
        self._handoff = False  # the I/O thread's: hand the pending candidates to the verifier
        self._holds_interval = False  # ``switch_interval.hold`` taken by ``start()``
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        #: The unexpected exception that ended the I/O thread (raised again by ``stop``).
        self.io_error: BaseException | None = None
        #: The unexpected exception that ended the verifier thread (raised again by ``stop``).
        self.verifier_error: BaseException | None = None

    # ------------------------------------------------------------------ the two directions
    def _guest_transmitted(self, frame: bytes) -> None:
        """The guest said TRANSMIT (vCPU thread): through the switch, to the wire or dropped."""
        with self._lock:
            self.switch.from_guest(frame)

    def _to_guest(self, frame: bytes) -> None:
        """The switch forwards a frame from the wire (I/O thread): into the card's queue, which
        drops and counts it when full."""
        self.nic.deliver(frame)

    def _tap(self, direction: Direction, frame: bytes) -> None:
        """Every frame entering the switch, in either direction, goes to the capture file
        (always called with ``_lock`` held, so records never interleave)."""
        assert self.capture is not None  # installed only with a capture file
        self.capture.write(frame)

    def _serve(self) -> None:
        """The I/O thread: wait for frames or the stop signal, pass frames in, poll.

        When the receiver ``awaits_verdict`` (a candidate manifest and no recent forgery), the
        thread hands it to the verifier and waits for the verdict (at most ``HANDOFF_WAIT``)
        before it passes the rest of its batch in, so the frames queued behind a genuine
        manifest find its session open. Under a flood of forged manifests it never waits."""
        backend_fd, wake_fd = self.backend.fileno(), self._wake_r.fileno()
        backlog: collections.deque[bytes] = collections.deque()
        read_batch: Callable[[], FrameBatch] | None = getattr(self.backend, "read_batch", None)
        batch: FrameBatch | None = None
        try:
            while not self._stopping.is_set():
                if not backlog and (batch is None or batch.done):
                    readable, _, _ = select.select([backend_fd, wake_fd], [], [], POLL_INTERVAL)
                    if backend_fd in readable:
                        if read_batch is not None and self._batched():
                            batch = read_batch()
                        else:
                            backlog.extend(self.backend.recv_frames(RX_BATCH))
                self._handoff = pending = False
                with self._lock:
                    if batch is not None and not batch.done:
                        self._pass_batch(batch)
                    while backlog and not self._handoff:
                        self.handle_frame(backlog.popleft())
                        self._handoff = self._awaits_verdict()
                    self._tick()  # the receiver's budget refills with time, traffic or not
                    if self._checks is not None and self._checks.pending_checks() > 0:
                        pending = True
                        self._verdicts.clear()
                if pending:
                    self._candidates.set()  # wakes an idle verifier at once
                if self._handoff:
                    self._verdicts.wait(HANDOFF_WAIT)
        except BaseException as err:  # handed to the vCPU's side by stop()
            self.io_error = err

    def _batched(self) -> bool:
        """True when a batch read by ``recvmmsg`` may be handled a batch at a time: nothing has
        to run after each frame (the verifier runs the checks, or there is no receiver)."""
        return self._poll is None or (self._checks is not None and self._checks.offloaded)

    def _awaits_verdict(self) -> bool:
        self._handoff = self._checks is not None and self._checks.awaits_verdict()
        return self._handoff

    def _pass_batch(self, batch: FrameBatch) -> None:
        """A batch's rows through the switch (the caller holds the lock): at once while
        ``_batched``, else frame by frame as ``handle_frame`` takes them; stops early to hand
        a candidate to the verifier (``_handoff``), the rest left in the batch."""
        if self._batched():
            self.switch.from_wire_batch(batch, self._awaits_verdict)
            return
        while not batch.done and not self._handoff:
            row = batch.position
            batch.position += 1
            if batch.keep[row]:
                self.handle_frame(batch.frame(row))
                self._awaits_verdict()

    def handle_frame(self, frame: bytes) -> None:
        """What the I/O thread does with one frame from the backend (the caller holds the lock):
        through the switch, then the receiver's ``poll`` (a manifest just verified lets the next
        packets in)."""
        self.switch.from_wire(frame)
        if self._checks is None or not self._checks.offloaded:
            self._tick()  # else the verifier opens sessions; the turn's own poll reports

    def _verify(self, checks: ManifestChecks) -> None:
        """The verifier thread: a batch under the lock, its crypto without, verdicts under it."""
        try:
            while not self._stopping.is_set():
                with self._lock:
                    batch = checks.take_checks()
                    wait = checks.check_wait()
                if batch:
                    results = [checks.check(c) for c in batch]
                    with self._lock:
                        checks.finish_checks(results)
                    self._verdicts.set()
                    continue  # more may be affordable and pending
                if wait > 0.0:  # the budget is spent: sleep until it refills
                    self._stopping.wait(max(wait, CHECK_PERIOD))
                else:  # nothing pending: until the I/O thread says so (or CHECK_PERIOD)
                    self._candidates.wait(CHECK_PERIOD)
                    self._candidates.clear()
        except BaseException as err:  # handed to the vCPU's side by stop()
            self.verifier_error = err
            # The checks go back to the I/O thread's poll (and those in flight can be retried),
            # or no update would install for the rest of the run.
            with self._lock:
                checks.verifier_failed(f"{type(err).__name__}: {err}")
            self._verdicts.set()

    def _tick(self, *, final: bool = False) -> None:
        if self._poll is not None:
            self._poll(final=final)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Start serving the backend (before the vCPU runs)."""
        if self._thread is not None or self._closed:
            raise HostError("the network is closed or its I/O thread already running")
        self._stopping.clear()
        switch_interval.hold()
        self._holds_interval = True  # released by ``stop()``, or below if a thread fails to start
        try:
            self._start_threads()
        except BaseException:
            self._release_interval()
            raise

    def _start_threads(self) -> None:
        if self._checks is not None:
            self._checks.offloaded = True
            self._verifier = threading.Thread(target=self._verify, args=(self._checks,),
                                              name="hv-emu-verify", daemon=True)  # fmt: skip
            self._verifier.start()
        self._thread = threading.Thread(target=self._serve, name="hv-emu-net", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (after the vCPU stopped): wake the thread, join it, flush the capture."""
        thread, self._thread = self._thread, None
        verifier, self._verifier = self._verifier, None
        if thread is not None:
            self._stopping.set()
            self._candidates.set()
            self._wake_w.send(b"\0")
            thread.join(JOIN_TIMEOUT)
            if verifier is not None:
                verifier.join(JOIN_TIMEOUT)
            self._release_interval()
            if thread.is_alive() or (verifier is not None and verifier.is_alive()):
                raise HostError("the network I/O thread did not stop")
            self._wake_r.recv(1)
            if self._checks is not None:
                self._checks.offloaded = False  # the last poll checks on this thread
            if self.io_error is None:
                self._last_tick()
        if self.capture is not None:
            with self._lock:
                self.capture.flush()
        for which, err in (("I/O", self.io_error), ("verifier", self.verifier_error)):
            if err is not None:
                self.io_error = self.verifier_error = None
                raise RuntimeError(  # a bug of ours: an internal error, not a user's
                    f"the network {which} thread failed: {type(err).__name__}: {err}"
                ) from err

    def _release_interval(self) -> None:
        if self._holds_interval:
            self._holds_interval = False
            switch_interval.release()

    def _last_tick(self) -> None:
        """The thread has stopped: one last poll on this thread, under the same lock."""
        try:
            with self._lock:
                self._tick(final=True)
        except Exception as err:  # raised by stop() as the thread's own failures are
            self.io_error = err

    def close(self) -> None:
        """Stop, close the capture file and the backend's socket (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop()
        finally:
            if self.capture is not None:
                self.capture.close()
            self.backend.close()
            self._wake_r.close()
            self._wake_w.close()

    def cut(self) -> None:
        """Take the guest's link down both ways (updates still arrive): a network-cut listener."""
        with self._lock:
            self.switch.cut = True
            self.nic.set_link(False)

    # ------------------------------------------------------------------ status
    def under_lock(self, read: Callable[[], _T]) -> _T:
        """``read()`` while no frame is being handled: how another thread (the vCPU's, for
        ``get_status``) takes a consistent snapshot, e.g. ``under_lock(receiver.stats)``."""
        with self._lock:
            return read()

    def summary(self) -> str:
        """One phrase for the end-of-run line: link state and frame counts."""
        with self._lock:
            counters = dict(self.switch.counters)
        text = (
            f"{'cut' if self.switch.cut else 'up'}: "
            f"{counters.get('from_guest.for_wire', 0)} frames sent by the guest, "
            f"{counters.get('from_wire.for_guest', 0)} received, "
            f"{counters.get('from_wire.for_hypervisor', 0)} update datagrams"
        )
        cut_out = counters.get("from_guest.drop.cut", 0)
        cut_in = counters.get("from_wire.drop.cut", 0)
        if cut_out or cut_in:
            text += f"; dropped by the cut: {cut_out} from the guest, {cut_in} to it"
        return text

    def status_lines(self) -> list[str]:
        """Lines for ``get_status`` (after the machine's ``network: up|cut``): frame counts."""
        with self._lock:
            counters = dict(self.switch.counters)
        sent = counters.get("from_guest.for_wire", 0)
        received = counters.get("from_wire.for_guest", 0)
        updates = counters.get("from_wire.for_hypervisor", 0)
        return [
            f"guest_mac: {format_mac(self.nic.mac)}",
            f"frames_from_guest: {sent}",
            f"frames_to_guest: {received}",
            f"update_datagrams: {updates}",
        ]
