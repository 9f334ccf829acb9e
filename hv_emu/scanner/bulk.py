"""An update's database text read into the program's input, with no ``Signature`` per plain line.

Models: the compile worker's parse of an accepted ``.db``/``.ndb`` update. ``parse_database``
builds three frozen objects per line (a ``Signature``, its ``Part``, its ``Literal``), which for
100,000 lines is about half a second of the time to *active* (docs/PERFORMANCE.md, issue 10).
Nearly every line of an update is a plain literal anywhere (``Name:0:*:HEX``, ``Name=HEX``), and
for those the program needs a name and the bytes, nothing more. ``parse_entries`` walks the text
as ``database_check.walk_database`` does (the same runs, the same limits and errors) and gives,
in line order, a ``PlainLiteral`` (name, bytes) for each line of a run and the ``Signature`` of
every other line; ``program.build_program`` takes that list as it takes signatures. An update's
pause walks the text already (``database_check.check_steps``); ``entries_of`` starts from the
steps it kept, so a line with wildcards is parsed once, not again on the worker, and a line of
``simple_lines``'s form, only checked by the pause, is built here (alone, or among a
``WildRun``'s lines: ``wild_entries``).

Follows: ``signatures.parse_database`` line for line: ``tests/scanner/test_bulk.py`` holds the
program built from ``parse_entries`` to the program built from ``parse_database`` (every
pattern's fields, in order) and the errors to its errors, on generated texts (Hypothesis).

Garbage collection: building a program allocates a few hundred thousand small objects that
live on (patterns, their tuples), and Python's cyclic collector, run every 700 allocations over
a young generation that keeps being promoted, then costs three quarters of the build (0.49 s of CPU
for 100,000 patterns, 0.13 s without it; measured, docs/PERFORMANCE.md). ``gc_paused`` holds the
collector off for the build; nothing built there is cyclic garbage, and what other threads make
meanwhile is collected as soon as it ends.

Leaves out: the ``Signature`` objects of plain lines. Nothing needs them: a plain literal anywhere
is never "not applied" and has no end-relative offset, so ``SignatureDatabase.not_applied`` and
``end_relative`` read the same from the other lines alone (``signatures_of``).

Guest controls: the text (an update's body), bounded and checked as ``walk_database`` bounds and
checks it; raises only ``DatabaseError``.
"""

from __future__ import annotations

import binascii
import contextlib
import gc
import re
import threading
from collections.abc import Iterable, Iterator

from hv_emu.errors import DatabaseError
from hv_emu.scanner.database_check import Step, WildRun, walk_database
from hv_emu.scanner.program import PlainLiteral
from hv_emu.scanner.signatures import Signature
from hv_emu.scanner.simple_lines import simple_ndb_line

#: One line of a run ``walk_database`` found (its name, its hex body). The run regex already
#: proved each line's form; these only cut the fields out.
_LINES = {
    "ndb": re.compile(rb"([^\n:]*):0:\*:([0-9a-fA-F]*)\r?\n"),
    "db": re.compile(rb"([^\n=]*)=([0-9a-fA-F]*)\r?\n"),
}

#: One line of a ``WildRun`` (its name, its body, plain or with wildcards).
_WILD_LINES = re.compile(rb"([^\n:]*):0:\*:([^\n\r]*)\r?\n")

Entry = Signature | PlainLiteral


def parse_entries(data: bytes, *, kind: str, source: str) -> list[Entry]:
    """``parse_database``'s signatures, each plain line of a run as a ``PlainLiteral`` instead;
    raises exactly the ``DatabaseError`` ``parse_database`` raises."""
    return entries_of(data, kind, walk_database(data, kind=kind, source=source), source)


def entries_of(data: bytes, kind: str, steps: Iterable[Step], source: str) -> list[Entry]:
    """The entries of ``data`` from the steps of its walk (``walk_database``, or the steps an
    update's pause kept: ``database_check.check_steps``)."""
    entries: list[Entry] = []
    unhex = binascii.unhexlify
    lines = _LINES[kind]
    for step in steps:
        if isinstance(step, WildRun):
            entries += wild_entries(data, step, source)
        elif isinstance(step, tuple) and len(step) == 3:  # checked by simple_form: built here
            start, stop, number = step
            built = simple_ndb_line(data[start:stop], number, source)
            if built is None:  # cannot be: simple_form said it builds
                raise DatabaseError(source, number, 0, "internal: a checked line did not build")
            entries.append(built)
        elif isinstance(step, tuple):
            # A run's names are printable ASCII (no " (Clam)" to cut): latin-1 is clam_name.
            entries += [(name.decode("latin-1"), unhex(body))
                        for name, body in lines.findall(data, *step)]  # fmt: skip
        else:
            entries.append(step)
    return entries


def wild_entries(data: bytes, run: WildRun, source: str) -> list[Entry]:
    """The entries of a ``WildRun``: a ``PlainLiteral`` for each plain line, the ``Signature``
    ``simple_ndb_line`` builds for each other line (the run's regex proved it builds)."""

    def built(name: bytes, body: bytes, number: int) -> Signature:
        signature = simple_ndb_line(name + b":0:*:" + body, number, source)
        if signature is None:  # cannot be: the run's regex took only lines that build
            raise DatabaseError(source, number, 0, "internal: a checked line did not build")
        return signature

    unhex = binascii.unhexlify
    # The run's regex proved each body hex digits (a plain line: letters and digits only) or of
    # simple_form's form (which always holds a '?', '(', '*' or '{').
    return [(name.decode("latin-1"), unhex(body)) if body.isalnum() else built(name, body, number)
            for number, (name, body) in enumerate(_WILD_LINES.findall(data, run.start, run.end),
                                                  run.first)]  # fmt: skip


def signatures_of(entries: list[Entry]) -> list[Signature]:
    """The entries that are ``Signature`` objects (the lines that are not plain literals)."""
    return [entry for entry in entries if isinstance(entry, Signature)]


class _GcPause:
    """Who holds the cyclic collector off now (``gc_paused`` may nest, or overlap on threads)."""

    lock = threading.Lock()
    holders = 0
    was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off while the body runs (a program's build); it
    comes back, if it was on, when the last holder leaves."""
    with _GcPause.lock:
        if _GcPause.holders == 0:
            _GcPause.was_enabled = gc.isenabled()
            gc.disable()
        _GcPause.holders += 1
    try:
        yield
    finally:
        with _GcPause.lock:
            _GcPause.holders -= 1
            if _GcPause.holders == 0 and _GcPause.was_enabled:
                gc.enable()
