"""The scanner tests' shared pieces: bytes a signature variant matches, the exact raw-mode options
clamscan is run with (docs/SIGNATURES.md), and a scanner's output read as (file, name) pairs."""

from __future__ import annotations

import random
from pathlib import Path

from hv_emu.cli.scan import CLAMSCAN_RAW_MODE
from hv_emu.scanner.signatures import ByteClass, Choice, Literal, Variant

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


def found_pairs(stdout: str, root: Path) -> set[tuple[str, str]]:
    """(file relative to ``root``, signature name) for each ``path: Name FOUND`` line of
    clamscan's or ``hv-emu scan``'s output (clamscan's ``.UNOFFICIAL`` suffix dropped)."""
    pairs = set()
    for line in stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND"):
            name = verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
            pairs.add((str(Path(path).relative_to(root)), name))
    return pairs
