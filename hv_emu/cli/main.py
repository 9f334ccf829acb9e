"""``hv-emu``: the command line, a thin face over ``machine.py``.

Models: the user's view of the hypervisor, one sub-command a module: ``run`` a guest image
(``run.py``), ``scan`` files with its signature engine (``scan.py``; exit status as clamscan's),
``demo`` the whole story (``demo/``). This module holds the sub-command table and the one place
where errors become one line and an exit status.

Guest output (port 0xE9) goes to standard output as it happens; hv-emu's own messages go to standard
error. Nothing the guest or the user does produces a Python traceback: every error is one line.

Exit status: ``hv-emu run``'s are listed in ``run.py``, ``hv-emu scan``'s in ``scan.py``.

Follows: argparse conventions; exit codes in the spirit of sysexits.h (70 = EX_SOFTWARE).

Leaves out: an interactive monitor.

Guest controls: what it prints; never the shape of hv-emu's own messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hv_emu import __version__
from hv_emu.cli.run import add_parser as add_run_parser
from hv_emu.cli.run import cmd_run
from hv_emu.cli.scan import add_parser as add_scan_parser
from hv_emu.cli.scan import cmd_scan
from hv_emu.errors import HvEmuError
from hv_emu.usage import EXIT_BUG, EXIT_USAGE, OneLineParser


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hv-emu",
        description="An emulated BitVisor-style hypervisor that guards its guest from outside.",
    )
    parser.add_argument("--version", action="version", version=f"hv-emu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    add_run_parser(sub)
    add_scan_parser(sub)

    demo = sub.add_parser("demo", help="the end-to-end demo on embedded defaults")
    demo.add_argument("--workdir", type=Path, metavar="DIR",
                      help="keep the demo's files in DIR: a new directory (its parent must "
                           "exist) or one without the demo's files")
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from hv_emu.cli.demo.story import run_demo  # the demo pulls in guest_tool; keep `run` lean

    return run_demo(args.workdir)


def main(argv: Sequence[str] | None = None) -> int:
    # `hv-emu run PROG [options] -- ARGS...`: everything after the first -- is the program's.
    argv = list(sys.argv[1:] if argv is None else argv)
    guest_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = build_parser().parse_args(argv[: len(argv) - len(guest_args) - bool(guest_args)])
    args.guest_args = guest_args
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "scan":
            return cmd_scan(args, sys.stdout, sys.stderr)
        return cmd_demo(args)
    except HvEmuError as err:  # the user's (or the image's) fault: one line
        print(f"hv-emu: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hv-emu: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours: still one line, and say so
        print(f"hv-emu: internal error: {type(err).__name__}: {err} (please report)",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
