"""Files a user may name that are not plain files: a FIFO with no writer, a link to a device; and
``bounded``, which runs a read that must not block on such a FIFO without hanging the suite."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

_T = TypeVar("_T")
#: Far longer than a non-blocking open takes; only a read that blocks waits this long.
PATIENCE = 10.0


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def bounded(read: Callable[[], _T], blocking_on: Path) -> _T | BaseException:
    """``read()``'s result or the exception it raised, run on a thread; if it is still blocked
    (on the FIFO ``blocking_on``) after ``PATIENCE``, a writer opens the FIFO to free it and
    the test fails."""
    outcome: list[_T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(read())
        except BaseException as err:  # handed to the test
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PATIENCE)
    if thread.is_alive():  # blocked in open(): a writer lets it go on, at EOF once we close
        os.close(os.open(blocking_on, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(PATIENCE)
        raise AssertionError(f"reading {blocking_on} blocked")
    return outcome[0]
