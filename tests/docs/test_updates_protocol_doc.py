"""docs/PROTOCOL.md is the source of truth: its tables must agree with the code."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from guest_tool import manifest_file
from hv_emu.updates import packet_errors, packets, receiver, service, session
from hv_emu.updates.format import HEADER_SIZE
from hv_emu.updates.packets import HEADER_FIELDS, HEADER_LEN, MANIFEST_FIELDS, PacketType
from hv_emu.updates.receiver import ReceiverConfig
from tests.rigs.netupdate import rig

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "PROTOCOL.md").read_text()


def table(heading: str) -> list[list[str]]:
    """Rows of the first table under ``## heading`` (header and rule rows left out)."""
    section = DOC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def doc_type(code: str) -> str:
    return code if code.endswith("s") else f"u{struct.calcsize('>' + code) * 8}"


def test_common_header_table_matches_the_struct() -> None:
    rows = table("Common header")
    offset = 0
    assert [row[2] for row in rows] == [name for name, _, _ in HEADER_FIELDS]
    for row, (_, code, rule) in zip(rows, HEADER_FIELDS, strict=True):
        size = struct.calcsize(">" + code)
        got = (int(row[0]), int(row[1]), row[3], row[4].strip("`"))
        assert got == (offset, size, doc_type(code), rule)
        offset += size
    assert offset == HEADER_LEN == 32


def test_manifest_table_matches_the_fec_struct() -> None:
    rows = table("MANIFEST payload")
    assert rows[0][:3] == ["0", str(HEADER_SIZE), "bundle_header"]
    offset = HEADER_SIZE
    for row, (name, code, meaning) in zip(rows[1:], MANIFEST_FIELDS, strict=False):
        size = struct.calcsize(">" + code)
        assert row == [str(offset), str(size), name, doc_type(code), meaning]
        offset += size
    names = [row[2] for row in rows[len(MANIFEST_FIELDS) + 1 :]]
    assert names == ["bundle_signature", "page_hashes", "manifest_signature", "work"]
    assert f"b\"{packets.MANIFEST_DOMAIN.decode()[:-1]}\\x00\"" in DOC
    assert rows[len(MANIFEST_FIELDS) + 1][0] == str(offset)


def test_manifest_file_table_matches_the_struct() -> None:
    rows = table("Sign once, push anywhere (`guest_tool/manifest_file.py`)")
    offset = 0
    for row, (name, code, rule) in zip(rows, manifest_file.FILE_FIELDS, strict=True):
        size = struct.calcsize(">" + code)
        assert [*row[:4], row[4].strip("`")] == [str(offset), str(size), name, doc_type(code), rule]
        offset += size
    assert "a 10-byte header" in DOC and offset == 10
    assert f"{manifest_file.MAX_FILE:,} bytes" in DOC
    assert f"1 to {manifest_file.MAX_KEY}" in DOC


def test_types_and_constants_are_as_documented() -> None:
    assert "1 MANIFEST, 2 HASHPAGE, 3 SYMBOL" in DOC
    assert [t.value for t in PacketType] == [1, 2, 3]
    assert f"at most {packets.MAX_DATAGRAM} bytes" in DOC or "1472" in DOC
    assert packets.max_pages(64) == 75 and "at most 75 page commitments" in DOC
    assert "P <= 37 hash pages, 3,256" in DOC and (packets.max_pages(64) - 1) // 2 * 88 == 3256
    assert "35 commitments: 1,496 symbols" in DOC
    assert (packets.max_pages(384) - 1) // 2 * 88 == 1496
    assert f"{packets.WORK_BITS} zero bits" in DOC and "2^18" in DOC


def _code_counters() -> set[str]:
    source = Path(receiver.__file__).read_text()
    counted = set(re.findall(r'counters\["(\w+)"\]', source))
    # A session answers with the counter a page or symbol counts under.
    counted |= set(re.findall(r'return "(\w+)"', Path(session.__file__).read_text()))
    counted |= {"installed", "service_rejected"}  # counted through a conditional expression
    errors = {cls.reason for cls in vars(packet_errors).values()
              if isinstance(cls, type) and issubclass(cls, packet_errors.PacketError)}
    return counted | errors - {"malformed"}


def test_every_counter_is_documented() -> None:
    documented = set(re.findall(r"`(\w+)`", DOC))
    missing = _code_counters() - documented
    assert missing == set(), f"counters the doc does not name: {missing}"


def test_check_order_table_names_only_real_counters() -> None:
    rows = table("Check order (`receiver.py`)")
    assert [int(row[0]) for row in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        counter = row[3].strip("`")
        assert counter in _code_counters(), counter


def test_numbers_are_the_defaults() -> None:
    rows = {row[0]: row[1] for row in table("Numbers")}
    c = ReceiverConfig()
    assert rows["max_sessions"] == str(c.max_sessions)
    assert rows["max_object"] == f"{c.max_object >> 20} MiB of body"
    assert rows["max_symbols"] == str(c.max_symbols)
    assert rows["verify_rate, verify_burst"].startswith(
        f"{c.verify_rate:g} manifest checks per second, burst {c.verify_burst}")
    assert rows["bad_manifest_memory"] == f"{c.bad_manifest_memory} hashes"
    assert "max_jump" not in rows  # the version window is the update service's, not the receiver's
    assert f"at most {service.MAX_VERSION_JUMP:,} ahead" in DOC and "Versions" in DOC
    megabytes = round(rig().receiver.memory_bound() / 1e6)
    assert f"about {megabytes} MB" in rows["`memory_bound()` with these"]
