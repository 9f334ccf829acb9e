"""Update verification: trust store, every rejection reason, the check order, hostile input."""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest_tool.bundle import make_bundle, sign
from guest_tool.keys import PrivateKey
from hv_emu.errors import ConfigError, UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.format import HEADER_SIZE, BundleHeader, SigAlg, key_id_of, signing_message
from hv_emu.updates.service import acceptable_versions
from hv_emu.updates.verify import (
    CHECK_ORDER,
    CLOCK_SKEW,
    TrustStore,
    VerifiedUpdate,
    check_body,
    verify_bundle,
    verify_header,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "UPDATE-FORMAT.md"
BODY = b"Hv.Demo-1:0:*:deadbeefcafe\nHv.Demo-2:0:*:0102030405\n"
ISSUED = 1_700_000_000
EXPIRES = ISSUED + 86400
NOW = ISSUED + 60


AnyKey = Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def pem(private_key: AnyKey) -> bytes:
    return private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def ed_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def trust(ed_key: Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey) -> TrustStore:
    store = TrustStore()
    store.add_pem(pem(ed_key), "ed.pub")
    store.add_pem(pem(rsa_key), "rsa.pub")
    return store


def bundle_of(
    key: PrivateKey, version: int = 7, body: bytes = BODY, **times: int
) -> tuple[bytes, bytes]:
    return make_bundle(
        body,
        kind="ndb",
        version=version,
        private_key=key,
        issued_at=times.get("issued_at", ISSUED),
        expires_at=times.get("expires_at", EXPIRES),
    )


def resign(key: PrivateKey, header: BundleHeader, body: bytes) -> tuple[bytes, bytes]:
    """A bundle with an arbitrary (possibly lying) header, properly signed by ``key``."""
    raw = header.to_bytes()
    return raw + body, sign(key, signing_message(raw))


def verify(bundle: bytes, signature: bytes, trust: TrustStore, **kw: int) -> VerifiedUpdate:
    installed = kw.pop("installed_version", 0)
    options = {"versions": acceptable_versions(installed), "now": NOW} | kw
    return verify_bundle(bundle, signature, trust, **options)  # type: ignore[arg-type]


def code_of(bundle: bytes, signature: bytes, trust: TrustStore, **kw: int) -> Rc:
    with pytest.raises(UpdateRejected) as info:
        verify(bundle, signature, trust, **kw)
    assert info.value.reason
    return Rc(info.value.code)


# --------------------------------------------------------------------------- trust store


def test_trust_store_binds_each_key_to_its_algorithm(
    trust: TrustStore, ed_key: Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    assert len(trust) == 2
    ed_id, rsa_id = key_id_of(ed_key.public_key()), key_id_of(rsa_key.public_key())
    assert trust.key_ids == (ed_id, rsa_id)
    ed, rs = trust.lookup(ed_id), trust.lookup(rsa_id)
    assert ed is not None and ed.alg is SigAlg.ED25519
    assert rs is not None and rs.alg is SigAlg.RSA_PSS_3072
    assert trust.describe().splitlines() == [
        f"{ed_id.hex()} ed25519 ed.pub",
        f"{rsa_id.hex()} rsa_pss_3072 rsa.pub",
    ]
    assert "no trusted update keys" in TrustStore().describe()


def test_same_key_twice_is_trusted_once(ed_key: Ed25519PrivateKey) -> None:
    store = TrustStore()
    first = store.add_pem(pem(ed_key), "a.pub")
    assert store.add_pem(pem(ed_key), "b.pub") is first
    assert len(store) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "2048 bits"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "not accepted"),
    ],
)
def test_other_key_types_and_sizes_are_refused(make: Callable[[], AnyKey], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrustStore().add_pem(pem(make()), "other.pub")


def test_private_key_and_garbage_are_refused(ed_key: Ed25519PrivateKey) -> None:
    private_pem = ed_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(ConfigError, match=r"demo.key: is a private key"):
        TrustStore().add_pem(private_pem, "demo.key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        TrustStore().add_pem(b"hello", "junk.pub")


def test_load_file(tmp_path: Path, ed_key: Ed25519PrivateKey) -> None:
    path = tmp_path / "demo.pub"
    path.write_bytes(pem(ed_key))
    store = TrustStore()
    assert store.load_file(path).source == str(path)
    with pytest.raises(ConfigError, match="cannot read") as info:
        store.load_file(tmp_path / "missing.pub")
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- acceptance


@pytest.mark.parametrize("key_name", ["ed_key", "rsa_key"])
def test_valid_bundle_is_accepted(
    key_name: str, trust: TrustStore, request: pytest.FixtureRequest
) -> None:
    key = request.getfixturevalue(key_name)
    bundle, signature = bundle_of(key)
    update = verify(bundle, signature, trust, installed_version=6)
    assert update.body == BODY
    assert update.db_version == 7
    assert update.kind == "ndb"
    assert len(signature) == (64 if key_name == "ed_key" else 384)


# --------------------------------------------------------------------------- each rejection


def test_tampered_body(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    tampered = bundle[:-2] + b"0\n"
    assert code_of(tampered, signature, trust) == Rc.BAD_SIGNATURE


@pytest.mark.parametrize("key_name", ["ed_key", "rsa_key"])
def test_tampered_header(key_name: str, trust: TrustStore, request: pytest.FixtureRequest) -> None:
    bundle, signature = bundle_of(request.getfixturevalue(key_name))
    later = bytearray(bundle)
    struct.pack_into(">Q", later, 24, EXPIRES + 365 * 86400)  # extend its own expiry
    assert code_of(bytes(later), signature, trust) == Rc.BAD_SIGNATURE


def test_tampered_signature(trust: TrustStore, rsa_key: rsa.RSAPrivateKey) -> None:
    bundle, signature = bundle_of(rsa_key)
    assert code_of(bundle, bytes([signature[0] ^ 1]) + signature[1:], trust) == Rc.BAD_SIGNATURE


def test_body_swapped_under_a_lying_header(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    # The signer signed a header whose hash names one body; another body of the same length
    # travels with it. The signature is fine; the body hash is not.
    header = BundleHeader.from_bytes(bundle_of(ed_key)[0])
    other = BODY.replace(b"cafe", b"f00d")
    bundle, signature = resign(ed_key, header, other)
    assert code_of(bundle, signature, trust) == Rc.BAD_SIGNATURE


def test_untrusted_key(trust: TrustStore) -> None:
    bundle, signature = bundle_of(Ed25519PrivateKey.generate())
    assert code_of(bundle, signature, trust) == Rc.UNTRUSTED_KEY


def test_algorithm_mismatch(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, _ = bundle_of(ed_key)
    header = dataclasses.replace(BundleHeader.from_bytes(bundle), sig_alg=SigAlg.RSA_PSS_3072)
    lying, _ = resign(ed_key, header, BODY)
    assert code_of(lying, bytes(384), trust) == Rc.UNTRUSTED_KEY


def test_unknown_algorithm(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    header = dataclasses.replace(BundleHeader.from_bytes(bundle_of(ed_key)[0]), sig_alg=9)
    bundle, signature = resign(ed_key, header, BODY)
    assert code_of(bundle, signature, trust) == Rc.UNTRUSTED_KEY


@pytest.mark.parametrize("length", [0, 63, 65, 384])
def test_wrong_signature_length(length: int, trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, _ = bundle_of(ed_key)
    assert code_of(bundle, bytes(length), trust) == Rc.BAD_SIGNATURE


@pytest.mark.parametrize("installed", [7, 8, 2**64 - 1])
def test_stale_version(installed: int, trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert code_of(bundle, signature, trust, installed_version=installed) == Rc.STALE_VERSION


def test_expired(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert verify(bundle, signature, trust, now=EXPIRES - 1)
    assert code_of(bundle, signature, trust, now=EXPIRES) == Rc.EXPIRED


def test_time_floor_outranks_a_clock_set_back(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert code_of(bundle, signature, trust, now=NOW, time_floor=EXPIRES) == Rc.EXPIRED
    assert verify(bundle, signature, trust, now=NOW, time_floor=ISSUED)


def test_issued_in_the_future(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert verify(bundle, signature, trust, now=ISSUED - CLOCK_SKEW)  # within the skew
    assert code_of(bundle, signature, trust, now=ISSUED - CLOCK_SKEW - 1) == Rc.EXPIRED


def test_too_large(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert verify(bundle, signature, trust, max_size=len(bundle))
    assert code_of(bundle, signature, trust, max_size=len(bundle) - 1) == Rc.TOO_LARGE


def test_truncated_and_trailing(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    assert code_of(bundle[:-1], signature, trust) == Rc.MALFORMED
    assert code_of(bundle[: HEADER_SIZE - 1], signature, trust) == Rc.MALFORMED
    assert code_of(bundle + b"\n", signature, trust) == Rc.MALFORMED


# --------------------------------------------------------------------------- the order


def test_size_is_checked_before_anything_is_parsed(trust: TrustStore) -> None:
    assert code_of(b"junk" * 100, b"", trust, max_size=10) == Rc.TOO_LARGE


def test_stale_is_refused_before_any_crypto(trust: TrustStore) -> None:
    # An old version from an unknown signer with a garbage signature: the version decides.
    bundle, _ = bundle_of(Ed25519PrivateKey.generate(), version=3)
    assert code_of(bundle, b"x", trust, installed_version=5) == Rc.STALE_VERSION


def test_untrusted_key_before_signature_length_and_expiry(trust: TrustStore) -> None:
    bundle, _ = bundle_of(Ed25519PrivateKey.generate())
    assert code_of(bundle, b"", trust, now=EXPIRES + 1) == Rc.UNTRUSTED_KEY


def test_expiry_before_signature(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, _ = bundle_of(ed_key)
    assert code_of(bundle, bytes(64), trust, now=EXPIRES) == Rc.EXPIRED


def test_doc_reproduces_check_order() -> None:
    text = DOC.read_text(encoding="utf-8").split("\n## Check order\n", 1)[1]
    rows = [line for line in text.split("\n\n")[1].splitlines() if line.startswith("| ")][1:]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    documented = [(int(n), rule, code.strip("`"), int(number)) for n, rule, code, number in cells]
    expected = [(i, c.rule, c.code.name, int(c.code)) for i, c in enumerate(CHECK_ORDER, 1)]
    assert documented == expected


# --------------------------------------------------------------------------- network path


def test_header_then_body(trust: TrustStore, rsa_key: rsa.RSAPrivateKey) -> None:
    bundle, signature = bundle_of(rsa_key)
    header = verify_header(bundle[:HEADER_SIZE], signature, trust, versions=acceptable_versions(0),
                           now=NOW)
    assert check_body(header, BODY).body == BODY
    with pytest.raises(UpdateRejected) as info:
        check_body(header, BODY[:-1])
    assert info.value.code == Rc.MALFORMED
    with pytest.raises(UpdateRejected) as info:
        check_body(header, BODY.upper())
    assert info.value.code == Rc.BAD_SIGNATURE


def test_header_declaring_too_much_is_refused(trust: TrustStore, ed_key: Ed25519PrivateKey) -> None:
    bundle, signature = bundle_of(ed_key)
    with pytest.raises(UpdateRejected) as info:
        verify_header(
            bundle[:HEADER_SIZE],
            signature,
            trust,
            versions=acceptable_versions(0),
            now=NOW,
            max_size=HEADER_SIZE + len(BODY) - 1,
        )
    assert info.value.code == Rc.TOO_LARGE


# --------------------------------------------------------------------------- hostile input


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=400), st.integers(0, 10), st.integers(0, 2**64))
def test_random_input_is_only_rejected(
    bundle: bytes, signature: bytes, installed: int, now: int
) -> None:
    store = TrustStore()  # no keys: nothing random can pass
    with pytest.raises(UpdateRejected):
        verify_bundle(bundle, signature, store, versions=acceptable_versions(installed),
                      now=now)


@pytest.fixture(scope="module")
def valid_updates(
    ed_key: Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey
) -> dict[str, tuple[bytes, bytes]]:
    return {"ed25519": bundle_of(ed_key), "rsa": bundle_of(rsa_key)}


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.sampled_from(["ed25519", "rsa"]),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=3),
    in_signature=st.booleans(),
    resize=st.integers(-3, 3),
)
def test_any_change_to_a_valid_update_is_rejected(
    trust: TrustStore,
    valid_updates: dict[str, tuple[bytes, bytes]],
    which: str,
    flips: list[tuple[int, int]],
    in_signature: bool,
    resize: int,
) -> None:
    bundle, signature = valid_updates[which]
    target = bytearray(signature if in_signature else bundle)
    for position, mask in flips:
        target[position % len(target)] ^= mask
    target = target[: len(target) + resize] if resize < 0 else target + bytes(resize)
    mutated = bytes(target)
    args = (bundle, mutated) if in_signature else (mutated, signature)
    if args == (bundle, signature):  # the flips cancelled out
        return
    with pytest.raises(UpdateRejected):
        verify_bundle(*args, trust, versions=acceptable_versions(0), now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE), st.binary(max_size=64))
def test_plausible_headers_from_untrusted_keys_are_only_rejected(
    header: bytes, signature: bytes
) -> None:
    raw = bytearray(header)
    raw[:8] = b"HVDB\x00\x01\x00\x50"
    struct.pack_into(">I", raw, 44, 4)
    body = b"abcd"
    struct.pack_into(">32s", raw, 48, hashlib.sha256(body).digest())
    with pytest.raises(UpdateRejected):
        verify_bundle(bytes(raw) + body, signature, TrustStore(), versions=acceptable_versions(0),
                      now=0)
