"""ClamAV hash signatures (``.hdb``, ``.hsb``, ``.mdb``, ``.msb``): whole files known by a digest.

Models: ClamAV's hash databases. A ``.hdb``/``.hsb`` line is ``HASH:SIZE:NAME[:MinFL[:MaxFL]]``:
a file of SIZE bytes whose MD5, SHA-1 or SHA-256 (told apart by the hash's length: 32, 40 or 64
hex digits, in either file kind) is HASH. SIZE may be ``*`` (any size) only on a line whose MinFL
is 73 or more. A ``.mdb``/``.msb`` line is ``SIZE:HASH:NAME[...]``: the hash of one *PE section*
of SIZE bytes, which needs PE parsing: such lines are parsed, accepted and never applied, and
reported once per file (``HashSet.not_applied``).

Follows: libclamav 1.4's ``cli_loadhash`` (``readdb.c``) field by field (``atoi`` FLEVELs,
``strtoul`` sizes, at most 5 fields, ``cli_mpool_virname`` names, "Empty database file") and
its matcher (``matcher-hash.c``): per hash type, one bucket per size and one for ``*``; a bucket
holding one hash under several names reports one of them, the one libclamav's quicksort and
binary search land on (``_clamav_choice`` replays both); per hash type and file, at most one
name of its size and one of ``*`` (``matcher.c``). docs/SIGNATURES.md restates what is relied on.

Leaves out: ``.fp``/``.sfp`` allow lists, ``.imp`` import hashes, PUA (``.hdu`` ...) files, and
the PE parsing ``.mdb``/``.msb`` need. Applies only where a whole file is seen (``hv-emu scan``):
a guest's disk writes are not files.

Guest controls: nothing today (an update bundle carries only ``.db``/``.ndb``), but the parser
bounds its input as ``signatures.py`` does and raises only ``DatabaseError``, so it may.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from hv_emu.errors import DatabaseError
from hv_emu.scanner.kinds import (
    FLEVEL,
    HASH_KINDS,
    MAX_DATABASE_BYTES,
    MAX_SIGNATURES,
    c_line,
    clam_name,
)
from hv_emu.scanner.record import Frozen, setfield

#: Whole-file hash databases, and PE-section hash databases (accepted, never applied).
FILE_KINDS = ("hdb", "hsb")
SECTION_KINDS = ("mdb", "msb")
KINDS = HASH_KINDS
#: The hash types by hex length, in the order libclamav checks them.
ALGORITHMS = {32: "md5", 40: "sha1", 64: "sha256"}
ORDER = ("md5", "sha1", "sha256")
#: ``cli_dbgets`` reads a line into an 8,192-byte buffer: a longer line would be cut in two.
MAX_HASH_LINE = 8191
#: The first functionality level that knows ``*`` sizes (``cli_loadhash``).
WILDCARD_FLEVEL = 73
#: A bucket holding one hash under several names is sorted as libclamav sorts it up to this many
#: entries (its quicksort is quadratic on sorted input); above, the name loaded last is reported.
MAX_REPLAYED_BUCKET = 4096

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]*)")
_STRTOUL = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")
_HEX = re.compile(r"[0-9a-fA-F]*")


class HashSignature(Frozen):
    """One hash line: a name for the file (or PE section) of ``size`` bytes (None: any size)
    whose ``algorithm`` digest is ``digest``."""

    __slots__ = ("name", "line", "algorithm", "digest", "size", "section", "source")  # noqa: RUF023 (__init__'s order)
    name: str
    line: int
    algorithm: str  # md5, sha1 or sha256
    digest: bytes
    size: int | None
    section: bool  # a PE section's hash (.mdb/.msb): never applied
    source: str

    def __init__(
        self, name: str, line: int, algorithm: str, digest: bytes, size: int | None,
        section: bool = False, source: str = "",
    ) -> None:  # fmt: skip
        setfield(self, "name", name)
        setfield(self, "line", line)
        setfield(self, "algorithm", algorithm)
        setfield(self, "digest", digest)
        setfield(self, "size", size)
        setfield(self, "section", section)
        setfield(self, "source", source)


def _c_atoi(text: str) -> int:
    """C's ``atoi`` as glibc does it, as a 32-bit ``int``: white space, a sign, digits, and the
    rest ignored (no digits is 0)."""
    match = _ATOI.match(text)
    assert match is not None  # the pattern matches the empty string
    value = min(int(match[2] or "0"), 2**63 - 1)
    if match[1] == "-":
        value = -min(int(match[2] or "0"), 2**63)
    value &= 0xFFFF_FFFF
    return value - 2**32 if value >= 2**31 else value


def _c_strtoul(text: str) -> int | None:
    """A size as ``strtoul(text, &end, 10)`` reads it, or None when text follows the number (or
    there is none): ``*end`` is then not NUL."""
    match = _STRTOUL.fullmatch(text)
    if match is None:
        return None
    value = int(match[2])
    if value > 2**64 - 1:
        return 2**64 - 1  # ERANGE: ULONG_MAX, whatever the sign
    return (-value) % 2**64 if match[1] == "-" else value


def _parse_line(text: str, kind: str, source: str, line: int) -> HashSignature | None:
    """One line, as ``cli_loadhash`` reads it; None when its FLEVELs exclude it."""
    fields = text.split(":")
    columns = [1]
    for item in fields[:-1]:
        columns.append(columns[-1] + len(item) + 1)
    section = kind in SECTION_KINDS
    shape = "SIZE:HASH:NAME" if section else "HASH:SIZE:NAME"
    if not 3 <= len(fields) <= 5:
        raise DatabaseError(source, line, 1, f"expected {shape}[:MinFL[:MaxFL]], got "
                            f"{len(fields)} ':'-separated fields")  # fmt: skip
    min_level = 0
    if len(fields) >= 4:
        min_level = _c_atoi(fields[3]) & 0xFFFF_FFFF  # compared as unsigned
        if min_level > FLEVEL:
            return None
        if len(fields) == 5 and _c_atoi(fields[4]) & 0xFFFF_FFFF < FLEVEL:
            return None
    size_at, hash_at = (0, 1) if section else (1, 0)
    size_text = fields[size_at]
    size: int | None = None
    if size_text != "*":
        value = _c_strtoul(size_text)
        if value is None or not 0 < value < 0xFFFF_FFFF:
            raise DatabaseError(source, line, columns[size_at],
                                f"Invalid value for the size field {size_text!r}")  # fmt: skip
        size = value
    elif len(fields) < 4 or min_level < WILDCARD_FLEVEL:
        why = f"Minimum FLEVEL field must be at least {WILDCARD_FLEVEL} for wildcard size hash"
        raise DatabaseError(source, line, columns[size_at], f"{why} signatures")
    name = clam_name(fields[2], source, line, columns[2])
    hex_text = fields[hash_at]
    algorithm = ALGORITHMS.get(len(hex_text))
    if algorithm is None or not _HEX.fullmatch(hex_text):
        raise DatabaseError(source, line, columns[hash_at], f"Malformed hash string {hex_text!r} "
                            "(32, 40 or 64 hex digits: MD5, SHA-1 or SHA-256)")  # fmt: skip
    digest = bytes.fromhex(hex_text)
    return HashSignature(name, line, algorithm, digest, size, section, source)


def parse_hash_database(data: bytes, *, kind: str, source: str) -> list[HashSignature]:
    """Parse a whole hash database; one bad line refuses it, as ClamAV does."""
    if kind not in KINDS:
        raise DatabaseError(source, 0, 0, f"unknown hash database kind {kind!r}")
    if len(data) > MAX_DATABASE_BYTES:
        raise DatabaseError(source, 0, 0, f"database larger than {MAX_DATABASE_BYTES} bytes")
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line starts no line
    if not lines:
        raise DatabaseError(source, 0, 0, "Empty database file")
    signatures: list[HashSignature] = []
    for number, raw in enumerate(lines, start=1):
        if len(raw) > MAX_HASH_LINE:
            raise DatabaseError(source, number, 0, f"line longer than {MAX_HASH_LINE} bytes "
                                "(ClamAV would cut it in two)")  # fmt: skip
        raw = c_line(raw)
        if raw.startswith(b"#"):
            continue
        if len(signatures) >= MAX_SIGNATURES:
            raise DatabaseError(source, number, 0, f"more than {MAX_SIGNATURES} signatures")
        text = raw.decode("latin-1").rstrip("\r")
        signature = _parse_line(text, kind, source, number)
        if signature is not None:
            signatures.append(signature)
    return signatures


def _key(digest: bytes) -> tuple[int, bytes]:
    """libclamav's ``hm_cmp`` order on a little-endian machine: the first 4 bytes as a 32-bit
    integer, then the rest as bytes."""
    return int.from_bytes(digest[:4], "little"), digest[4:]


def _clamav_choice(entries: Sequence[tuple[bytes, str]]) -> dict[bytes, str]:
    """The name libclamav reports for each digest of one bucket (entries in load order): the
    bucket sorted by ``hm_sort`` (a quicksort, first element as pivot), then searched by
    ``hm_scan`` (a binary search that stops at the first equal entry)."""
    if len({digest for digest, _ in entries}) == len(entries):
        return dict(entries)  # no digest twice: nothing to choose
    if len(entries) > MAX_REPLAYED_BUCKET:
        return dict(entries)  # the last loaded (documented)
    items = [(_key(digest), digest, name) for digest, name in entries]
    stack = [(0, len(items))]
    while stack:
        left, right = stack.pop()
        if left + 1 >= right:
            continue
        pivot = items[left][0]
        low, high = left + 1, right
        while low < high:
            if items[low][0] > pivot:
                high -= 1
                if low == high:
                    break
                items[low], items[high] = items[high], items[low]
            else:
                low += 1
        low -= 1
        if low != left:
            items[low], items[left] = items[left], items[low]
        stack += [(left, low), (high, right)]
    chosen: dict[bytes, str] = {}
    for digest in {digest for digest, _ in entries}:
        key, first, last = _key(digest), 0, len(items) - 1
        while first <= last:
            middle = (first + last) // 2
            if key < items[middle][0]:
                if not middle:
                    break
                last = middle - 1
            elif key > items[middle][0]:
                first = middle + 1
            else:
                chosen[digest] = items[middle][2]
                break
    return chosen


class HashSet(Frozen):
    """The hash signatures of a database, ready to look up: per algorithm, one table per size and
    one for ``*`` (key None), each mapping a digest to the one name clamscan reports for it."""

    __slots__ = ("signatures", "tables")
    signatures: tuple[HashSignature, ...]
    tables: dict[tuple[str, int | None], dict[bytes, str]]

    def __init__(
        self, signatures: tuple[HashSignature, ...] = (),
        tables: dict[tuple[str, int | None], dict[bytes, str]] | None = None,
    ) -> None:  # fmt: skip
        setfield(self, "signatures", signatures)
        setfield(self, "tables", {} if tables is None else tables)

    @classmethod
    def build(cls, signatures: Iterable[HashSignature]) -> HashSet:
        signatures = tuple(signatures)
        buckets: dict[tuple[str, int | None], list[tuple[bytes, str]]] = {}
        for signature in signatures:
            if not signature.section:
                key = (signature.algorithm, signature.size)
                buckets.setdefault(key, []).append((signature.digest, signature.name))
        tables = {key: _clamav_choice(entries) for key, entries in buckets.items()}
        return cls(signatures, tables)

    @property
    def applied(self) -> bool:
        """Whether any signature applies to whole files."""
        return bool(self.tables)

    def algorithms(self, size: int) -> tuple[str, ...]:
        """The digests a file of ``size`` bytes needs (none if no hash could match it)."""
        return tuple(a for a in ORDER if (a, None) in self.tables or (a, size) in self.tables)

    def start(self, size: int) -> dict[str, Any]:
        """Fresh hash objects for a file of ``size`` bytes, to ``update`` with each chunk."""
        return {algorithm: hashlib.new(algorithm) for algorithm in self.algorithms(size)}

    def names(self, hashers: dict[str, Any], size: int) -> list[str]:
        """What a file of ``size`` bytes whose digests ``hashers`` hold is, as clamscan reports it:
        per algorithm, the name for its size, then the name for any size."""
        found: list[str] = []
        for algorithm in ORDER:
            hasher = hashers.get(algorithm)
            if hasher is None:
                continue
            digest = hasher.digest()
            for table_size in (size, None):
                name = self.tables.get((algorithm, table_size), {}).get(digest)
                if name is not None and name not in found:
                    found.append(name)
        return found

    def not_applied(self) -> tuple[str, ...]:
        """One line per database file with PE-section hashes (never applied)."""
        counts: dict[str, int] = {}
        for signature in self.signatures:
            if signature.section:
                counts[signature.source] = counts.get(signature.source, 0) + 1
        return tuple(
            f"{source}: {count} PE section hash signature{'s' * (count != 1)} "
            f"need{'s' * (count == 1)} ClamAV's PE parsing; not applied"
            for source, count in counts.items()
        )

    def whole_file(self) -> tuple[str, ...]:
        """One line per database file with whole-file hashes, for the disk path: a write stream
        is not a file, so they are not applied there."""
        counts: dict[str, int] = {}
        for signature in self.signatures:
            if not signature.section:
                counts[signature.source] = counts.get(signature.source, 0) + 1
        return tuple(
            f"{source}: {count} hash signature{'s' * (count != 1)} "
            f"match{'es' * (count == 1)} whole files; not applied to disk writes"
            for source, count in counts.items()
        )
