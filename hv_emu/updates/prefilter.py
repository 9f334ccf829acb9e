"""The MANIFEST pre-filter on raw bytes: ``UpdateReceiver._on_manifest`` without building objects.

Models: the O(1) pre-filter of ``docs/PROTOCOL.md`` ("Check order", steps 11-21) for the raw
front path (``front.py``). A flood's forged manifests are built to pass every cheap check (a
fresh update id, a version inside the window, the trusted key id, a canonical random signature),
so each one costs the pre-filter in full; ``Manifest.from_payload`` built three objects and a
tuple of page hashes for it. ``take_manifest`` reads the bundle header and the FEC fields with one
``struct`` unpack each and checks what ``Manifest.from_payload``, ``BundleHeader.from_bytes`` and
``format.signature_length`` check, in their order: each of them is ``bad_manifest``, the payload
length last ``length_mismatch``; then the receiver's own steps, in its order, with the same
counters; the datagram joins the candidate pool as the layered path would put it there (its
fingerprint and its bytes), to be parsed when it is drawn for a check.

Follows: ``docs/PROTOCOL.md`` ("MANIFEST payload", "Check order"), ``packets.Manifest``,
``format.BundleHeader``, ``session.held_symbols`` (the same arithmetic, on the raw fields).

Leaves out: nothing of ``_on_manifest``'s checks. ``tests/updates/test_front_path.py`` holds this
path to ``on_datagram``'s counters on mutated manifests (every field of the bundle header and of
the FEC parameters a target).

Network controls: every byte of the manifest. It cannot reach the pool with a manifest
``_on_manifest`` would refuse, nor spend more than one SHA-256 and two unpacks on one.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hv_emu.updates.format import FIELDS, FORMAT_VERSION, HEADER_SIZE, ContentType, SigAlg
from hv_emu.updates.format import MAGIC as BUNDLE_MAGIC
from hv_emu.updates.format import signature_length as _signature_length
from hv_emu.updates.packets import (
    FEC_PAYLOAD_ID_SIZE,
    FEC_RAPTORQ,
    HASH_SHA256_128,
    HASH_SIZE,
    HEADER_LEN,
    MANIFEST_FIELDS,
    MAX_BLOCK_SOURCE,
    MAX_BLOCKS,
    MAX_SYMBOL_SIZE,
    SYMBOL_ALIGNMENT,
    WORK_SIZE,
    digest,
    has_work,
    max_pages,
    page_count_for,
    top_count,
)
from hv_emu.updates.session import BLOCK_SLACK, Intact

if TYPE_CHECKING:
    from hv_emu.updates.receiver import UpdateReceiver

_BUNDLE = struct.Struct(">" + "".join(code for _, code, _ in FIELDS))
_FEC = struct.Struct(">" + "".join(code for _, code, _ in MANIFEST_FIELDS))
_CONTENT_TYPES = frozenset(int(t) for t in ContentType)
_SIG_LENGTHS = {int(a): _signature_length(a) for a in SigAlg}


def take_manifest(rx: UpdateReceiver, data: bytes, uid: int, dbv: int, index: int, count: int,
                  intact: Intact | None) -> bool:  # fmt: skip
    """``rx._on_manifest`` of the datagram ``data`` (its common header already checked and read:
    ``uid``, ``dbv``, ``index``, ``count``); False when ``intact`` failed (nothing counted)."""
    counters = rx.counters
    fingerprint = digest(data)
    if not has_work(fingerprint):  # no work stamp: the one hash above, no more
        counters["no_work"] += 1
        return True
    if fingerprint in rx._bad:  # a replay of bytes that already failed: one hash, no more
        counters["known_bad_manifest"] += 1
        return True
    shape = _shape(data, dbv, index, count)
    if isinstance(shape, str):
        counters[shape] += 1
        return True
    body_len, symbols, held, key_id, sig_alg, expires_at = shape
    c = rx.config
    if (uid, dbv) in rx.sessions:
        counters["manifest_known"] += 1
    elif fingerprint in rx._checking:
        counters["manifest_checking"] += 1
    elif dbv not in rx.service.acceptable_versions:
        counters["version_jump"] += 1
    elif body_len > c.max_object or symbols > c.max_symbols or held > c.symbol_memory:
        counters["too_large"] += 1
    elif (key := rx.service.trust.lookup(key_id)) is None or key.alg != sig_alg:
        counters["untrusted_key"] += 1
    elif expires_at <= rx._trusted_now():
        counters["expired"] += 1
    elif intact is not None and not intact():
        return False
    else:
        rx._offer(fingerprint, bytes(data))
    return True


def _shape(data: bytes, dbv: int, index: int,
           count: int) -> str | tuple[int, int, int, bytes, int, int]:  # fmt: skip
    """The counter ``Manifest.from_payload`` refuses the payload under, or the fields the
    pre-filter needs: (body_len, N, ``held_symbols``, key id, sig_alg, expires_at)."""
    n = len(data) - HEADER_LEN  # the payload's length
    if index != 0 or count != 1 or n < HEADER_SIZE + _FEC.size:
        return "bad_manifest"
    # fmt: off
    (magic, version, header_len, bundle_version, issued_at, expires_at, key_id, sig_alg,
     content, reserved, body_len, _sha) = _BUNDLE.unpack_from(data, HEADER_LEN)
    # fmt: on
    sig_len = _SIG_LENGTHS.get(sig_alg)
    if (
        magic != BUNDLE_MAGIC or version != FORMAT_VERSION or header_len != HEADER_SIZE
        or reserved or content not in _CONTENT_TYPES or bundle_version < 1
        or expires_at <= issued_at or sig_len is None
    ):  # fmt: skip
        return "bad_manifest"
    fec, hash_alg, pages, size, symbols, k_b, z = _FEC.unpack_from(data, HEADER_LEN + HEADER_SIZE)
    if (
        fec != FEC_RAPTORQ or hash_alg != HASH_SHA256_128 or bundle_version != dbv
        or not 0 < size <= MAX_SYMBOL_SIZE or size % SYMBOL_ALIGNMENT or body_len == 0
        or not 0 < k_b <= MAX_BLOCK_SOURCE
    ):  # fmt: skip
        return "bad_manifest"
    k = -(-body_len // size)
    if z != -(-k // k_b) or z > MAX_BLOCKS or symbols % z or symbols // z < k_b:
        return "bad_manifest"
    top = top_count(pages, sig_len)
    if pages != page_count_for(symbols) or top > max_pages(sig_len):
        return "bad_manifest"
    if n != HEADER_SIZE + _FEC.size + sig_len + HASH_SIZE * top + sig_len + WORK_SIZE:
        return "length_mismatch"
    # session.held_symbols on the raw fields: each block holds at most min(N_b, K_b + slack).
    per_block = symbols // z
    last_length = min(k_b * size, body_len - (z - 1) * k_b * size)
    last = -(-last_length // size)
    held = ((z - 1) * min(per_block, k_b + BLOCK_SLACK)
            + min(per_block, last + BLOCK_SLACK)) * (FEC_PAYLOAD_ID_SIZE + size)  # fmt: skip
    return body_len, symbols, held, key_id, sig_alg, expires_at
