"""``hv-emu``: the command line, a thin face over ``machine.py``.

Models: the user's view of the hypervisor, one sub-command a module: ``run`` a guest image
(``run.py``), ``scan`` files with its signature engine (``scan.py``; exit status as clamscan's),
``demo`` the whole story (``demo/``). This module holds the sub-command table and the one place
where errors become one line and an exit status. A sub-command's module is imported only when it
runs, so ``scan`` starts without the emulator (``COMMANDS``).

Guest output (port 0xE9) goes to standard output as it happens; hv-emu's own messages go to standard
error. Nothing the guest or the user does produces a Python traceback: every error is one line.

Exit status: ``hv-emu run``'s are listed in ``run.py``, ``hv-emu scan``'s in ``scan.py``; for
either, standard output that is closed or cannot be written (a full disk) is one line and 2, and a
reader of it that went away (``hv-emu scan ... | head -1``) ends the command quietly with 141
(``hv_emu/usage.py``). A file named by an output option is never one hv-emu did not write
(``outputs.py``).

``entry`` is the process's entry point: after a scan it ends the process once its output is
flushed, without the interpreter's teardown.

Follows: argparse conventions; exit codes in the spirit of sysexits.h (70 = EX_SOFTWARE).

Leaves out: an interactive monitor.

Guest controls: what it prints; never the shape of hv-emu's own messages.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hv_emu import __version__
from hv_emu.errors import HvEmuError
from hv_emu.usage import (
    EXIT_BUG,
    EXIT_USAGE,
    OneLineParser,
    OutputError,
    output_failed,
    standard_output_error,
    standard_output_open,
)

#: The sub-commands, in the order ``--help`` lists them. Each one's module is imported only when
#: that sub-command runs (or for ``hv-emu --help``): ``run`` pulls in the CPU emulator, the
#: disassembler and the update code, which ``scan`` never uses (a scan of one small file must not
#: pay for them: tests/cli/test_scan_fast.py checks ``sys.modules`` after one).
COMMANDS = ("run", "scan", "demo")


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: its first word that is not an option (the top level has
    only ``--help`` and ``--version``), or None."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


def terminal_columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size().columns`` gives it (``$COLUMNS`` when
    it is a positive number, else standard output's terminal, else 80), without importing
    ``shutil``, which argparse's help formatter imports for it (with ``bz2``, ``lzma`` and
    ``fnmatch``: a few milliseconds of every ``hv-emu scan``, docs/PERFORMANCE.md)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        size = os.get_terminal_size(sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80
    return size.columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, its default width (the terminal's less 2) read by
    ``terminal_columns``."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        width = terminal_columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(OneLineParser):
    """``OneLineParser`` with ``_Formatter``: every parser ``hv-emu`` builds (argparse builds a
    formatter for each option it adds, so the width is read at start-up, not only for --help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; for a known ``command``, only that sub-command's options are built (the
    others are placeholders that no argument list naming ``command`` can reach)."""
    parser = _Parser(
        prog="hv-emu",
        description="An emulated BitVisor-style hypervisor that guards its guest from outside.",
    )
    parser.add_argument("--version", action="version", version=f"hv-emu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    wanted = COMMANDS if command not in COMMANDS else (command,)
    for name in COMMANDS:
        if name not in wanted:
            sub.add_parser(name)  # a placeholder: keeps the table's order and choices
        elif name == "run":
            from hv_emu.cli.run_options import add_parser as add_run_parser

            add_run_parser(sub)
        elif name == "scan":
            from hv_emu.cli.scan import add_parser as add_scan_parser

            add_scan_parser(sub)
        else:
            demo = sub.add_parser("demo", help="the end-to-end demo on embedded defaults")
            demo.add_argument("--workdir", type=Path, metavar="DIR",
                              help="keep the demo's files in DIR: a new directory (its parent "
                                   "must exist) or one without the demo's files")  # fmt: skip
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from hv_emu.cli.demo.story import run_demo  # the demo pulls in guest_tool; keep `run` lean

    return run_demo(args.workdir)


def main(argv: Sequence[str] | None = None) -> int:
    # `hv-emu run PROG [options] -- ARGS...`: everything after the first -- is the program's.
    # A trailing -- with nothing after it (`-- "$@"` with no arguments) means no arguments.
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    own, guest_args = argv[:end], argv[end + 1 :]
    args = build_parser(command_of(own)).parse_args(own)
    args.guest_args = guest_args
    if not standard_output_open("hv-emu"):
        return EXIT_USAGE
    status = _command(args)
    failed = standard_output_error()
    return status if failed is None else output_failed("hv-emu", failed)


def _command(args: argparse.Namespace) -> int:
    """Run the sub-command: every error it raises becomes one line and an exit status."""
    try:
        if args.command == "run":
            from hv_emu.cli.run import cmd_run

            return cmd_run(args)
        if args.command == "scan":
            from hv_emu.cli.scan import cmd_scan

            return cmd_scan(args, sys.stdout, sys.stderr)
        return cmd_demo(args)
    except OutputError as err:  # standard output: a full disk, or its reader went away
        return output_failed("hv-emu", err.error)
    except HvEmuError as err:  # the user's (or the image's) fault: one line
        print(f"hv-emu: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hv-emu: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours: still one line, and say so
        failed = standard_output_error() if isinstance(err, OSError) else None
        if failed is not None:  # standard output, not a bug: a full disk, a reader gone
            return output_failed("hv-emu", failed)
        print(f"hv-emu: internal error: {type(err).__name__}: {err} (please report)",
              file=sys.stderr)
        return EXIT_BUG


def entry() -> int:
    """The ``hv-emu`` command as a process (the console script, ``python -m hv_emu``): ``main``,
    and after a ``scan`` in one process, the end of the process without the interpreter's
    teardown, once standard output and error are flushed: freeing every module and object a scan
    imported costs about 6 ms of CPU, an eighth of a small file's scan (docs/PERFORMANCE.md). Any
    other command, a scan that started worker processes, or a flush that fails ends as usual
    (``main``'s status, returned)."""
    status = main()
    if command_of(sys.argv[1:]) != "scan" or "multiprocessing" in sys.modules:
        return status
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # let the interpreter's own exit say what it says
        return status
    os._exit(status)


if __name__ == "__main__":
    sys.exit(entry())
