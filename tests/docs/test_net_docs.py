"""Every network module says what it models, which spec it follows, what it leaves out and what the
network controls; parsers carry a threat table (ARCHITECTURE rules 3 and 8)."""

from __future__ import annotations

from types import ModuleType

import pytest

import hv_emu.net
from hv_emu.net import backends, config, frames, intercept, pcap, switch

MODULES = [hv_emu.net, config, frames, intercept, pcap, backends, switch]
PARSERS = [frames, intercept, pcap, backends, switch]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_module_docstring_sections(module: ModuleType) -> None:
    doc = module.__doc__ or ""
    for section in ("Models:", "Follows:", "Leaves out:", "controls"):
        assert section in doc, f"{module.__name__}: no {section!r}"


@pytest.mark.parametrize("module", PARSERS, ids=lambda m: m.__name__)
def test_parsers_have_threat_tables(module: ModuleType) -> None:
    doc = module.__doc__ or ""
    assert "| Threat" in doc and "Mitigation" in doc
