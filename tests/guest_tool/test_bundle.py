"""The publisher's side: key generation and loading, bundles, and their files on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
)

from guest_tool.bundle import make_bundle, write_bundle
from guest_tool.keys import ALGORITHMS, generate_keypair, load_private_key, load_public_key
from hv_emu.errors import ConfigError, DatabaseError, UpdateRejected
from hv_emu.hypercalls.abi import Rc
from hv_emu.updates.format import ContentType, SigAlg, key_id_of, parse_bundle
from hv_emu.updates.service import acceptable_versions
from hv_emu.updates.verify import TrustStore, verify_bundle
from tests.conftest import RFXN

NDB = b"Hv.Demo-1:0:*:deadbeefcafe\n"
DB = b"Hv.Demo-1=deadbeefcafe\n"
NOW = 1_800_000_000


@pytest.fixture(scope="module", params=ALGORITHMS)
def keypair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A key pair of each algorithm, written by ``generate_keypair``."""
    stem = tmp_path_factory.mktemp("keys") / "demo"
    return generate_keypair(stem, alg=request.param)


def trust_of(pub: Path) -> TrustStore:
    store = TrustStore()
    store.load_file(pub)
    return store


# --------------------------------------------------------------------------- keys


def test_generated_files(keypair: tuple[Path, Path]) -> None:
    key_path, pub_path = keypair
    assert key_path.name == "demo.key" and pub_path.name == "demo.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert pub_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    private, public = load_private_key(key_path), load_public_key(pub_path)
    assert key_id_of(private.public_key()) == key_id_of(public)


def test_algorithm_choice(keypair: tuple[Path, Path]) -> None:
    private = load_private_key(keypair[0])
    if isinstance(private, rsa.RSAPrivateKey):
        assert private.key_size == 3072
    else:
        assert isinstance(private, ed25519.Ed25519PrivateKey)


def test_stem_keeps_its_dots(tmp_path: Path) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "release.v2")
    assert (key_path.name, pub_path.name) == ("release.v2.key", "release.v2.pub")


@pytest.mark.parametrize("existing", ["demo.key", "demo.pub"])
def test_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "demo")
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert {p.name for p in tmp_path.iterdir()} == {existing}


def test_unknown_algorithm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key algorithm 'dsa'"):
        generate_keypair(tmp_path / "demo", alg="dsa")
    assert not list(tmp_path.iterdir())


def test_bad_private_keys(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        load_private_key(keypair[1])  # the public key given by mistake
    small = tmp_path / "small.key"
    small.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")
        )
    )
    with pytest.raises(ConfigError, match="encrypted private keys are not supported"):
        load_private_key(small)


def test_bad_public_keys(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="is a private key"):
        load_public_key(keypair[0])
    with pytest.raises(ConfigError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")


# --------------------------------------------------------------------------- make_bundle


def test_make_bundle_round_trips_through_verification(keypair: tuple[Path, Path]) -> None:
    private = load_private_key(keypair[0])
    bundle, signature = make_bundle(
        NDB, kind="ndb", version=7, private_key=private, issued_at=NOW, expires_at=NOW + 60
    )
    header, body = parse_bundle(bundle)
    assert body == NDB
    assert header.content_type is ContentType.NDB
    rsa_key = isinstance(private, rsa.RSAPrivateKey)
    assert header.sig_alg == (SigAlg.RSA_PSS_3072 if rsa_key else SigAlg.ED25519)
    update = verify_bundle(
        bundle, signature, trust_of(keypair[1]), versions=acceptable_versions(6), now=NOW + 1
    )
    assert (update.db_version, update.kind, update.body) == (7, "ndb", NDB)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 0}, "version must be between 1"),
        ({"version": 2**64}, "version must be between 1"),
        ({"expires_at": NOW}, "must come after issue time"),
        ({"expires_at": 2**64}, "does not fit the header's 64-bit field"),
        ({"kind": "hdb"}, "unknown database kind 'hdb'"),
    ],
)
def test_make_bundle_refuses_bad_arguments(
    keypair: tuple[Path, Path], changes: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "kind": "ndb",
        "version": 1,
        "issued_at": NOW,
        "expires_at": NOW + 1,
    } | changes
    with pytest.raises(ConfigError, match=message):
        make_bundle(NDB, private_key=load_private_key(keypair[0]), **arguments)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- write_bundle


@pytest.mark.parametrize(("suffix", "text"), [(".ndb", NDB), (".db", DB)])
def test_write_bundle_takes_the_kind_from_the_suffix(
    tmp_path: Path, keypair: tuple[Path, Path], suffix: str, text: bytes
) -> None:
    db_path = tmp_path / f"sigs{suffix}"
    db_path.write_bytes(text)
    out, sig = write_bundle(
        db_path,
        version=3,
        key_path=keypair[0],
        out=tmp_path / "update.hvdb",
        now=NOW,
        expires_in_days=2,
    )
    assert (out.name, sig.name) == ("update.hvdb", "update.hvdb.sig")
    update = verify_bundle(
        out.read_bytes(), sig.read_bytes(), trust_of(keypair[1]), versions=acceptable_versions(0),
        now=NOW,
    )
    assert update.kind == suffix[1:]
    assert update.header.expires_at == NOW + 2 * 86400
    assert update.header.issued_at == NOW


def test_explicit_kind_overrides_the_suffix(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    db_path = tmp_path / "sigs.txt"
    db_path.write_bytes(DB)
    out, _ = write_bundle(
        db_path, version=1, key_path=keypair[0], out=tmp_path / "u", kind="db", now=NOW
    )
    assert parse_bundle(out.read_bytes())[0].kind == "db"


def test_validator_sees_the_database_and_can_refuse_it(
    tmp_path: Path, keypair: tuple[Path, Path]
) -> None:
    db_path = tmp_path / "sigs.ndb"
    db_path.write_bytes(b"broken line\n")
    seen: list[tuple[bytes, str, str]] = []

    def validate(body: bytes, kind: str, source: str) -> None:
        seen.append((body, kind, source))
        raise DatabaseError(source, 1, 0, "expected Name:TargetType:Offset:HexSignature")

    with pytest.raises(DatabaseError, match=r"sigs\.ndb:1"):
        write_bundle(db_path, version=1, key_path=keypair[0], out=tmp_path / "u", validate=validate)
    assert seen == [(b"broken line\n", "ndb", str(db_path))]
    assert not (tmp_path / "u").exists() and not (tmp_path / "u.sig").exists()


@pytest.mark.parametrize(
    ("db_name", "changes", "message"),
    [
        ("sigs.ndb", {"version": 0}, "--version must be at least 1"),
        ("sigs.ndb", {"version": 2**63}, "reserved: the hypervisor refuses"),
        ("sigs.ndb", {"version": 2**64 - 1}, "reserved: the hypervisor refuses"),
        ("sigs.hdb", {}, "cannot tell the database kind"),
        ("missing.ndb", {}, "cannot read"),
        ("sigs.ndb", {"expires_in_days": 0}, "positive number of days"),
        ("sigs.ndb", {"expires_in_days": float("inf")}, "positive number of days"),
        ("sigs.ndb", {"expires_in_days": float("nan")}, "positive number of days"),
        ("sigs.ndb", {"kind": "zip"}, "unknown database kind"),
    ],
)
def test_write_bundle_refuses_with_one_line(
    tmp_path: Path,
    keypair: tuple[Path, Path],
    db_name: str,
    changes: dict[str, object],
    message: str,
) -> None:
    for name in ("sigs.ndb", "sigs.hdb"):
        (tmp_path / name).write_bytes(NDB)
    arguments: dict[str, object] = {"version": 1, "key_path": keypair[0], "out": tmp_path / "u"}
    with pytest.raises(ConfigError, match=message) as info:
        write_bundle(tmp_path / db_name, **(arguments | changes))  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert not (tmp_path / "u").exists()


def test_real_database_bundles_and_verifies(tmp_path: Path, keypair: tuple[Path, Path]) -> None:
    if not RFXN.is_file():
        pytest.skip(f"{RFXN} (the rfxn.ndb ClamAV signatures) is not present on this machine")
    out, sig = write_bundle(RFXN, version=2, key_path=keypair[0], out=tmp_path / "rfxn.hvdb")
    update = verify_bundle(
        out.read_bytes(),
        sig.read_bytes(),
        trust_of(keypair[1]),
        versions=acceptable_versions(1),
        now=int(out.stat().st_mtime),
    )
    assert update.body == RFXN.read_bytes()
    assert update.body.count(b"\n") >= 1869
    # The same files replayed once installed are refused before any signature check.
    with pytest.raises(UpdateRejected) as info:
        verify_bundle(out.read_bytes(), b"", TrustStore(), versions=acceptable_versions(2), now=0)
    assert info.value.code == Rc.STALE_VERSION
