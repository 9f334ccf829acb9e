"""The update receiver's raw front path: one datagram's verdict from bytes at fixed offsets.

Models: the fast half of ``UpdateReceiver.on_datagram`` for the datagrams a flood is made of.
``take_payload`` reads the common header with one ``struct`` unpack and decides on the tuple:
a header that fails any stateless check goes to ``packets.parse_packet`` for its exact reason
(the same counter as ``on_datagram``); a stale version is dropped by one comparison; a HASHPAGE
or SYMBOL finds its session by one dict lookup (``no_session`` otherwise), and a SYMBOL goes to
``Session.take_symbol_at`` without a ``Packet`` being built (the session's own checks, one
truncated SHA-256 at most); a MANIFEST goes to the raw pre-filter (``prefilter.py``: one SHA-256,
two unpacks). Only a HASHPAGE for a live session is parsed into objects, as ``on_datagram``
does. The frame's UDP checksum (``intact``) is asked last, just before a packet would be taken
(a candidate offered to the pool, a page or symbol stored): a datagram refused by a cheaper
check is counted under that check, whatever its checksum, and what is taken always had its
checksum verified (``docs/PROTOCOL.md``, "Check order", step 0).

Follows: ``docs/PROTOCOL.md`` ("Common header", "Check order"); ``tests/updates/
test_front_path.py`` holds it to ``on_datagram``'s counters on arbitrary and mutated datagrams.

Leaves out: nothing of ``on_datagram``'s checks; it only orders the UDP checksum after them.

Network controls: every byte of the payload. It cannot make this path accept what
``on_datagram`` refuses, count under another reason, or take a packet whose frame's checksum
is wrong: the first two are tested against ``on_datagram``, the last by the switch's tests.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hv_emu.updates.packet_errors import PacketError
from hv_emu.updates.packets import (
    HEADER_FIELDS,
    HEADER_LEN,
    MAGIC,
    MAX_DATAGRAM,
    PROTO_VERSION,
    PacketType,
    parse_packet,
)
from hv_emu.updates.prefilter import take_manifest
from hv_emu.updates.session import CORRUPT, Intact

if TYPE_CHECKING:
    from hv_emu.updates.receiver import UpdateReceiver

#: The common header as ``packets.parse_packet`` reads it (``HEADER_FIELDS``, big-endian).
_HEADER = struct.Struct(">" + "".join(code for _, code, _ in HEADER_FIELDS))
_TYPES = frozenset(t.value for t in PacketType)
_MANIFEST, _HASHPAGE = PacketType.MANIFEST.value, PacketType.HASHPAGE.value


def take_payload(rx: UpdateReceiver, data: bytes, intact: Intact | None) -> bool:
    """One UDP payload into ``rx``, counted as ``rx.on_datagram`` counts it; False when
    ``intact`` failed (then nothing was counted: the caller counts the bad checksum)."""
    counters = rx.counters
    counters["datagrams"] += 1
    n = len(data)
    if HEADER_LEN <= n <= MAX_DATAGRAM:
        magic, version, ptype, flags, uid, dbv, index, count, plen, reserved = (
            _HEADER.unpack_from(data)
        )
        clean = (
            magic == MAGIC and version == PROTO_VERSION and ptype in _TYPES and not flags
            and not reserved and HEADER_LEN + plen == n and index < count
        )  # fmt: skip
    else:
        clean = False
    if not clean:  # refused by a stateless check: ``parse_packet`` names which
        try:
            packet = parse_packet(data)
        except PacketError as bad:
            counters[bad.reason] += 1
            return True
        h = packet.header  # never reached while the two agree (tested); decided by the header
        ptype, uid, dbv, index, count = h.type.value, h.update_id, h.db_version, h.index, h.count
    if dbv < rx.service.acceptable_versions.start:
        counters["stale"] += 1  # rollback or replay: dropped before any crypto
        return True
    if ptype == _MANIFEST:
        taken = take_manifest(rx, data, uid, dbv, index, count, intact)
    else:
        session = rx.sessions.get((uid, dbv))
        if session is None:
            counters["no_session"] += 1  # nothing is buffered ahead of its manifest
            return True
        if ptype == _HASHPAGE:
            result = session.take_page(parse_packet(data), intact)
            taken = result != CORRUPT
            if taken:
                counters[result] += 1
        else:
            taken = rx._on_symbol_at(session, index, count, data[HEADER_LEN:], intact)
    if not taken:
        counters["datagrams"] -= 1
    return taken
