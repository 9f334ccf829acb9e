"""The update packets' stateless refusals: one exception class per drop counter.

Models: every reason ``parse_packet`` and ``Manifest.from_payload`` (``packets.py``) refuse a
datagram for without state: each class's ``reason`` is the receiver's drop counter of that name.

Follows: ``docs/PROTOCOL.md``, "Drop counters" (``tests/docs/test_updates_protocol_doc.py``
checks that every ``reason`` here is documented there).

Leaves out: refusals that need state (a replay, a session's hash mismatch): the receiver and the
session count those under their own names.

Network controls: which check fails, and the ``got`` value each message quotes (formatted, never
evaluated).
"""

from __future__ import annotations

from hv_emu.errors import GuestFault


class PacketError(GuestFault):
    """A packet refused by a stateless check: ``reason`` names the drop counter, ``fld`` the
    field, ``expected``/``got`` the values. The sender (or a forger) is at fault."""

    reason = "malformed"

    def __init__(self, fld: str, expected: str, got: str) -> None:
        self.fld = fld
        self.expected = expected
        self.got = got
        super().__init__(f"update packet {fld}: expected {expected}, got {got} ({self.reason})")


class Truncated(PacketError):
    reason = "truncated"


class Oversize(PacketError):
    reason = "oversize"


class LengthMismatch(PacketError):
    reason = "length_mismatch"


class BadMagic(PacketError):
    reason = "bad_magic"


class BadVersion(PacketError):
    reason = "bad_version"


class BadType(PacketError):
    reason = "bad_type"


class BadFlags(PacketError):
    reason = "bad_flags"


class BadReserved(PacketError):
    reason = "bad_reserved"


class IndexOutOfRange(PacketError):
    reason = "index_oob"


class BadManifest(PacketError):
    """A MANIFEST whose fields contradict each other or the header (before any crypto)."""

    reason = "bad_manifest"
