"""``hv-emu run``'s options: the argument parser of the sub-command, and its value checks.

Models: every option of ``hv-emu run`` (README.md, "``hv-emu run``"), with its default and its
help text, and the checks that turn an option's text into its value or one ``argparse`` error
(a finite positive number of seconds, an ``--events-max`` of 0 or at least ``MIN_MAX_BYTES``, a
list of detection actions, a TCP port); ``OUTPUTS`` names the options that are files the run
writes. What the options do is ``run.py``'s (``cmd_run``); the ``--net`` options are
``netopts.py``'s.

Follows: README.md (``hv-emu run``; a test checks that it names every option), argparse.

Leaves out: checks that need more than one option or a file (``run.py``: ``--boot`` against
IMAGE, ``--disk-size`` without ``--disk``, a directory for ``--db``).

Guest controls: nothing: the options are the user's.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from hv_emu.cli.netopts import add_arguments as add_network_arguments
from hv_emu.errors import ConfigError
from hv_emu.events import DEFAULT_MAX_BYTES, MIN_MAX_BYTES
from hv_emu.hypercalls.abi import CPU_VENDORS, DEFAULT_MAX_UPDATE
from hv_emu.inspection import ACTIONS, DEFAULT_ACTIONS, parse_actions
from hv_emu.layout import DEFAULT_MEM_MIB
from hv_emu.loaders.flat import PAGING_CHOICES
from hv_emu.machine import DISK_CONTROLLERS
from hv_emu.memory.boot import MODES
from hv_emu.usage import Once, integer

#: Every file ``hv-emu run`` writes, as its option (hv_emu/cli/outputs.py: none is ever a file it
#: reads, each is written whole or not at all, but ``--events``, which streams).
OUTPUTS = ("--report", "--events", "--screen", "--trace-json", "--capture")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):  # inf would never fire the watchdog; nan fires it at once
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _events_max(text: str) -> int:
    value = integer(text)
    if value != 0 and value < MIN_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or at least {MIN_MAX_BYTES}, "
                                         f"not {text!r}")  # fmt: skip
    return value


def _actions(text: str) -> tuple[str, ...]:
    try:
        return parse_actions(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--on-detect: ")) from None


def _port(text: str) -> int:
    port = integer(text)
    if not 0 <= port <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return port


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``hv-emu run`` and its options to the sub-command table."""
    run = sub.add_parser("run", help="run a guest image",
                         description="Run a flat guest image or a Linux ELF program "
                                     "(arguments for the program after --).")  # fmt: skip
    run.add_argument("image", type=Path, nargs="?",
                     help="flat binary image or ELF executable (or --boot DISK.img)")
    run.add_argument("--boot", type=Path, action=Once, metavar="DISK.img",
                     help="instead of IMAGE: put DISK.img on the primary ATA channel and boot its "
                          "sector 0 at 0000:7C00 in real mode with DL=80h, as a PC's BIOS does "
                          "(hv-emu's own firmware: docs/DEVICES.md)")
    run.add_argument("--file", action="append", default=[], metavar="GUESTPATH=HOSTPATH[:rw]",
                     help="ELF programs: let the program open HOSTPATH as GUESTPATH (read-only "
                          "unless :rw); no other file exists for it (repeatable)")
    run.add_argument("--sysroot", type=Path, action=Once, metavar="DIR",
                     help="ELF programs: the program sees DIR read-only as its root; a "
                          "dynamically linked program's loader and libraries come from it "
                          "(--sysroot / for the host's own; default: nothing of the host)")
    run.add_argument("--arg", action="append", default=[], metavar="ARG",
                     help="ELF programs: one more argv entry (repeatable; or put them after --)")
    run.add_argument("--mode", type=int, choices=MODES, default=64, help="CPU mode at entry")
    run.add_argument("--load", type=integer,
                     help="load address (default 0x100000; 0x7c00 in mode 16)")
    run.add_argument("--entry", type=integer, help="entry point (default: the load address)")
    run.add_argument("--mem", type=int, default=DEFAULT_MEM_MIB, metavar="MiB", help="guest RAM")
    run.add_argument("--cpu", choices=CPU_VENDORS, default=CPU_VENDORS[0],
                     help="CPU vendor the guest sees: intel (CPUID GenuineIntel, hypercalls by "
                          "VMCALL) or amd (AuthenticAMD, by VMMCALL); the other vendor's "
                          "instruction raises #UD (default intel)")
    run.add_argument("--paging", choices=tuple(PAGING_CHOICES), default="none",
                     help="paging for --mode 32 (64-bit guests always have 4-level paging)")
    run.add_argument("--timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                     help="watchdog: stop a guest that runs longer (default 30)")
    run.add_argument("--trust", type=Path, action="append", default=[], metavar="PUB.pem",
                     help="a public key trusted to sign updates (repeatable)")
    run.add_argument("--db", type=Path, action=Once,
                     help="initial signature database, one file (.db, .ndb or .ldb; a hash "
                          "database .hdb/.hsb loads, but names whole files: not applied to disk "
                          "writes); given once: hv-emu scan takes several")
    run.add_argument("--state", type=Path, action=Once, metavar="DIR",
                     help="persist the installed database and its version counter here")
    run.add_argument("--events", type=Path, action=Once, metavar="FILE",
                     help="write events as JSON lines")
    run.add_argument("--events-max", type=_events_max, default=DEFAULT_MAX_BYTES, metavar="BYTES",
                     help=f"largest --events file (default {DEFAULT_MAX_BYTES}, 64 MiB; 0: no "
                          f"limit); past it, hypercall events are dropped first and an "
                          f"events_truncated record ends the file")  # fmt: skip
    run.add_argument("--max-update", type=integer, default=DEFAULT_MAX_UPDATE, metavar="BYTES",
                     help=f"largest update accepted (default {DEFAULT_MAX_UPDATE})")
    run.add_argument("--sync-updates", action="store_true",
                     help="update_signatures answers only once the new database is active (the "
                          "guest's pause then includes the compile; for tests and teaching)")
    run.add_argument("--disk", type=Path, action=Once, metavar="IMAGE",
                     help="raw disk image on the primary ATA channel (every write is scanned)")
    run.add_argument("--disk-size", type=int, metavar="MiB",
                     help="create the --disk image with this size first (it must not exist)")
    run.add_argument("--disk-controller", choices=DISK_CONTROLLERS, default=DISK_CONTROLLERS[0],
                     help="what the --disk is behind: ide (PIIX3 IDE, ports 0x1F0) or ahci "
                          "(ICH9 AHCI at PCI 00:1f.2, as QEMU q35; default ide)")
    run.add_argument("--on-detect", type=_actions, default=DEFAULT_ACTIONS, metavar="ACTIONS",
                     help=f"what a detection does: a comma list of {','.join(ACTIONS)} "
                          f"(default {','.join(DEFAULT_ACTIONS)})")
    run.add_argument("--screen", type=Path, action=Once, metavar="FILE",
                     help="write the final 80x25 text screen here, as 25 lines")
    run.add_argument("--report", type=Path, action=Once, metavar="FILE",
                     help="write a self-contained HTML page of the run: exits by reason, a "
                          "timeline, detections, hypercalls, the final screen (replaces FILE once "
                          "the run ended)")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary on standard error")
    run.add_argument("--realtime", action="store_true",
                     help="guest time (the PIT) follows the host's clock instead of the guest's "
                          "own work (virtual and reproducible by default)")  # fmt: skip
    run.add_argument("--trace", action="store_true",
                     help="print every VM exit on standard error, and exits by reason at the end")
    run.add_argument("--trace-json", type=Path, action=Once, metavar="FILE",
                     help="write every VM exit as a JSON line (see hv_emu/debug/trace.py)")
    run.add_argument("--gdb", type=_port, metavar="PORT",
                     help="wait for gdb on 127.0.0.1:PORT (0: any free port) and let it drive")
    add_network_arguments(run)
    run.set_defaults(defaults_of=run.get_default)  # the report's header names what was changed
