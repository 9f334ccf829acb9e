"""Usage errors and exit statuses shared by the two command lines, ``hv-emu`` and ``guest-tool``.

Models: the user's side of a command line: a mistyped flag is one line on standard error and exit
status 2 (the usage status of argparse and of ``clamscan``), never a usage dump or a traceback;
a count in a message agrees with its noun ("1 sector", "2 sectors": ``plural``); an option that
names one file and is given twice is refused (``Once``), never silently the last one; standard
output that cannot be written (closed, a full disk, ``/dev/full``) is one line and exit status 2,
and a reader of standard output that went away (``| head -1``) ends the command quietly with
status 141, as a shell shows for a program ``SIGPIPE`` killed (``output_failed``).
It lives beside the VMM core, not in ``hv_emu/cli/``, because both front ends use it and
``guest_tool`` may not import a front end (imports flow core <- ``guest_tool`` <- front ends).

Follows: argparse; exit statuses in the spirit of sysexits.h.

Leaves out: shell completion.

Guest controls: nothing; the user controls every argument.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from hv_emu.errors import HostError

#: A bad argument, image, key or file.
EXIT_USAGE = 2
#: An internal error of ours (sysexits.h EX_SOFTWARE).
EXIT_BUG = 70
#: The reader of standard output went away: 128 + SIGPIPE, what ``yes | head -1`` leaves in
#: ``${PIPESTATUS[0]}``; nothing is printed, as ``yes`` prints nothing.
EXIT_BROKEN_PIPE = 141


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless ``count`` is 1: ``plural(1,
    "sector")`` is "1 sector", ``plural(0, "entry", "entries")`` "0 entries"."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


def integer(text: str) -> int:
    """Integers in any base Python accepts: 0x100000, 1048576, 0o7."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


class OutputError(HostError):
    """Writing a command's results to standard output failed with ``error`` (a full disk, a
    reader that went away): ``output_failed`` says what the command then does."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write standard output: {error.strerror or error}")
        self.error = error


class Once(argparse.Action):
    """An option that names one thing (``--db FILE``): given twice, a usage error naming both,
    not argparse's silent last-wins (which would drop a file the user named)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option: str | None = None) -> None:
        earlier = getattr(namespace, self.dest, None)
        if earlier is not None and earlier != self.default:
            parser.error(f"{option} given twice ({earlier}, {values}): it takes one")
        setattr(namespace, self.dest, values)


def standard_output_open(prog: str) -> bool:
    """Whether standard output is open; if it is closed (``cmd >&-``), one line says so. A closed
    standard error becomes ``/dev/null`` (so ``print(file=sys.stderr)`` cannot fall back on
    standard output)."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process
    if sys.stdout is None:
        print(f"{prog}: error: standard output is closed: redirect it (> /dev/null to discard "
              "what it says)", file=sys.stderr)  # fmt: skip
        return False
    return True


def drop_standard_output() -> None:
    """The reader of standard output went away or it cannot be written: send what is still
    buffered to /dev/null, so flushing it at exit is not a second error (the recipe of the
    Python docs, "Note on SIGPIPE")."""
    try:
        target = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, target)
    os.close(devnull)


def standard_output_error() -> OSError | None:
    """Flush standard output: the error if it cannot be written (a failed write stays buffered,
    so a write that failed earlier fails here again), else None."""
    if sys.stdout is None:
        return None
    try:
        sys.stdout.flush()
    except OSError as err:
        return err
    return None


def output_failed(prog: str, error: OSError) -> int:
    """Standard output failed with ``error``: quietly ``EXIT_BROKEN_PIPE`` for a reader that went
    away, else one line and ``EXIT_USAGE``; what is still buffered is dropped either way."""
    drop_standard_output()
    if isinstance(error, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    print(f"{prog}: error: cannot write standard output: {error.strerror or error}",
          file=sys.stderr)  # fmt: skip
    return EXIT_USAGE
