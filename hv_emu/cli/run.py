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
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM), 129 hung up (SIGHUP): 128 + the signal's
        number; once the guest had started an ending like the others, its line ("interrupted at
        ...", "terminated at ...") and every output written (``interrupt.py``); before that, one
        line and every output file left as it was
A Linux ELF program that calls exit/exit_group makes ``hv-emu run`` exit with the program's own
status instead, as ``qemu-x86_64`` does (docs/ELF.md); its other ends keep the codes above.
The files it writes (``OUTPUTS``) are never one it reads, and each is replaced only once the run
ended, but for ``--events``, put in place as the guest starts and written as events happen
(``outputs.py``); the ending's line and status are ``run_status.py``'s.

Its options and their checks are ``run_options.py``'s.

Follows: README.md (``hv-emu run``), docs/ELF.md, docs/EVENTS.md.

Leaves out: snapshots, an interactive monitor.

Guest controls: what it prints to the debug console and the screen, and how the run ends; never
the shape of hv-emu's own messages (one line each on standard error).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import replace
from typing import TextIO

from hv_emu.cli.interrupt import Ending, signals_end
from hv_emu.cli.netopts import apply as apply_network_options
from hv_emu.cli.outputs import Outputs
from hv_emu.cli.run_options import OUTPUTS
from hv_emu.cli.run_status import (
    exit_status,
    program_end,
    program_summary,
    run_summary,
)
from hv_emu.debug.gdbstub import serve_gdb
from hv_emu.debug.recorder import RunRecorder
from hv_emu.debug.report_html import RunInfo, render
from hv_emu.debug.trace import ExitTracer
from hv_emu.errors import ConfigError, HostError
from hv_emu.events import EventLog
from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout
from hv_emu.linux.files import FileGrant, FileTable
from hv_emu.loaders.elf_file import is_elf
from hv_emu.machine import DISK_CONTROLLERS, Machine, MachineConfig, RunResult
from hv_emu.named_file import read_user_file
from hv_emu.run_end import status_of
from hv_emu.usage import drop_standard_output
from hv_emu.vcpu.stopping import ENDINGS, ending_of


def _run_watched(machine: Machine, args: argparse.Namespace, outputs: Outputs) -> RunResult:
    """Run the guest, under gdb if asked, with the exit tracer attached if asked."""
    records = outputs.open_text("--trace-json", "the trace", keep_errors=True)
    tracer = None
    if args.trace or records is not None:
        lines = sys.stderr if args.trace else None
        tracer = ExitTracer(machine.vcpu, machine.bus, machine.hypercalls, lines=lines,
                            records=records)  # fmt: skip
        machine.exit_observers.append(tracer)
    try:
        try:
            if args.gdb is None:
                return machine.run()
            with machine.serving_network():
                return serve_gdb(machine, args.gdb, announce=_announce_gdb)
        except KeyboardInterrupt:  # a signal outside the vCPU's run: gdb's wait (interrupt.py)
            vcpu = machine.vcpu
            reason = vcpu.stopping.reason()
            return machine.finish(StopRequest(reason, vcpu.mode(), vcpu.reg("rip")))
    finally:
        if records is not None:
            records.close()
        if tracer is not None and args.trace:
            print(tracer.summary(), file=sys.stderr)


def _announce_gdb(port: int) -> None:
    print(f"hv-emu: waiting for gdb on 127.0.0.1:{port} (in gdb: target remote :{port})",
          file=sys.stderr, flush=True)  # fmt: skip


def _record(machine: Machine, events: EventLog) -> RunRecorder:
    """A recorder fed by every exit, event and disk write of the run (``--report``)."""
    recorder = RunRecorder(hypercall_name=machine.hypercalls.name, clock_unit="milliseconds",
                           clock=lambda: machine.clock.now() / 1e6,
                           timer_armed=lambda: machine.pit.armed)  # fmt: skip
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
            ending, summary = program_end(linux), program_summary(linux, summary)
        case Halt(rip=rip):
            ending = f"guest halted (HLT, RIP={rip:#x} after it)"
        case Fault():
            ending = final.describe()
        case Timeout(seconds=seconds, rip=rip):
            ending = f"timeout: {seconds:g} s without halting (RIP={rip:#x})"
        case StopRequest(reason=reason, rip=rip) if (by := ending_of(reason)) is not None:
            ending = f"{by.reason} at RIP={rip:#x}"
        case StopRequest(reason=reason):
            ending = f"stopped: {reason}"
        case _:
            ending = repr(final)
    status = status_of(final, linux.exit_status if linux is not None else None)
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


def cmd_run(args: argparse.Namespace) -> int:
    if args.db is not None and args.db.is_dir():
        raise ConfigError(f"--db {args.db} is a directory: hv-emu run takes one database file "
                          "(a directory of databases is accepted by hv-emu scan only)")
    image = _check_boot(args)
    grants = [FileGrant.parse(spec) for spec in args.file]
    inputs = [("IMAGE", args.image), ("--boot", args.boot), ("--db", args.db),
              ("--disk", args.disk), *(("--trust", key) for key in args.trust),
              *(("--file", grant.host_path) for grant in grants)]  # fmt: skip
    writable_dirs = [("--file", grant.host_path) for grant in grants
                     if grant.writable and grant.host_path.is_dir()]  # fmt: skip
    state = [] if args.state is None else [("--state", args.state)]
    # Every output is a temporary until the run has ended (hv_emu/cli/outputs.py); a signal
    # ends the run as it goes, or if it comes before (or after) the run, ends here, every output
    # file left as it was (interrupt.py).
    with signals_end() as ending:
        try:
            with Outputs.prepare([(option, getattr(args, option[2:].replace("-", "_")))
                                  for option in OUTPUTS],
                                 [(option, path) for option, path in inputs if path is not None],
                                 state + writable_dirs) as outputs:  # fmt: skip
                status = _run(args, image, outputs, ending)
                outputs.commit()
        except KeyboardInterrupt:
            end = ending.signal or ENDINGS[signal.SIGINT]
            print(f"hv-emu: {end.reason}: the output files left as they were", file=sys.stderr)
            return end.status
    return status


def _run(args: argparse.Namespace, image: bytes | None, outputs: Outputs, ending: Ending) -> int:
    """``cmd_run`` once the files it writes are prepared."""
    outputs.release("--capture")  # the network's pcap writer opens its temporary by path
    config = MachineConfig(
        mem_mib=args.mem, timeout=args.timeout, trust=args.trust, db=args.db,
        state_dir=args.state, max_update=args.max_update,
        disk=args.disk if args.boot is None else args.boot,
        disk_size_mib=args.disk_size, on_detect=args.on_detect, sync_updates=args.sync_updates,
        cpu=args.cpu, realtime=args.realtime, sysroot=args.sysroot,
        disk_controller=args.disk_controller,
    )  # fmt: skip
    config = replace(apply_network_options(args, config), capture=outputs.path("--capture"))
    if args.disk_size is not None and args.disk is None:
        raise ConfigError("--disk-size needs --disk (the image to create)")
    if args.disk_controller != DISK_CONTROLLERS[0] and args.disk is None:
        raise ConfigError("--disk-controller needs --disk (the image behind it)")
    report = outputs.open_text("--report", "the report")
    # Written to --events as they happen, never kept: a guest looping on VMCALL makes ~40 000
    # events a second, which a kept list would hold in RAM until the run ends; and at most
    # --events-max bytes of them reach the file (hv_emu/events.py says which are dropped first).
    events = EventLog(outputs.open_text("--events", "events"), keep=False,
                      max_bytes=args.events_max or None)  # fmt: skip
    try:
        machine = Machine(config, console=sys.stdout.buffer, events=events)
        ending.vcpu = machine.vcpu  # from now on a signal ends its run (interrupt.py)
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
            outputs.publish("--events")  # from now on FILE itself grows as events happen
            started = time.perf_counter()
            result = _run_watched(machine, args, outputs)
            elapsed = time.perf_counter() - started
        finally:
            machine.close()
    finally:
        events.close()
    if machine.debugcon.output_error is not None:
        drop_standard_output()
    # The guest's text screen as the user would have seen it: 25 lines, trailing blanks cut.
    rows = machine.vga.read_screen() if args.screen is not None else []
    outputs.write_text("--screen", "the screen", "".join(row.rstrip() + "\n" for row in rows))
    final = result.exit
    summary = run_summary(machine, elapsed)
    if report is not None and recorder is not None:
        _write_report(report, recorder, machine, final, args, summary)
    return exit_status(machine, final, summary, args.quiet)
