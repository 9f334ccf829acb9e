"""``hv-emu run``: load a guest image into a machine, run it, report how it ended.

Models: the user's view of one VM run: the options that configure ``hv_emu.machine`` (RAM, CPU
vendor, keys, database, state, disk, network, trace, report, gdb), the image (flat or a Linux ELF
program, chosen by its first bytes), and the exit status that tells how it ended.

Exit status:
    0  the guest halted
    1  the guest faulted (the line says mode, CS:RIP, the instruction and the registers)
    2  a bad argument, image, key or file
    3  the watchdog timed out (``--timeout``)
    4  a handler stopped the run
    70 an internal error of hv-emu (a bug: please report it)
A Linux ELF program that calls exit/exit_group makes ``hv-emu run`` exit with the program's own
status instead, as ``qemu-x86_64`` does (docs/ELF.md); its other ends keep the codes above.

Follows: README.md (``hv-emu run``), docs/ELF.md, docs/EVENTS.md.

Leaves out: snapshots, an interactive monitor.

Guest controls: what it prints to the debug console and the screen, and how the run ends; never
the shape of hv-emu's own messages (one line each on standard error).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from hv_emu.cli.netopts import add_arguments as add_network_arguments
from hv_emu.cli.netopts import apply as apply_network_options
from hv_emu.debug.gdbstub import serve_gdb
from hv_emu.debug.recorder import RunRecorder
from hv_emu.debug.report_html import RunInfo, render
from hv_emu.debug.trace import ExitTracer
from hv_emu.errors import ConfigError, HostError
from hv_emu.events import DEFAULT_MAX_BYTES, MIN_MAX_BYTES, EventLog
from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout
from hv_emu.hypercalls.abi import CPU_VENDORS, DEFAULT_MAX_UPDATE
from hv_emu.inspection import ACTIONS, DEFAULT_ACTIONS, parse_actions
from hv_emu.layout import DEFAULT_MEM_MIB
from hv_emu.linux.files import FileGrant, FileTable
from hv_emu.linux.signals import signal_name
from hv_emu.linux.syscalls import LinuxProcess
from hv_emu.loaders.elf_file import is_elf
from hv_emu.loaders.flat import PAGING_CHOICES
from hv_emu.machine import DISK_CONTROLLERS, Machine, MachineConfig, RunResult
from hv_emu.memory.boot import MODES
from hv_emu.named_file import read_user_file
from hv_emu.usage import integer

EXIT_HALT, EXIT_FAULT, EXIT_TIMEOUT, EXIT_STOPPED = 0, 1, 3, 4


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
    run.add_argument("--boot", type=Path, metavar="DISK.img",
                     help="instead of IMAGE: put DISK.img on the primary ATA channel and boot its "
                          "sector 0 at 0000:7C00 in real mode with DL=80h, as a PC's BIOS does "
                          "(hv-emu's own firmware: docs/DEVICES.md)")
    run.add_argument("--file", action="append", default=[], metavar="GUESTPATH=HOSTPATH[:rw]",
                     help="ELF programs: let the program open HOSTPATH as GUESTPATH (read-only "
                          "unless :rw); no other file exists for it (repeatable)")
    run.add_argument("--sysroot", type=Path, metavar="DIR",
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
    run.add_argument("--db", type=Path,
                     help="initial signature database, one file (.db, .ndb or .ldb; a hash "
                          "database .hdb/.hsb loads, but names whole files: not applied to disk "
                          "writes)")
    run.add_argument("--state", type=Path, metavar="DIR",
                     help="persist the installed database and its version counter here")
    run.add_argument("--events", type=Path, metavar="FILE", help="write events as JSON lines")
    run.add_argument("--events-max", type=_events_max, default=DEFAULT_MAX_BYTES, metavar="BYTES",
                     help=f"largest --events file (default {DEFAULT_MAX_BYTES}, 64 MiB; 0: no "
                          f"limit); past it, hypercall events are dropped first and an "
                          f"events_truncated record ends the file")  # fmt: skip
    run.add_argument("--max-update", type=integer, default=DEFAULT_MAX_UPDATE, metavar="BYTES",
                     help=f"largest update accepted (default {DEFAULT_MAX_UPDATE})")
    run.add_argument("--sync-updates", action="store_true",
                     help="update_signatures answers only once the new database is active (the "
                          "guest's pause then includes the compile; for tests and teaching)")
    run.add_argument("--disk", type=Path, metavar="IMAGE",
                     help="raw disk image on the primary ATA channel (every write is scanned)")
    run.add_argument("--disk-size", type=int, metavar="MiB",
                     help="create the --disk image with this size first (it must not exist)")
    run.add_argument("--disk-controller", choices=DISK_CONTROLLERS, default=DISK_CONTROLLERS[0],
                     help="what the --disk is behind: ide (PIIX3 IDE, ports 0x1F0) or ahci "
                          "(ICH9 AHCI at PCI 00:1f.2, as QEMU q35; default ide)")
    run.add_argument("--on-detect", type=_actions, default=DEFAULT_ACTIONS, metavar="ACTIONS",
                     help=f"what a detection does: a comma list of {','.join(ACTIONS)} "
                          f"(default {','.join(DEFAULT_ACTIONS)})")
    run.add_argument("--screen", type=Path, metavar="FILE",
                     help="write the final 80x25 text screen here, as 25 lines")
    run.add_argument("--report", type=Path, metavar="FILE",
                     help="write a self-contained HTML page of the run: exits by reason, a "
                          "timeline, detections, hypercalls, the final screen (replaces FILE)")
    run.add_argument("-q", "--quiet", action="store_true", help="no summary on standard error")
    run.add_argument("--realtime", action="store_true",
                     help="guest time (the PIT) follows the host's clock instead of the guest's "
                          "own work (virtual and reproducible by default)")  # fmt: skip
    run.add_argument("--trace", action="store_true",
                     help="print every VM exit on standard error, and exits by reason at the end")
    run.add_argument("--trace-json", type=Path, metavar="FILE",
                     help="write every VM exit as a JSON line (see hv_emu/debug/trace.py)")
    run.add_argument("--gdb", type=_port, metavar="PORT",
                     help="wait for gdb on 127.0.0.1:PORT (0: any free port) and let it drive")
    add_network_arguments(run)
    run.set_defaults(defaults_of=run.get_default)  # the report's header names what was changed


def _run_watched(machine: Machine, args: argparse.Namespace) -> RunResult:
    """Run the guest, under gdb if asked, with the exit tracer attached if asked."""
    records = None
    if args.trace_json is not None:
        try:
            records = args.trace_json.open("w", encoding="utf-8")
        except OSError as err:
            why = err.strerror
            raise HostError(f"cannot write the trace to {args.trace_json}: {why}") from None
    tracer = None
    if args.trace or records is not None:
        lines = sys.stderr if args.trace else None
        tracer = ExitTracer(machine.vcpu, machine.bus, machine.hypercalls, lines=lines,
                            records=records)  # fmt: skip
        machine.exit_observers.append(tracer)
    try:
        if args.gdb is None:
            return machine.run()
        with machine.serving_network():
            return serve_gdb(machine, args.gdb, announce=_announce_gdb)
    finally:
        if records is not None:
            records.close()
        if tracer is not None and args.trace:
            print(tracer.summary(), file=sys.stderr)


def _announce_gdb(port: int) -> None:
    print(f"hv-emu: waiting for gdb on 127.0.0.1:{port} (in gdb: target remote :{port})",
          file=sys.stderr, flush=True)  # fmt: skip


def _open_events(path: Path | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise HostError(f"cannot write events to {path}: {err.strerror}") from None


def _write_screen(path: Path, rows: list[str]) -> None:
    """The guest's text screen as the user would have seen it: 25 lines, trailing blanks cut."""
    try:
        path.write_text("".join(row.rstrip() + "\n" for row in rows), encoding="utf-8")
    except OSError as err:
        raise HostError(f"cannot write the screen to {path}: {err.strerror}") from None


def _open_report(path: Path | None) -> TextIO | None:
    """Open ``--report`` before the guest runs (replacing the file, as ``--events`` does), so a
    path that cannot be written is one line and exit 2 before the run, not after it."""
    if path is None:
        return None
    if path.is_dir():
        raise ConfigError(f"--report {path} is a directory: give a file to write")
    try:
        return path.open("w", encoding="utf-8")
    except OSError as err:
        raise HostError(f"cannot write the report to {path}: {err.strerror}") from None


def _record(machine: Machine, events: EventLog) -> RunRecorder:
    """A recorder fed by every exit, event and disk write of the run (``--report``)."""
    recorder = RunRecorder(hypercall_name=machine.hypercalls.name, clock_unit="milliseconds",
                           clock=lambda: machine.clock.now() / 1e6)  # fmt: skip
    machine.exit_observers.append(recorder.on_exit)
    machine.vcpu.injection_watchers.append(recorder.on_injection)
    events.listeners.append(recorder.on_event)
    machine.watch_disk_writes(recorder.on_disk_write)
    return recorder


def _write_report(report: TextIO, recorder: RunRecorder, machine: Machine, final: Exit,
                  args: argparse.Namespace, summary: str) -> None:  # fmt: skip
    """Render the page: the final screen and console, and how the run ended, in the header."""
    recorder.capture_screen(machine.vga)
    recorder.capture_console(bytes(machine.debugcon.captured))
    linux = machine.linux
    match final:
        case _ if linux is not None and linux.exit_status is not None:
            status, ending = linux.exit_status, _program_end(linux)
            summary = _program_summary(linux, summary)
        case Halt(rip=rip):
            status, ending = EXIT_HALT, f"guest halted (HLT, RIP={rip:#x} after it)"
        case Fault():
            status, ending = EXIT_FAULT, final.describe()
        case Timeout(seconds=seconds, rip=rip):
            status, ending = EXIT_TIMEOUT, f"timeout: {seconds:g} s without halting (RIP={rip:#x})"
        case StopRequest(reason=reason):
            status, ending = EXIT_STOPPED, f"stopped: {reason}"
        case _:
            status, ending = EXIT_STOPPED, repr(final)
    # The options given: those whose value is not the default (``defaults_of``: add_parser).
    default = getattr(args, "defaults_of", lambda _name: None)
    options = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={_option_text(v)}")
               for k, v in sorted(vars(args).items())
               if k not in ("command", "image", "guest_args", "defaults_of")
               and v not in (None, False, []) and v != default(k)]  # fmt: skip
    guest_args = ["--", *args.guest_args] if args.guest_args else []  # as typed (shlex.join)
    program = str(args.image if args.image is not None else args.boot)  # --boot: the disk
    info = RunInfo(program, options + guest_args, ending, status, summary,
                   linux=linux is not None)  # fmt: skip
    try:
        report.write(render(recorder, info))
        report.close()
    except OSError as err:
        raise HostError(f"cannot write the report to {report.name}: {err.strerror}") from None


def _option_text(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _drop_standard_output() -> None:
    """The reader of standard output went away (``hv-emu run | head``): send what is still
    buffered to /dev/null, so flushing it at exit is not a second broken pipe (the recipe of the
    Python docs, "Note on SIGPIPE")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _load(machine: Machine, image: bytes, args: argparse.Namespace) -> None:
    """An ELF executable runs as a Linux process (docs/ELF.md); anything else is flat."""
    if not is_elf(image):
        if args.file or args.arg or args.guest_args or args.sysroot is not None:
            raise ConfigError("--file, --sysroot, --arg and program arguments apply to ELF "
                              "programs only")  # fmt: skip
        machine.load(image, mode=args.mode, load=args.load, entry=args.entry, paging=args.paging)
        return
    if args.load is not None or args.entry is not None or args.paging != "none":
        raise ConfigError("--load, --entry and --paging apply to flat images: an ELF program's "
                          "headers say where it goes and its class picks the mode")  # fmt: skip
    if args.sysroot is not None and not args.sysroot.is_dir():
        raise ConfigError(f"--sysroot {args.sysroot}: not a directory")
    files = FileTable([FileGrant.parse(spec) for spec in args.file], stdin=sys.stdin.buffer,
                      stdout=sys.stdout.buffer, stderr=sys.stderr.buffer,
                      sysroot=args.sysroot)  # fmt: skip
    machine.load_elf(image, argv=[str(args.image), *args.arg, *args.guest_args], files=files)


def _check_boot(args: argparse.Namespace) -> bytes | None:
    """The flat or ELF image to load, or None for ``--boot`` (which takes IMAGE's place)."""
    if args.boot is None:
        if args.image is None:
            raise ConfigError("hv-emu run needs an IMAGE to run, or --boot DISK.img")
        return read_user_file(args.image, "image")
    if args.image is not None:
        raise ConfigError("--boot DISK.img takes the place of IMAGE: give one or the other")
    if args.disk is not None or args.disk_size is not None:
        raise ConfigError("--boot DISK.img is the disk on the primary channel: --disk and "
                          "--disk-size cannot go with it")  # fmt: skip
    if (args.load is not None or args.entry is not None or args.paging != "none" or args.file
            or args.arg or args.guest_args):  # fmt: skip
        raise ConfigError("--load, --entry, --paging, --file and program arguments apply to an "
                          "IMAGE, not to --boot (a boot sector runs at 0000:7C00 in real mode)")
    if not args.boot.is_file():
        what = "is not a regular file" if args.boot.exists() else "no such disk image file"
        raise ConfigError(f"--boot {args.boot}: {what}")
    return None


def _program_exited(linux: LinuxProcess, summary: str, quiet: bool, final: Exit) -> int:
    """A Linux program called exit, or a signal killed it: hv-emu run exits with the program's
    own status (128 + the signal's number, as a shell shows it); a fault it had no handler for
    is reported as any guest fault is."""
    if isinstance(final, Fault):
        print(f"hv-emu: {final.describe()}", file=sys.stderr)
    if not quiet:
        print(f"hv-emu: {_program_end(linux)}: {_program_summary(linux, summary)}",
              file=sys.stderr)  # fmt: skip
    return linux.exit_status or 0


def _program_end(linux: LinuxProcess) -> str:
    """How a Linux program ended (the CLI's last line and the report's header say the same)."""
    how = "exited"
    if linux.killed_by is not None:
        how = f"killed by {signal_name(linux.killed_by)}, exited"
    return f"program {how} with status {linux.exit_status}"


def _program_summary(linux: LinuxProcess, summary: str) -> str:
    """The run's summary with the program's system calls, and those it was refused (-ENOSYS)."""
    unsupported = ", ".join(name or str(nr) for nr, name in linux.unsupported.items())
    note = f"; unsupported system calls (-ENOSYS): {unsupported}" if unsupported else ""
    return f"{linux.calls} system calls, {summary}{note}"


def _database_summary(machine: Machine) -> str:
    """The database in force at the end, and the newest accepted one if that never came into force
    (its compile was refused: ``database_failed``). The run waited for pending compiles, so
    nothing is still compiling here."""
    db, status = machine.database.current, machine.updates.status()
    text = f"database v{db.version} ({db.count} signatures)"
    if status.version != db.version:
        text += f", v{status.version} accepted but not in force ({status.state})"
    return text


def cmd_run(args: argparse.Namespace) -> int:
    if args.db is not None and args.db.is_dir():
        raise ConfigError(f"--db {args.db} is a directory: hv-emu run takes one database file "
                          "(a directory of databases is accepted by hv-emu scan only)")
    image = _check_boot(args)
    if args.screen is not None and args.screen.is_dir():  # say so before the run, not after it
        raise ConfigError(f"--screen {args.screen} is a directory: give a file to write")
    report = _open_report(args.report)
    try:
        return _run(args, image, report)
    finally:
        if report is not None:
            report.close()


def _run(args: argparse.Namespace, image: bytes | None, report: TextIO | None) -> int:
    """``cmd_run`` once the files it writes are open."""
    config = MachineConfig(
        mem_mib=args.mem, timeout=args.timeout, trust=args.trust, db=args.db,
        state_dir=args.state, max_update=args.max_update,
        disk=args.disk if args.boot is None else args.boot,
        disk_size_mib=args.disk_size, on_detect=args.on_detect, sync_updates=args.sync_updates,
        cpu=args.cpu, realtime=args.realtime, sysroot=args.sysroot,
        disk_controller=args.disk_controller,
    )  # fmt: skip
    config = apply_network_options(args, config)
    if args.disk_size is not None and args.disk is None:
        raise ConfigError("--disk-size needs --disk (the image to create)")
    if args.disk_controller != DISK_CONTROLLERS[0] and args.disk is None:
        raise ConfigError("--disk-controller needs --disk (the image behind it)")
    # Written to --events as they happen, never kept: a guest looping on VMCALL makes ~40 000
    # events a second, which a kept list would hold in RAM until the run ends; and at most
    # --events-max bytes of them reach the file (hv_emu/events.py says which are dropped first).
    events = EventLog(_open_events(args.events), keep=False, max_bytes=args.events_max or None)
    try:
        machine = Machine(config, console=sys.stdout.buffer, events=events)
        recorder = _record(machine, events) if report is not None else None
        # Hash signatures name whole files; the disk path sees write streams (said once, here:
        # an update cannot carry a hash database, its content type is .db or .ndb only).
        hashes = machine.database.current.hashes
        logical = machine.database.current.program.logical  # .ldb lines accepted, not applied
        for warning in (*machine.notices, *hashes.whole_file(), *hashes.not_applied(),
                        *(() if logical is None else logical.not_applied)):  # fmt: skip
            print(f"hv-emu: warning: {warning}", file=sys.stderr)
        try:
            if image is None:
                machine.boot_disk()
            else:
                _load(machine, image, args)
            started = time.perf_counter()
            result = _run_watched(machine, args)
            elapsed = time.perf_counter() - started
        finally:
            machine.close()
    finally:
        events.close()
    if machine.debugcon.output_error is not None:
        _drop_standard_output()
    if args.screen is not None:
        _write_screen(args.screen, machine.vga.read_screen())
    final = result.exit
    summary = f"{machine.hypercalls.calls} hypercalls, {elapsed:.3f} s; "
    summary += _database_summary(machine)
    if machine.disk is not None:
        summary += f"; {machine.detections} detections in disk writes"
    if machine.network is not None:
        summary += f"; network {machine.network.summary()}"
    received = machine.receiver.stats() if machine.receiver is not None else None
    if received is not None and received.datagrams:  # what arrived, the top drop reasons
        summary += f"; {received.summary()}"
    if report is not None and recorder is not None:
        _write_report(report, recorder, machine, final, args, summary)
    if machine.linux is not None and machine.linux.exit_status is not None:
        return _program_exited(machine.linux, summary, args.quiet, final)
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
