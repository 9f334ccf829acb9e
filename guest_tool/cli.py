"""``guest-tool``: keys, signed updates and guest programs for hv-emu.

Models: the publisher's and the guest user's side of a signature update: make a key pair, sign a
ClamAV database into an update bundle, and build a guest program that hands the bundle to the
hypervisor with VMCALL.

    guest-tool keygen demo                                   # demo.key, demo.pub
    guest-tool sample-db -o sample.db                        # the sample database shipped
    guest-tool bundle --db sigs.ndb --version 7 --key demo.key -o update.hvdb
    guest-tool build --bundle update.hvdb -o update-guest.bin
    guest-tool build --format linux-elf -o hvupdate          # hvupdate UPDATE UPDATE.sig
    guest-tool build --write payload.bin --lba 100 --via dma -o write-guest.bin
    guest-tool build --nic --rx-frames 2 -o nic-guest.bin
    guest-tool push update.hvdb --key demo.key --to udp:127.0.0.1:5555
    guest-tool manifest update.hvdb --key demo.key            # update.hvdb.manifest, once
    guest-tool push update.hvdb --to udp:127.0.0.1:5555      # a relay: no private key

Exit status: 0 success, 2 a bad argument or file (one line on standard error; standard output
closed or unwritable too), 141 the reader of standard output went away (quietly), 70 a bug.

Follows: ``docs/UPDATE-FORMAT.md`` (bundles), ``docs/ABI.md`` (the programs' hypercalls) and
``docs/PROTOCOL.md`` (``push``: the update over the network, ``guest_tool/push.py``).

Leaves out: a return channel for ``push`` (it sends a fixed carousel).

Guest controls: nothing; this runs on the publisher's or the user's host.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from guest_tool.bundle import write_bundle
from guest_tool.disk_programs import MAX_PRD_BYTES, VIAS, build_disk_write_program
from guest_tool.keys import ALGORITHMS, generate_keypair
from guest_tool.linux_programs import build_hvupdate
from guest_tool.programs import (
    NEEDS_DATA,
    build_program,
    build_source_file,
    build_update_program,
    buildable_programs,
)
from guest_tool.push import add_push_command, run_manifest_command, run_push_command
from hv_emu import SAMPLE_DB, __version__
from hv_emu.errors import ConfigError, DatabaseError, HvEmuError
from hv_emu.memory.boot import MODES
from hv_emu.named_file import read_user_file
from hv_emu.scanner.signatures import parse_database
from hv_emu.usage import (
    EXIT_BUG,
    EXIT_USAGE,
    OneLineParser,
    OutputError,
    integer,
    output_failed,
    plural,
    standard_output_error,
    standard_output_open,
)

EXIT_OK = 0
#: What ``hv-emu run`` needs besides the image for a program ``--program`` builds.
RUN_NEEDS = {
    "identify": " --disk DISK.img",
    "ahci": " --disk DISK.img --disk-controller ahci",
    "nic": " --net udp:127.0.0.1:PORT,peer=HOST:PORT",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="guest-tool",
                           description="Keys, signed updates and guest programs.")
    parser.add_argument("--version", action="version", version=f"guest-tool {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    keygen = sub.add_parser("keygen", help="make a signing key pair: STEM.key and STEM.pub")
    keygen.add_argument("stem", type=Path, help="path without suffix, e.g. 'demo'")
    keygen.add_argument("--alg", choices=ALGORITHMS, default=ALGORITHMS[0])

    sample = sub.add_parser("sample-db", help="write the sample ClamAV database hv-emu ships")
    sample.add_argument("-o", "--output", type=Path, required=True, help="file to write")

    bundle = sub.add_parser("bundle", help="sign a ClamAV database into an update bundle")
    bundle.add_argument("--db", type=Path, required=True, help="ClamAV .db or .ndb file")
    bundle.add_argument("--version", type=integer, required=True,
                        help="database version (1 .. 2^63-1)")
    bundle.add_argument("--key", type=Path, required=True, help="PEM private key")
    bundle.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    bundle.add_argument("--expires-in", type=float, default=30.0, metavar="DAYS",
                        help="validity from now (default 30 days)")
    bundle.add_argument("--kind", choices=("db", "ndb"), help="database format (default: suffix)")

    build = sub.add_parser("build", help="build a guest that performs an update, or a disk write")
    what = build.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", type=Path, help="bundle (its .sig beside it): the update guest")
    what.add_argument("--write", type=Path, metavar="FILE",
                      help="a guest that writes FILE to the disk at --lba and reads it back")
    what.add_argument("--nic", action="store_true",
                      help="the NIC driver guest (asm/programs/nic64.s): sends a frame, prints "
                           "what comes")
    what.add_argument("--program", metavar="NAME",
                      help="a program of asm/programs/ by name, one of: "
                           f"{', '.join(buildable_programs())} ('hello' is hello64.s with "
                           "--mode 64)")
    what.add_argument("--asm", type=Path, metavar="FILE",
                      help="your own Intel-syntax source (the HC_* hypercall numbers and the "
                           "asm/include/hvabi.s constants predefined)")
    what.add_argument("--format", choices=("linux-elf",),
                      help="linux-elf: hvupdate, a static x86-64 Linux program run as "
                           "`hvupdate UPDATE UPDATE.sig` (in hv-emu run or on real Linux)")
    build.add_argument("--rx-frames", type=integer, default=1, metavar="N",
                       help="--nic: frames to wait for and print before halting (default 1)")
    build.add_argument("--lba", type=integer, default=0, help="--write: first sector (default 0)")
    build.add_argument("--via", choices=VIAS, default="pio", help="--write: PIO or bus-master DMA")
    build.add_argument("--per-command", type=integer, metavar="SECTORS",
                       help="--write: sectors per ATA command (default: as many as allowed)")
    build.add_argument("--prd-bytes", type=integer, default=MAX_PRD_BYTES, metavar="BYTES",
                       help="--write --via dma: largest PRD entry (even, default 65536)")
    build.add_argument("--lba48", action="store_true",
                       help="--write: use the 48-bit EXT commands even below 2^28")
    build.add_argument("--sig", type=Path, help="signature file (default: BUNDLE.sig)")
    build.add_argument("-o", "--output", type=Path, required=True, help="flat image to write")
    build.add_argument("--mode", type=int, choices=MODES, default=64, help="CPU mode (16/32/64)")
    build.add_argument("--load", type=integer, help="load address (default: hv-emu run's)")
    build.add_argument("--no-lookup", action="store_true",
                       help="call number 2 directly instead of resolving 'update_signatures'")
    add_push_command(sub)
    return parser


def _validate(body: bytes, kind: str, source: str) -> None:
    """Refuse to sign a database the hypervisor would refuse."""
    try:
        parse_database(body, kind=kind, source=source)
    except DatabaseError as bad:
        raise ConfigError(str(bad)) from None


def _read(path: Path, what: str) -> bytes:
    return read_user_file(path, what)


def _write(path: Path, image: bytes) -> None:
    try:
        path.write_bytes(image)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror}") from None


def _say(text: str) -> None:
    """One line of results on standard output; a failed write is an ``OutputError``."""
    try:
        print(text)
    except OSError as err:  # a full disk, or the reader went away
        raise OutputError(err) from None


def _build_linux_elf(args: argparse.Namespace) -> None:
    """``hvupdate``: one program for every update, which takes the files as its arguments."""
    if args.sig is not None or args.mode != 64 or args.load is not None:
        raise ConfigError("--format linux-elf takes no --sig, --mode or --load: hvupdate reads "
                          "the update files named on its command line")
    image = build_hvupdate()
    _write(args.output, image)
    try:
        args.output.chmod(0o755)
    except OSError as err:
        raise ConfigError(f"cannot make {args.output} executable: {err.strerror}") from None
    _say(f"wrote {args.output} ({len(image)} bytes), a static x86-64 Linux program; run it with: "
          f"hv-emu run {args.output} --trust KEY.pub --file U=UPDATE --file U.sig=UPDATE.sig "
          f"-- U U.sig")


def _buildable(name: str) -> str:
    """``name`` if ``--program`` builds it; else a ``ConfigError`` naming the option that builds
    it (a program that needs data) or the programs there are."""
    if name in NEEDS_DATA:
        needs = NEEDS_DATA[name]
        raise ConfigError(f"--program {name} needs {needs.data}: build it with "
                          f"guest-tool build {needs.option}")
    if name not in buildable_programs():
        raise ConfigError(f"--program: no program {name!r}; one of: "
                          f"{', '.join(buildable_programs())}")
    return name


def run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        private, public = generate_keypair(args.stem, args.alg)
        _say(f"wrote {private} (private, keep it secret) and {public} (public: hv-emu --trust)")
    elif args.command == "sample-db":
        _write(args.output, SAMPLE_DB.read_bytes())
        _say(f"wrote {args.output}: the sample database (Aircop, Burghofer, Burglar, Carnage, "
              "EICAR test string)")
    elif args.command == "bundle":
        out, sig = write_bundle(
            args.db, version=args.version, key_path=args.key, out=args.output,
            expires_in_days=args.expires_in, kind=args.kind, validate=_validate,
        )  # fmt: skip
        _say(f"wrote {out} ({out.stat().st_size} bytes) and {sig}")
    elif args.command == "push":
        _say(run_push_command(args))
    elif args.command == "manifest":
        _say(run_manifest_command(args))
    elif args.format == "linux-elf":
        _build_linux_elf(args)
    elif args.program is not None or args.asm is not None:
        if args.program is not None:
            image = build_program(_buildable(args.program), mode=args.mode, load=args.load)
        else:
            image = build_source_file(args.asm, mode=args.mode, load=args.load)
        _write(args.output, image)
        hint = "" if args.mode == 64 else f" --mode {args.mode}"
        if args.load is not None:
            hint += f" --load {args.load:#x}"
        hint += RUN_NEEDS.get(args.program or "", "")
        _say(f"wrote {args.output} ({len(image)} bytes); run it with: "
              f"hv-emu run {args.output}{hint}")
    elif args.nic:
        if args.mode != 64 or not 0 <= args.rx_frames < 1 << 31:
            raise ConfigError("--nic builds a 64-bit guest; --rx-frames must be 0..2^31-1")
        image = build_program("nic", load=args.load, equates={"RX_FRAMES": args.rx_frames})
        _write(args.output, image)
        _say(f"wrote {args.output} ({len(image)} bytes); run it with: "
              f"hv-emu run {args.output} --net udp:127.0.0.1:PORT,peer=HOST:PORT")
    elif args.write is not None:
        if args.mode != 64:
            raise ConfigError("--write builds a 64-bit guest only (asm/include/ata.s is 64-bit)")
        built = build_disk_write_program(
            _read(args.write, "payload"), args.lba, args.via, per_command=args.per_command,
            prd_bytes=args.prd_bytes, lba48=True if args.lba48 else None,
        )  # fmt: skip
        _write(args.output, built.image)
        _say(f"wrote {args.output} ({len(built.image)} bytes): "
              f"{plural(built.sectors, 'sector')} at LBA {built.lba} via {args.via} in "
              f"{plural(built.commands, 'command')}; run it with: "
              f"hv-emu run {args.output} --disk DISK.img --db SIGNATURES")
    else:
        bundle = _read(args.bundle, "bundle")
        signature = _read(args.sig or Path(f"{args.bundle}.sig"), "signature")
        image = build_update_program(
            bundle, signature, mode=args.mode, load=args.load, lookup=not args.no_lookup
        )
        _write(args.output, image)
        hint = "" if args.mode == 64 else f" --mode {args.mode}"
        if args.load is not None:
            hint += f" --load {args.load:#x}"
        _say(f"wrote {args.output} ({len(image)} bytes); run it with: "
              f"hv-emu run {args.output}{hint} --trust KEY.pub")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not standard_output_open("guest-tool"):
        return EXIT_USAGE
    status = _command(args)
    failed = standard_output_error()
    return status if failed is None else output_failed("guest-tool", failed)


def _command(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except OutputError as err:  # standard output: a full disk, or its reader went away
        return output_failed("guest-tool", err.error)
    except HvEmuError as err:
        print(f"guest-tool: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        failed = standard_output_error() if isinstance(err, OSError) else None
        if failed is not None:  # standard output, not a bug: a full disk, a reader gone
            return output_failed("guest-tool", failed)
        print(f"guest-tool: internal error: {type(err).__name__}: {err} (please report)",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
