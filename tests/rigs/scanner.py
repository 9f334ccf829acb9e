"""The scanner tests' shared pieces: bytes a signature variant matches, the exact raw-mode options
clamscan is run with (docs/SIGNATURES.md), a scanner's output read as (file, name) pairs, and
the two sides of a comparison: ``clamscan`` and ``ours``."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

from hv_emu.cli.scan import CLAMSCAN_RAW_MODE
from hv_emu.scanner.database import compile_database
from hv_emu.scanner.signatures import ByteClass, Choice, Literal, Variant, load_database_file

#: clamscan's options for raw mode, the mode hv-emu agrees with.
RAW_MODE = list(CLAMSCAN_RAW_MODE)


def instance(variant: Variant, rng: random.Random) -> bytes:
    """Some bytes that the variant matches."""
    out = bytearray()
    for element in variant:
        if isinstance(element, Literal):
            out += element.data
        elif isinstance(element, ByteClass):
            out.append(rng.choice(sorted(element.allowed)))
        elif isinstance(element, Choice) and not element.negated:
            out += rng.choice(sorted(element.options))
        else:
            assert isinstance(element, Choice)
            while (candidate := rng.randbytes(element.width)) in element.options:
                pass
            out += candidate
    return bytes(out)


#: libclamav ignores files this small (measured with clamscan 1.4.6: 5 bytes OK, 6 bytes FOUND);
#: hv-emu scans them (the disk path has no files), so comparisons leave them out.
CLAMSCAN_SKIPS_UP_TO = 5


def found_pairs(stdout: str, root: Path) -> set[tuple[str, str]]:
    """(file relative to ``root``, signature name) for each ``path: Name FOUND`` line of
    clamscan's or ``hv-emu scan``'s output (clamscan's ``.UNOFFICIAL`` suffix dropped); files of
    ``CLAMSCAN_SKIPS_UP_TO`` bytes or fewer left out."""
    pairs = set()
    for line in stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND") and Path(path).stat().st_size > CLAMSCAN_SKIPS_UP_TO:
            name = verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
            pairs.add((str(Path(path).relative_to(root)), name))
    return pairs


def clamscan(database: Path, files: list[Path]) -> set[tuple[str, str]]:
    """(file name, signature) pairs raw-mode clamscan finds in ``files`` with ``database``."""
    clamscan_binary = shutil.which("clamscan")
    assert clamscan_binary is not None
    result = subprocess.run(
        [clamscan_binary, "-d", str(database), *RAW_MODE, *map(str, files)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: something found
    found = set()
    for line in result.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND"):
            name = verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
            found.add((Path(path).name, name))
    return found


def ours(database: Path, files: list[Path], engine: str) -> set[tuple[str, str]]:
    """The same pairs from hv-emu's scanner, files clamscan skips for their size left out."""
    data, kind = load_database_file(database)
    db = compile_database(data, kind=kind, version=1, source=database.name, engine=engine)
    return {(f.name, m.name) for f in files if f.stat().st_size > CLAMSCAN_SKIPS_UP_TO
            for m in db.scan(f.read_bytes())}  # fmt: skip


#: The scan grid of the ``small_grid`` fixture (tests/conftest.py): chunks of this many bytes,
#: units of twice as many, so a file of a few KiB is cut everywhere.
GRID_CHUNK = 64

#: Single-part signatures anywhere (a splittable database) with anchored bytes and boundaries,
#: (B) and (L), on either side and wildcards, so matches near a cut depend on bytes across it,
#: and one at the file's end or start on there being no byte after or before it.
SPLITTABLE = (
    b"Plain:0:*:" + b"hv-emu-test-body".hex().encode() + b"\n"
    b"Wild:0:*:414243??4445(46|47)48\n"
    b"Left:0:*:5a[1-3]4b4c4d\n"
    b"Right:0:*:4e4f50[2-4]51\n"
    b"Short:0:*:787878\n"
    b"EndB:0:*:" + b"hv-emu-end".hex().encode() + b"(B)\n"
    b"EndL:0:*:" + b"line-end".hex().encode() + b"(L)\n"
    b"StartB:0:*:(B)" + b"word-start".hex().encode() + b"\n"
    b"StartL:0:*:(L)" + b"line-start".hex().encode() + b"\n"
)
#: The bodies of ``SPLITTABLE``'s signatures, to plant in test files.
BODIES = [b"hv-emu-test-body", b"ABC\x00DEGH", b"Z.KLM", b"NOP..Q", b"xxx", b"hv-emu-end",
          b"line-end", b"word-start", b"line-start"]  # fmt: skip
