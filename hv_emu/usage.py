"""Usage errors and exit statuses shared by the two command lines, ``hv-emu`` and ``guest-tool``.

Models: the user's side of a command line: a mistyped flag is one line on standard error and exit
status 2 (the usage status of argparse and of ``clamscan``), never a usage dump or a traceback;
a count in a message agrees with its noun ("1 sector", "2 sectors": ``plural``).
It lives beside the VMM core, not in ``hv_emu/cli/``, because both front ends use it and
``guest_tool`` may not import a front end (imports flow core <- ``guest_tool`` <- front ends).

Follows: argparse; exit statuses in the spirit of sysexits.h.

Leaves out: shell completion.

Guest controls: nothing; the user controls every argument.
"""

from __future__ import annotations

import argparse

#: A bad argument, image, key or file.
EXIT_USAGE = 2
#: An internal error of ours (sysexits.h EX_SOFTWARE).
EXIT_BUG = 70


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
