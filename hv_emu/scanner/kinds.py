"""What every ClamAV database file shares: its kind, its bounds, its lines, its names.

Models: the part of libclamav's loader (``readdb.c``) that comes before any one format: the kind
of a database by its file's suffix (``cli_strbcasestr``, any case), the kinds a directory may hold
(``CLI_DBEXT``), reading a ``--db`` file, the size bounds every parser checks first, a line as
libclamav reads it (``c_line``) and a signature name as clamscan reports it (``clam_name``).
``signatures.py``, ``hashes.py`` and ``logical.py`` parse the formats; this module is apart so
that ``hv-emu scan`` with a warm cache reads its database files without importing a parser
(docs/SIGNATURES.md, "Start-up, the cache and -j").

Follows: libclamav 1.4 (``readdb.c``: ``cli_dbgets``, ``cli_mpool_virname``), measured on
clamscan 1.4.6 (docs/SIGNATURES.md, Files and lines).

Leaves out: the formats themselves (``signatures.py``, ``hashes.py``, ``logical.py``).

Guest controls: a line's bytes and a name, through an update (``c_line`` and ``clam_name`` bound
nothing themselves: their callers have bounded the line); the user names the files.
"""

from __future__ import annotations

from pathlib import Path

from hv_emu.errors import ConfigError, DatabaseError
from hv_emu.named_file import RefusedFile, read_named_file

# Bounds on hostile input, checked before the work they limit.
MAX_DATABASE_BYTES = 64 * 1024 * 1024
MAX_SIGNATURES = 500_000
#: The functionality level hv-emu answers to in ``.ndb`` MinFL/MaxFL fields: clamscan 1.4.6's
#: (measured: a line with MinFL 216 loads, 217 is skipped).
FLEVEL = 216

KINDS = ("db", "ndb")
#: Hash databases (``hashes.py``): whole-file ``.hdb``/``.hsb``, PE-section ``.mdb``/``.msb``.
HASH_KINDS = ("hdb", "hsb", "mdb", "msb")
#: Logical signatures (``logical.py``).
LOGICAL_KINDS = ("ldb",)
#: Every kind ``--db`` loads, by suffix (any case, as libclamav's ``cli_strbcasestr``).
LOADABLE_KINDS = KINDS + HASH_KINDS + LOGICAL_KINDS
#: What else libclamav 1.4 loads from a database directory (``CLI_DBEXT``): PUA databases, loaded
#: only with ``--detect-pua`` (so skipped, as by default), and kinds hv-emu does not implement
#: (refused: they would change what clamscan reports).
PUA_KINDS = ("hdu", "hsu", "mdu", "msu", "ndu", "ldu")
UNSUPPORTED_KINDS = ("fp", "sfp", "sdb", "zmd", "rmd", "pdb", "gdb", "wdb", "cbc", "ftm",
                     "cfg", "cvd", "cld", "cud", "cdb", "cat", "crb", "idb", "ioc", "yar", "yara",
                     "pwdb", "ign", "ign2", "imp")  # fmt: skip


def c_line(raw: bytes) -> bytes:
    """A database line as libclamav sees it: read whole up to its newline (``cli_dbgets``), then
    handled as a C string, so it ends at its first NUL byte and whatever follows on that line is
    dropped (measured on clamscan 1.4.6 for ``.ndb``, ``.ldb`` and ``.hdb`` lines;
    docs/SIGNATURES.md, Files and lines)."""
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


#: What libclamav cuts a name at (``cli_mpool_virname``): the rest of the name is dropped.
CLAM_SUFFIX = " (Clam)"


def clam_name(raw: str, source: str, line: int, column: int = 1) -> str:
    """A signature name as clamscan reports it: any text (spaces too) up to the first " (Clam)".
    The line is read as latin-1; the name's bytes are read again as UTF-8 (an invalid sequence
    becomes U+FFFD), so that a UTF-8 name prints as clamscan prints it. ``column``: where the
    name starts on its line, for errors."""
    name = raw.split(CLAM_SUFFIX, 1)[0]
    if not name:
        raise DatabaseError(source, line, column, "Empty virus name")
    if "\0" in name:
        raise DatabaseError(source, line, column + name.index("\0"), "NUL byte in signature name")
    if name.isascii():
        return name
    return name.encode("latin-1").decode("utf-8", errors="replace")


def load_database_file(path: Path) -> tuple[bytes, str]:
    """Read a database file; its kind comes from the suffix, in any case (``.db``, ``.ndb``, a
    hash database: ``.hdb``, ``.hsb``, ``.mdb``, ``.msb``, or logical signatures: ``.ldb``)."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in LOADABLE_KINDS:
        raise ConfigError(f"{path}: unknown signature database suffix {path.suffix!r} "
                          "(expected .db, .ndb, .ldb, .hdb, .hsb, .mdb or .msb)")
    try:  # a regular file (or a link to one), never a FIFO or a device; at most the limit + 1
        return read_named_file(path, MAX_DATABASE_BYTES), kind
    except RefusedFile as refused:
        raise ConfigError(f"{path}: cannot read signature database: {refused}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read signature database: {error.strerror}") from None
