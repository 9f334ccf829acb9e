"""The raw MANIFEST pre-filter (``updates/prefilter.py``) refuses exactly what
``Manifest.from_payload`` refuses, under the same counter, and otherwise reads the same fields
and the same ``held_symbols``: Hypothesis draws the FEC parameters (pages, T, N, K_b, Z) and
bundle-header fields near their edges, with the payload at its right length or not."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.updates.format import HEADER_SIZE
from hv_emu.updates.packet_errors import PacketError
from hv_emu.updates.packets import (
    HASH_SIZE,
    MANIFEST_FIELDS,
    Manifest,
    Packet,
    PacketType,
    parse_packet,
    top_count,
)
from hv_emu.updates.prefilter import _shape
from hv_emu.updates.session import held_symbols
from tests.rigs.netupdate import encoded

V = 4
GENUINE = parse_packet(encoded(V, lines=60).manifest)
FEC = struct.Struct(">" + "".join(code for _, code, _ in MANIFEST_FIELDS))
edge = st.sampled_from([0, 1, 2, 7, 8, 88, 255, 256, 257, 1024, 1432, 1440, 4096, 4097, 65535])


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    """A MANIFEST whose FEC parameters agree with its body length (several blocks, index pages,
    more than ``MAX_BLOCKS``), or are drawn near their edges; one field then perhaps broken."""
    bundle = bytearray(GENUINE.payload[:HEADER_SIZE])
    if draw(st.booleans()):
        size = draw(st.integers(1, 179).map(lambda t: 8 * t))
        k_b = draw(st.integers(1, 64) | st.sampled_from([1, 4096]))
        body = draw(st.integers(1, 400_000))
        k = -(-body // size)
        z = -(-k // k_b)
        n = z * (k_b + draw(st.integers(0, 3)))
        pages = -(-n // 88)
    else:
        size, k_b, z, n, pages = (draw(edge) for _ in range(5))
        body = draw(st.integers(1, 3_000_000) | edge)
    bundle[52:56] = (body & 0xFFFFFFFF).to_bytes(4, "big")
    if draw(st.booleans()):  # a bundle-header field: version, times, alg, type, reserved, length
        at = draw(st.sampled_from([4, 6, 15, 23, 31, 48, 49, 50, 51, 52, 55]))
        bundle[at] = draw(st.integers(0, 255))
    fields = [draw(st.sampled_from([6, 6, 6, 5])), draw(st.sampled_from([2, 2, 2, 1])),
              pages & 0xFFFF, size, n & 0xFFFFFFFF, k_b & 0xFFFF, z & 0xFFFF]
    if draw(st.booleans()):
        fields[draw(st.integers(2, 6))] += draw(st.sampled_from([-1, 1]))
    limits = [(1 << 8 * struct.calcsize(code)) - 1 for _, code, _ in MANIFEST_FIELDS]
    fec = FEC.pack(*(min(max(0, f), most) for f, most in zip(fields, limits, strict=True)))
    top = top_count(pages & 0xFFFF, 64)
    tail = bytes(64 + HASH_SIZE * top + 64 + draw(st.sampled_from([0, 0, 0, -1, 1, 16])))
    payload = bytes(bundle) + fec + tail[: 1440 - HEADER_SIZE - 16]
    return Packet.build(PacketType.MANIFEST, 7, draw(st.sampled_from([V, V, V + 1])), 0, 1,
                        payload).raw


@settings(max_examples=600, deadline=None)
@given(manifests())
def test_the_raw_prefilter_reads_a_manifest_as_from_payload(raw: bytes) -> None:
    try:
        packet = parse_packet(raw)
    except PacketError:
        return  # over the datagram's size: parse_packet refuses it before the pre-filter
    h = packet.header
    got = _shape(raw, h.db_version, h.index, h.count)
    try:
        manifest = Manifest.from_payload(h, packet.payload)
    except PacketError as bad:
        assert got == bad.reason
        return
    m = manifest
    assert got == (m.header.body_len, m.symbol_count, held_symbols(m), m.header.key_id,
                   m.header.sig_alg, m.header.expires_at)


def test_the_genuine_manifest_passes() -> None:
    h = GENUINE.header
    assert isinstance(_shape(GENUINE.raw, h.db_version, h.index, h.count), tuple)
