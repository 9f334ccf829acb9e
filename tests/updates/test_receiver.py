"""The receiver against the attack classes of docs/PROTOCOL.md (A-C, E, F45, G): each
test checks the drop counter, that the installed version did not move (unless it should), and
(``Rig.feed`` asserts it on every packet) that memory stays within ``memory_bound()``."""

from __future__ import annotations

import random
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.bundle import make_bundle
from guest_tool.encoding import carousel, encode_update
from hv_emu.updates.packets import MAX_DATAGRAM, Packet, PacketType, parse_packet
from hv_emu.updates.receiver import ReceiverConfig
from tests.rigs.netupdate import (
    KEY,
    NOW,
    Forger,
    database_text,
    encoded,
    flooded,
    reheader,
    rig,
    signed,
    stamp,
)

V = 5  # the version pushed; the rig starts at version 2
UPDATE = encoded(V, lines=600)
ALL = list(carousel(UPDATE, rounds=2))


def flip(packet: bytes, at: int) -> bytes:
    return packet[:at] + bytes([packet[at] ^ 1]) + packet[at + 1 :]


def opened() -> object:
    """A rig whose receiver holds a verified session for UPDATE (manifest only)."""
    r = rig(installed=2)
    r.feed([UPDATE.manifest])
    assert len(r.receiver.sessions) == 1
    return r


def test_genuine_update_installs_through_the_service() -> None:
    r = rig(installed=2)
    r.feed(ALL, until_installed=V)
    assert r.installed == V and r.receiver.counters["installed"] == 1
    accepted = r.events.of("update_accepted")[-1]
    assert accepted["source"] == "network" and accepted["db_version"] == V
    assert r.receiver.sessions == {} and r.receiver.memory_in_use() == 0


# ------------------------------------------------------------------------------ A: malformed
@pytest.mark.parametrize(
    ("payload", "counter"),
    [
        (b"", "truncated"), (b"H", "truncated"), (UPDATE.symbols[0][:31], "truncated"),
        (UPDATE.symbols[0][:-1], "length_mismatch"), (UPDATE.symbols[0] + b"\0", "length_mismatch"),
        (b"XVDB" + UPDATE.symbols[0][4:], "bad_magic"),
        (UPDATE.symbols[0][:4] + b"\x01" + UPDATE.symbols[0][5:], "bad_version"),
        (UPDATE.symbols[0][:5] + b"\x06" + UPDATE.symbols[0][6:], "bad_type"),
        (UPDATE.symbols[0][:7] + b"\x01" + UPDATE.symbols[0][8:], "bad_flags"),
        (UPDATE.symbols[0][:31] + b"\x01" + UPDATE.symbols[0][32:], "bad_reserved"),
        (bytes(MAX_DATAGRAM + 1), "oversize"),
        (reheader(UPDATE.symbols[0], index=len(UPDATE.symbols)), "index_oob"),
        (reheader(UPDATE.symbols[0], index=2**32 - 1), "index_oob"),
        (reheader(UPDATE.symbols[0], count=0), "index_oob"),
    ],
)
def test_malformed_packets_are_dropped_and_counted(payload: bytes, counter: str) -> None:
    r = opened()
    r.feed([payload])
    assert r.receiver.counters[counter] == 1
    assert r.installed == 2 and r.receiver.counters["symbol_accepted"] == 0


def test_count_and_length_mismatch_for_a_live_session() -> None:
    r = opened()
    symbol = parse_packet(UPDATE.symbols[0])
    r.feed(UPDATE.pages[:1])
    r.feed([reheader(UPDATE.symbols[0], count=len(UPDATE.symbols) + 1)])
    assert r.receiver.counters["count_mismatch"] == 1
    h = symbol.header
    short = Packet.build(PacketType.SYMBOL, h.update_id, h.db_version, 1, h.count,
                         symbol.payload[:-1]).raw
    long = Packet.build(PacketType.SYMBOL, h.update_id, h.db_version, 2, h.count,
                        symbol.payload + b"\0").raw
    r.feed([short, long])
    assert r.receiver.counters["bad_len"] == 2 and r.receiver.counters["symbol_accepted"] == 0


# ------------------------------------------------------------------------------ B: authentication
def test_flipped_byte_is_dropped_alone_and_the_genuine_copy_still_counts() -> None:
    r = opened()
    r.feed([flip(UPDATE.pages[0], 40)])
    assert r.receiver.counters["hash_mismatch"] == 1
    r.feed([UPDATE.pages[0], flip(UPDATE.symbols[0], 100)])
    assert r.receiver.counters["hash_mismatch"] == 2
    r.feed([UPDATE.symbols[0]])
    assert r.receiver.counters["symbol_accepted"] == 1
    r.feed(ALL, until_installed=V)
    assert r.installed == V


def test_nothing_is_buffered_ahead_of_its_manifest_or_page() -> None:
    r = rig(installed=2)
    r.feed(UPDATE.symbols[:10] + UPDATE.pages[:1])
    assert r.receiver.counters["no_session"] == 11 and r.receiver.memory_in_use() == 0
    r.feed([UPDATE.manifest])
    before = r.receiver.memory_in_use()
    r.feed(UPDATE.symbols[:10])
    assert r.receiver.counters["no_page_yet"] == 10 and r.receiver.memory_in_use() == before


def _manifest_signed_by(key: Ed25519PrivateKey, *, version: int = V) -> bytes:
    bundle, sig = signed(version, key=key)
    return encode_update(bundle, sig, key, update_id=77).manifest


def test_unknown_key_and_wrong_key_under_a_trusted_id() -> None:
    stranger = Ed25519PrivateKey.generate()
    r = rig(installed=2)
    r.feed([_manifest_signed_by(stranger)])
    assert r.receiver.counters["untrusted_key"] == 1 and r.receiver.counters["verifications"] == 0
    # The stranger's manifest relabelled with the trusted key id: the signatures fail.
    forged = bytearray(parse_packet(_manifest_signed_by(stranger)).payload)
    genuine = parse_packet(UPDATE.manifest).payload
    forged[32:40] = genuine[32:40]
    r.feed([stamp(Packet.build(PacketType.MANIFEST, 77, V, 0, 1, bytes(forged)).raw)])
    assert r.receiver.counters["bad_signature"] == 1 and r.receiver.sessions == {}
    assert r.installed == 2


def test_sig_alg_other_than_the_keys_is_refused_before_crypto() -> None:
    payload = bytearray(parse_packet(UPDATE.manifest).payload)
    payload[40] = 2  # RSA-PSS: the length no longer fits, so also try a fitting forgery
    r = rig(installed=2)
    r.feed([stamp(Packet.build(PacketType.MANIFEST, 1, V, 0, 1, bytes(payload)).raw)])
    assert r.receiver.counters["length_mismatch"] == 1
    payload[40] = 9  # an algorithm nobody knows
    r.feed([stamp(Packet.build(PacketType.MANIFEST, 1, V, 0, 1, bytes(payload)).raw)])
    assert r.receiver.counters["bad_manifest"] == 1 and r.receiver.counters["verifications"] == 0


def test_caps_are_checked_before_crypto() -> None:
    r = rig(installed=2, config=ReceiverConfig(max_object=1000))
    r.feed([UPDATE.manifest])
    assert r.receiver.counters["too_large"] == 1 and r.receiver.counters["verifications"] == 0


def test_bad_signature_once_then_known_bad_without_a_second_verify() -> None:
    tampered = stamp(flip(UPDATE.manifest, 32 + 100))  # in the FEC block: the manifest sig
    r = rig(installed=2)
    r.feed([tampered])
    assert r.receiver.counters["bad_signature"] == 1 and r.receiver.counters["verifications"] == 1
    r.feed([tampered] * 5)
    assert r.receiver.counters["known_bad_manifest"] == 5
    assert r.receiver.counters["verifications"] == 1 and r.installed == 2


def test_manifest_signature_must_carry_the_domain() -> None:
    from guest_tool.bundle import sign

    packet = parse_packet(UPDATE.manifest)
    body = packet.payload[:-72]
    naked = sign(KEY, packet.header.to_bytes() + body)  # no "hv-emu manifest v2" prefix
    r = rig(installed=2)
    r.feed([stamp(Packet.build(PacketType.MANIFEST, packet.header.update_id, V, 0, 1,
                               body + naked + bytes(8)).raw)])
    assert r.receiver.counters["bad_signature"] == 1 and r.receiver.sessions == {}


def test_all_zero_signatures_are_rejected() -> None:
    packet = parse_packet(UPDATE.manifest)
    zeroed = packet.payload[:-72] + bytes(64) + bytes(8)
    r = rig(installed=2)
    r.feed([stamp(Packet.build(PacketType.MANIFEST, packet.header.update_id, V, 0, 1,
                               zeroed).raw)])
    assert r.receiver.counters["bad_signature"] == 1 and r.installed == 2


def test_signed_manifest_for_the_wrong_body_is_discarded_at_the_end() -> None:
    bundle, sig = signed(V)
    header, body = bundle[:80], bundle[80:]
    wrong = bytes(reversed(body))  # same length, other bytes: the signer's bug (or malice)
    lying = encode_update(header + wrong, sig, KEY, update_id=99)
    r = rig(installed=2)
    r.feed(carousel(lying, rounds=2))
    assert r.receiver.counters["object_mismatch"] == 1 and r.installed == 2
    assert r.service.rejected == 1 and r.receiver.sessions == {}
    assert r.receiver.counters["known_bad_manifest"] > 0  # its later copies cost a hash


# ------------------------------------------------------------------------------ C: versions
def test_replay_of_old_and_current_updates_is_stale_without_crypto() -> None:
    r = rig(installed=2)
    r.feed(ALL, until_installed=V)
    verifications = r.receiver.counters["verifications"]
    stale = r.receiver.counters["stale"]
    r.feed(ALL)  # the current update again
    old = list(carousel(encoded(3, lines=100), rounds=1))
    r.feed(old)
    assert r.receiver.counters["stale"] - stale == len(ALL) + len(old)
    assert r.receiver.counters["verifications"] == verifications and r.installed == V


def test_same_version_other_content_is_stale() -> None:
    r = rig(installed=2)
    r.feed(ALL, until_installed=V)
    bundle, sig = signed(V, body=database_text(99))
    twin = encode_update(bundle, sig, KEY, update_id=12345)
    before = r.receiver.counters["stale"]
    r.feed(carousel(twin))
    assert r.receiver.counters["stale"] - before == len(list(carousel(twin)))
    assert r.receiver.counters["verifications"] == 1 and r.service.accepted == 2


def test_expired_manifest_and_a_clock_set_back() -> None:
    bundle, sig = signed(V, issued_at=NOW - 7200, expires_at=NOW - 3600)
    r = rig(installed=2)
    r.feed([encode_update(bundle, sig, KEY, update_id=5).manifest])
    assert r.receiver.counters["expired"] == 1
    # The guest (or anyone) sets the host clock back a day: the time floor still rules.
    r.receiver.wall_clock = lambda: NOW - 86400 * 2
    r.service.time_floor = NOW - 60
    r.feed([encode_update(bundle, sig, KEY, update_id=6).manifest])
    assert r.receiver.counters["expired"] == 2 and r.receiver.counters["verifications"] == 0


def test_version_jump_beyond_the_services_window() -> None:
    r = rig(installed=2)
    r.service.max_jump = 10  # the one version policy is the service's (docs/UPDATE-FORMAT.md)
    r.feed([_manifest_signed_by(KEY, version=13)])
    assert r.receiver.counters["version_jump"] == 1 and r.receiver.counters["verifications"] == 0
    r.feed([_manifest_signed_by(KEY, version=12)])
    assert r.receiver.counters["session_opened"] == 1


def test_vmcall_then_network_is_stale() -> None:
    r = rig(installed=2)
    bundle, sig = signed(V, body=database_text(V, 600))
    assert r.service.submit(bundle, sig, "vmcall") == 0
    r.feed(ALL)
    assert r.receiver.counters["stale"] == len(ALL) and r.receiver.counters["verifications"] == 0


# ------------------------------------------------------------------------------ E: floods
def test_random_update_ids_never_grow_the_session_table() -> None:
    rng = random.Random(4)
    r = opened()
    forged = [reheader(UPDATE.symbols[0], update_id=rng.getrandbits(32)) for _ in range(500)]
    r.feed(forged)
    assert r.receiver.counters["no_session"] == 500 and len(r.receiver.sessions) == 1


def test_same_forged_manifest_bytes_cost_one_verification() -> None:
    forger = Forger(UPDATE, random.Random(5), stamped=True)
    one = forger.manifest_packet()
    r = rig(installed=2)
    r.feed([one] * 200, step=1.0)
    assert r.receiver.counters["verifications"] == 1
    assert r.receiver.counters["known_bad_manifest"] == 199


def test_superseded_manifests_cannot_hold_the_slots() -> None:
    r = rig(installed=2)
    r.feed(ALL, until_installed=V)
    older = [encoded(v, lines=50).manifest for v in (3, 4)]
    r.feed(older)
    assert r.receiver.counters["stale"] == 2 and r.receiver.sessions == {}


def test_newer_version_evicts_the_older_session() -> None:
    r = rig(installed=2, config=ReceiverConfig(max_sessions=1))
    newer = encoded(V + 1, lines=200)
    r.feed([UPDATE.manifest, newer.manifest])
    assert r.receiver.counters["session_evicted"] == 1
    assert [s.db_version for s in r.receiver.sessions.values()] == [V + 1]
    r.feed([UPDATE.manifest])  # the older one cannot push the newer out
    assert r.receiver.counters["sessions_full"] == 1
    r.feed(carousel(newer, rounds=2), until_installed=V + 1)
    assert r.installed == V + 1


def test_slow_trickle_still_completes() -> None:
    r = rig(installed=2)
    r.feed(ALL, step=1.0, until_installed=V)  # one packet a second: no timeout aborts it
    assert r.installed == V


def test_forged_symbols_are_all_dropped_and_change_nothing() -> None:
    forger = Forger(UPDATE, random.Random(6))
    quiet, noisy = rig(installed=2), rig(installed=2)
    legit = quiet.feed(ALL, until_installed=V)
    total = noisy.feed(flooded(ALL, 20, forger.symbol_packet), until_installed=V)
    assert total == 21 * legit and noisy.installed == quiet.installed == V
    drops = ("hash_mismatch", "bad_fec_id", "no_page_yet", "duplicate", "no_session")
    extra = sum(noisy.receiver.counters[d] - quiet.receiver.counters[d] for d in drops)
    assert extra == 20 * legit and noisy.receiver.counters["hash_mismatch"] > 0
    assert noisy.receiver.counters["symbol_accepted"] == quiet.receiver.counters["symbol_accepted"]


# ------------------------------------------------------------------------------ Hypothesis
@st.composite
def mutated_stream(draw: st.DrawFn) -> list[bytes]:
    """Genuine packets with a few bytes changed, cut or replaced by random ones."""
    out = []
    for _ in range(draw(st.integers(1, 12))):
        packet = bytearray(draw(st.sampled_from([UPDATE.manifest, *UPDATE.pages,
                                                 *UPDATE.symbols[:8]])))
        for _ in range(draw(st.integers(0, 3))):
            packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            packet = packet[: draw(st.integers(0, len(packet)))]
        out.append(bytes(packet) if draw(st.integers(0, 9)) else draw(st.binary(max_size=80)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_stream())
def test_mutated_streams_never_raise_nor_install(stream: list[bytes]) -> None:
    r = opened()
    r.feed(UPDATE.pages)
    r.feed(stream)  # on_datagram and poll must swallow everything as counted drops
    assert UPDATE.source_symbols > 8 and r.installed == 2  # too few genuine symbols to decode
    assert r.receiver.counters["datagrams"] == len(UPDATE.pages) + 1 + len(stream)


def test_a_signed_symbol_of_another_source_block_never_reaches_the_decoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signer's bug (or a stolen key) committing to symbols with SBN 1 in a one-block update:
    the raptorq decoder would panic on them; the receiver drops them (bad_fec_id) and the
    session cannot complete."""
    import guest_tool.encoding as encoding_module

    real = encoding_module.encode_symbols

    def wrong_block(*args: object, **kwargs: object) -> tuple[bytes, ...]:
        return tuple(b"\x01" + p[1:] for p in real(*args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(encoding_module, "encode_symbols", wrong_block)
    bundle, sig = signed(V)
    lying = encode_update(bundle, sig, KEY, update_id=3)
    monkeypatch.undo()
    r = rig(installed=2)
    r.feed(carousel(lying, rounds=2))
    assert r.receiver.counters["bad_fec_id"] == 2 * len(lying.symbols)  # two rounds
    assert r.receiver.counters["symbol_accepted"] == 0 and r.installed == 2


def test_rsa_pss_3072_update_over_the_network() -> None:
    """384-byte signatures: the manifest holds 35 page commitments; the same path installs it."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from hv_emu.updates.packets import max_pages
    from hv_emu.updates.verify import TrustStore

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    trust = TrustStore()
    trust.add_pem(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
                  "rsa test key")
    body = database_text(V, 12, 6000)  # K = 103: N = 207 symbols in 3 pages, 7 page symbols
    bundle, sig = make_bundle(body, kind="ndb", version=V, private_key=key,
                              issued_at=NOW - 60, expires_at=NOW + 3600)
    update = encode_update(bundle, sig, key, update_id=8)
    assert len(parse_packet(update.manifest).payload) == 80 + 16 + 384 + 16 * 7 + 384 + 8
    assert max_pages(384) == 35
    r = rig(trust=trust)
    r.feed(carousel(update, rounds=2), until_installed=V)
    assert r.installed == V and r.receiver.counters["verifications"] == 1


def test_a_manifest_issued_ahead_of_a_slow_clock_is_retried_once_the_clock_catches_up() -> None:
    """Issued in the future is the one refusal time can lift: it must not be remembered as bad,
    or the carousel's copies of a genuine manifest would be ignored for good."""
    r = rig()  # nothing installed yet: no time floor either
    r.receiver.wall_clock = lambda: NOW - 3600  # the hypervisor's clock is an hour slow
    r.feed([UPDATE.manifest])
    assert r.receiver.counters["expired"] == 1 and r.installed == 0
    r.receiver.wall_clock = time.time  # NTP fixed it
    r.clock.now += 1.0  # a verification token again
    r.feed(ALL, until_installed=V)
    assert r.installed == V and r.receiver.counters["known_bad_manifest"] == 0


def test_a_manifest_without_its_work_stamp_costs_one_hash_and_no_check() -> None:
    """The stamp is the first check after the header's: a forgery that did not pay 2^18 hashes
    (any bit changed in a genuine manifest, too) is ``no_work``, never a candidate."""
    forger = Forger(UPDATE, random.Random(6))
    r = rig(installed=2)
    r.feed([forger.manifest_packet() for _ in range(50)] + [flip(UPDATE.manifest, 40)], step=1.0)
    assert r.receiver.counters["no_work"] == 51
    assert r.receiver.counters["verifications"] == 0 and r.receiver.pending_checks() == 0
    r.feed([UPDATE.manifest])  # the genuine, stamped once by its signer: checked and opened
    assert r.receiver.counters["verifications"] == 1 and len(r.receiver.sessions) == 1
