"""``guest-tool``: keys, signed updates and guest programs for hv-emu.

Models: the publisher's and the guest user's side of a signature update: make a key pair, sign a
ClamAV database into an update bundle, and build a guest program that hands the bundle to the
hypervisor with VMCALL.

    guest-tool keygen demo                                   # demo.key, demo.pub
    guest-tool bundle --db sigs.ndb --version 7 --key demo.key -o update.hvdb
    guest-tool build --bundle update.hvdb -o update-guest.bin

Exit status: 0 success, 2 a bad argument or file (one line on standard error), 70 a bug.

Follows: ``docs/UPDATE-FORMAT.md`` (bundles) and ``docs/ABI.md`` (the programs' hypercalls).

Leaves out: the network sender (``push``, a later issue).

Guest controls: nothing; this runs on the publisher's or the user's host.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from guest_tool.bundle import write_bundle
from guest_tool.keys import ALGORITHMS, generate_keypair
from guest_tool.programs import build_update_program
from hv_emu.boot import MODES
from hv_emu.errors import ConfigError, DatabaseError, HvEmuError
from hv_emu.scanner.signatures import parse_database

EXIT_OK, EXIT_USAGE, EXIT_BUG = 0, 2, 70


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="guest-tool", description="Keys, signed updates and guest programs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    keygen = sub.add_parser("keygen", help="make a signing key pair: STEM.key and STEM.pub")
    keygen.add_argument("stem", type=Path, help="path without suffix, e.g. 'demo'")
    keygen.add_argument("--alg", choices=ALGORITHMS, default=ALGORITHMS[0])

    bundle = sub.add_parser("bundle", help="sign a ClamAV database into an update bundle")
    bundle.add_argument("--db", type=Path, required=True, help="ClamAV .db or .ndb file")
    bundle.add_argument("--version", type=_int, required=True, help="database version (>= 1)")
    bundle.add_argument("--key", type=Path, required=True, help="PEM private key")
    bundle.add_argument("-o", "--output", type=Path, required=True, help="bundle file to write")
    bundle.add_argument("--expires-in", type=float, default=30.0, metavar="DAYS",
                        help="validity from now (default 30 days)")
    bundle.add_argument("--kind", choices=("db", "ndb"), help="database format (default: suffix)")

    build = sub.add_parser("build", help="build a guest program that performs the update")
    build.add_argument("--bundle", type=Path, required=True, help="bundle (its .sig beside it)")
    build.add_argument("--sig", type=Path, help="signature file (default: BUNDLE.sig)")
    build.add_argument("-o", "--output", type=Path, required=True, help="flat image to write")
    build.add_argument("--mode", type=int, choices=MODES, default=64, help="CPU mode (16/32/64)")
    build.add_argument("--load", type=_int, help="load address (default: hv-emu run's)")
    build.add_argument("--no-lookup", action="store_true",
                       help="call number 2 directly instead of resolving 'update_signatures'")
    return parser


def _validate(body: bytes, kind: str, source: str) -> None:
    """Refuse to sign a database the hypervisor would refuse."""
    try:
        parse_database(body, kind=kind, source=source)
    except DatabaseError as bad:
        raise ConfigError(str(bad)) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        private, public = generate_keypair(args.stem, args.alg)
        print(f"wrote {private} (private, keep it secret) and {public} (public: hv-emu --trust)")
    elif args.command == "bundle":
        out, sig = write_bundle(
            args.db, version=args.version, key_path=args.key, out=args.output,
            expires_in_days=args.expires_in, kind=args.kind, validate=_validate,
        )  # fmt: skip
        print(f"wrote {out} ({out.stat().st_size} bytes) and {sig}")
    else:
        bundle = _read(args.bundle, "bundle")
        signature = _read(args.sig or Path(f"{args.bundle}.sig"), "signature")
        image = build_update_program(
            bundle, signature, mode=args.mode, load=args.load, lookup=not args.no_lookup
        )
        try:
            args.output.write_bytes(image)
        except OSError as err:
            raise ConfigError(f"cannot write {args.output}: {err.strerror}") from None
        hint = "" if args.mode == 64 else f" --mode {args.mode}"
        if args.load is not None:
            hint += f" --load {args.load:#x}"
        print(f"wrote {args.output} ({len(image)} bytes); run it with: "
              f"hv-emu run {args.output}{hint} --trust KEY.pub")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except HvEmuError as err:
        print(f"guest-tool: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:
        print(f"guest-tool: internal error: {type(err).__name__}: {err} (please report)",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
