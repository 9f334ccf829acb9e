"""The benchmarks' 25,000-signature database (``field_sized_ndb`` of
``benchmarks/scanner_process.py``): deterministic, in rfxn.ndb's style, and a database hv-emu and
its cache load."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.scanner_process import field_sized_ndb
from hv_emu.scanner.cache import Cache
from hv_emu.scanner.database_files import compile_files
from hv_emu.scanner.signatures import parse_database
from tests.conftest import RFXN

pytestmark = pytest.mark.skipif(not RFXN.is_file(), reason="rfxn.ndb is not beside the checkout")


def test_it_is_rfxn_then_generated_lines_in_its_style(tmp_path: Path) -> None:
    data = field_sized_ndb(3_000)
    assert data == field_sized_ndb(3_000)  # deterministic
    signatures = parse_database(data, kind="ndb", source="field")
    real = parse_database(RFXN.read_bytes(), kind="ndb", source="rfxn")
    assert len(signatures) == 3_000
    assert [s.name for s in signatures[: len(real)]] == [s.name for s in real]
    generated = signatures[len(real) :]
    assert {s.name for s in generated} == {f"{{HEX}}Bench.Generated.{n}"
                                           for n in range(1, len(generated) + 1)}  # fmt: skip
    widths = [s.parts[0].variants[0][0].width for s in generated]
    assert min(widths) >= 10 and max(widths) <= 346  # rfxn's own range
    bodies = {s.parts[0].variants[0][0] for s in signatures}
    assert len(bodies) >= len(signatures) - (len(real) - len({s.parts for s in real}))
    path = tmp_path / "field.ndb"
    path.write_bytes(data)
    cache = Cache(tmp_path / "cache")
    compile_files([path], cache=cache)
    warm = compile_files([path], cache=cache)
    assert warm.count == 3_000 and warm.scan(generated[-1].parts[0].variants[0][0].data) != []
