"""``hv-emu``: the command line, a thin face over ``machine.py``.

Models: the user's view of the hypervisor: ``run`` a guest image, ``demo`` the whole story.
Guest output (port 0xE9) goes to standard output as it happens; hv-emu's own messages go to standard
error. Nothing the guest or the user does produces a Python traceback: every error is one line.

Exit status of ``hv-emu run``:
    0  the guest halted
    1  the guest faulted (the line says mode, CS:RIP, the instruction and the registers)
    2  a bad argument, image, key or file
    3  the watchdog timed out (``--timeout``)
    4  a handler stopped the run
    70 an internal error of hv-emu (a bug: please report it)

Follows: argparse conventions; exit codes in the spirit of sysexits.h (70 = EX_SOFTWARE).

Leaves out: an interactive monitor.

Guest controls: what it prints; never the shape of hv-emu's own messages.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hv_emu.abi import DEFAULT_MAX_UPDATE
from hv_emu.boot import MODES
from hv_emu.errors import HostError, HvEmuError
from hv_emu.events import EventLog
from hv_emu.exits import Fault, Halt, StopRequest, Timeout
from hv_emu.layout import DEFAULT_MEM_MIB
from hv_emu.loader import PAGING_CHOICES
from hv_emu.machine import VERSION, Machine, MachineConfig

EXIT_HALT, EXIT_FAULT, EXIT_USAGE, EXIT_TIMEOUT, EXIT_STOPPED, EXIT_BUG = 0, 1, 2, 3, 4, 70


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int(text: str) -> int:
    """Integers in any base Python accepts: 0x100000, 1048576, 0o7."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hv-emu",
        description="An emulated BitVisor-style hypervisor that guards its guest from outside.",
    )
    parser.add_argument("--version", action="version", version=f"hv-emu {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a guest image", description="Run a flat guest image.")
    run.add_argument("image", type=Path, help="flat binary image")
    run.add_argument("--mode", type=int, choices=MODES, default=64, help="CPU mode at entry")
    run.add_argument("--load", type=_int, help="load address (default 0x100000; 0x7c00 in mode 16)")
    run.add_argument("--entry", type=_int, help="entry point (default: the load address)")
    run.add_argument("--mem", type=int, default=DEFAULT_MEM_MIB, metavar="MiB", help="guest RAM")
    run.add_argument("--paging", choices=tuple(PAGING_CHOICES), default="none",
                     help="paging for --mode 32 (64-bit guests always have 4-level paging)")
    run.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                     help="watchdog: stop a guest that runs longer (default 30)")
    run.add_argument("--trust", type=Path, action="append", default=[], metavar="PUB.pem",
                     help="a public key trusted to sign updates (repeatable)")
    run.add_argument("--db", type=Path, help="initial signature database (.db or .ndb)")
    run.add_argument("--state", type=Path, metavar="DIR",
                     help="persist the installed database and its version counter here")
    run.add_argument("--events", type=Path, metavar="FILE", help="write events as JSON lines")
    run.add_argument("--max-update", type=_int, default=DEFAULT_MAX_UPDATE, metavar="BYTES",
                     help=f"largest update accepted (default {DEFAULT_MAX_UPDATE})")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary on standard error")

    demo = sub.add_parser("demo", help="the end-to-end demo on embedded defaults")
    demo.add_argument("--workdir", type=Path, help="keep the demo's files here")
    return parser


def _open_events(path: Path | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise HostError(f"cannot write events to {path}: {err.strerror}") from None


def cmd_run(args: argparse.Namespace) -> int:
    try:
        image = args.image.read_bytes()
    except OSError as err:
        raise HostError(f"cannot read image {args.image}: {err.strerror}") from None
    config = MachineConfig(
        mem_mib=args.mem, timeout=args.timeout, trust=args.trust, db=args.db,
        state_dir=args.state, max_update=args.max_update,
    )  # fmt: skip
    events = EventLog(_open_events(args.events))
    try:
        machine = Machine(config, console=sys.stdout.buffer, events=events)
        machine.load(image, mode=args.mode, load=args.load, entry=args.entry, paging=args.paging)
        started = time.perf_counter()
        result = machine.run()
        elapsed = time.perf_counter() - started
    finally:
        events.close()
    final = result.exit
    db = machine.database.current
    summary = (
        f"{machine.hypercalls.calls} hypercalls, {elapsed:.3f} s; "
        f"database v{db.version} ({db.count} signatures)"
    )
    match final:
        case Halt():
            if not args.quiet:
                print(f"hv-emu: guest halted: {summary}", file=sys.stderr)
            return EXIT_HALT
        case Fault():
            print(f"hv-emu: {final.describe()}", file=sys.stderr)
            return EXIT_FAULT
        case Timeout(seconds=seconds, rip=rip):
            print(f"hv-emu: timeout: the guest ran {seconds:g} s without halting "
                  f"(RIP={rip:#x}); raise --timeout if it needs longer", file=sys.stderr)
            return EXIT_TIMEOUT
        case StopRequest(reason=reason):
            print(f"hv-emu: stopped: {reason}: {summary}", file=sys.stderr)
            return EXIT_STOPPED
    raise HostError(f"unexpected end of run: {final!r}")


def cmd_demo(args: argparse.Namespace) -> int:
    from hv_emu.demo import run_demo  # the demo pulls in guest_tool; keep `run` lean

    return run_demo(args.workdir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return cmd_run(args)
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
