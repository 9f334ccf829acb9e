"""docs/ABI.md is the source of truth: abi.py, the live handler table and asm/ agree with it."""

from __future__ import annotations

import re
from pathlib import Path

from guest_tool.programs import INCLUDE_DIR, parse_equates
from hv_emu.cpuid import ABI_VERSION, HYPERVISOR_SIGNATURE
from hv_emu.hypercalls.abi import MAX_NAME, NAMES, SLOTS, Nr, Rc
from hv_emu.machine import Machine, MachineConfig

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ABI.md").read_text(encoding="utf-8")


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first Markdown table after ``heading``."""
    section = DOC.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row


def test_functions_table_matches_abi_and_the_live_handler_table() -> None:
    documented = {int(row[0]): row[1] for row in table_after("## Functions")}
    assert documented == {int(nr): name for nr, name in NAMES.items()}
    assert Machine(MachineConfig()).hypercalls.names() == documented


def test_return_codes_table_matches_abi() -> None:
    documented = {int(row[0]): row[1] for row in table_after("## Return codes")}
    assert documented == {int(rc): rc.name for rc in Rc}


def test_asm_constants_match_abi() -> None:
    equates = parse_equates((INCLUDE_DIR / "hvabi.s").read_text(encoding="utf-8"))
    for nr in Nr:
        assert equates[f"HC_{NAMES[nr].upper()}"] == nr
    for rc in Rc:
        assert equates[f"RC_{rc.name}"] == rc
    assert equates["MAX_NAME"] == MAX_NAME
    hc = {k for k in equates if k.startswith("HC_")}
    rcs = {k for k in equates if k.startswith("RC_")}
    assert len(hc) == len(Nr) and len(rcs) == len(Rc), "hvabi.s has constants abi.py lacks"


def test_doc_states_the_numbers_the_code_uses() -> None:
    assert f"at most {MAX_NAME} bytes" in DOC
    assert f"{SLOTS} slots" in DOC
    assert f"ABI version: **{ABI_VERSION}**" in DOC
    assert "`hv-emu\\0\\0\\0\\0\\0\\0`" in DOC and HYPERVISOR_SIGNATURE == b"hv-emu" + b"\0" * 6
    assert re.search(r"cap \(16 MiB", DOC)
