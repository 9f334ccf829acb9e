"""A real browser for the report page: Debian's Chromium, headless.

``dump_dom`` is ``chromium --headless --dump-dom``: the document as Chromium parsed it. ``Browser``
drives Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``: commands on its
fd 3, answers and events on its fd 4, each a JSON object ended by a NUL byte), so a test can ask
what the page shows (``innerText``, layout boxes, computed colours) and which network requests the
page made (``Network.requestWillBeSent`` of the page's own session, which Chromium's background
services, talking to their own servers, are not part of).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for every run: no GPU, no sandbox (containers, root), nothing kept between runs.
FLAGS = ("--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio")  # fmt: skip
PATIENCE = 60.0


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")


def dump_dom(page: Path) -> str:
    """The DOM Chromium built from ``page``, serialised (``--dump-dom``)."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=PATIENCE, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Browser:
    """One headless Chromium on a DevTools pipe; ``open`` a page, then ``evaluate`` in it."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory()
        commands_r, self._commands = os.pipe()
        self._answers, answers_w = os.pipe()
        # The protocol's fds are 3 and 4 in Chromium: bash puts the pipes there, then execs it.
        script = f'exec "$0" "$@" 3<&{commands_r} 4>&{answers_w} {commands_r}<&- {answers_w}>&-'
        self._process = subprocess.Popen(
            ["bash", "-c", script, str(CHROMIUM), *FLAGS, "--remote-debugging-pipe",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            pass_fds=(commands_r, answers_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_r)
        os.close(answers_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        self._session: str | None = None

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, AssertionError):  # it may close the pipe first
            self.call("Browser.close", session=False)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        os.close(self._answers)
        self._profile.cleanup()

    # ------------------------------------------------------------------ the protocol
    def call(self, method: str, session: bool = True, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session and self._session is not None:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") == self._next_id:
                assert "error" not in answer, (method, answer["error"])
                result: dict[str, Any] = answer["result"]
                return result
            self.events.append(answer)

    def _receive(self, deadline: float | None = None) -> dict[str, Any]:
        deadline = deadline or time.monotonic() + PATIENCE
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer"
            ready, _, _ = select.select([self._answers], [], [], left)
            if ready:
                chunk = os.read(self._answers, 1 << 16)
                assert chunk, "Chromium closed its DevTools pipe"
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` of the page's session (already arrived, or the next)."""
        while True:
            for event in self.events:
                if event.get("method") == method and event.get("sessionId") == self._session:
                    return event
            self.events.append(self._receive())

    # ------------------------------------------------------------------ pages
    def open(self, page: Path) -> None:
        """A new tab on ``page``, its network watched from before the first request."""
        target = self.call("Target.createTarget", session=False, url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", session=False, targetId=target,
                                  flatten=True)["sessionId"]  # fmt: skip
        self.call("Network.enable")
        self.call("Page.enable")
        self.call("Page.navigate", url=page.as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools runs it, not the page)."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    def requests(self) -> list[str]:
        """URLs the open page asked for, its own document included."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"
                and e.get("sessionId") == self._session]  # fmt: skip
