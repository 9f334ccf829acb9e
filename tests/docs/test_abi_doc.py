"""docs/ABI.md is the source of truth: abi.py, the built-in hypercall modules (a module's number is
its position in builtin.BUILTINS), the live handler table, asm/ and the HC_ constants guest_tool
generates agree with it."""

from __future__ import annotations

import re
from pathlib import Path

from guest_tool.programs import HVABI, hypercall_prelude, parse_equates
from hv_emu.cpuid import ABI_VERSION, HYPERVISOR_SIGNATURE
from hv_emu.hypercalls.abi import MAX_NAME, SLOTS, Rc
from hv_emu.hypercalls.builtin import BUILTINS, NUMBERS
from hv_emu.machine import Machine, MachineConfig
from hv_emu.updates.service import DB_STATES

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
    assert documented == {nr: name for name, nr in NUMBERS.items()}
    assert Machine(MachineConfig()).hypercalls.names() == documented


def test_return_codes_table_matches_abi() -> None:
    documented = {int(row[0]): row[1] for row in table_after("## Return codes")}
    assert documented == {int(rc): rc.name for rc in Rc}


def test_asm_constants_match_abi() -> None:
    equates = parse_equates(HVABI.read_text(encoding="utf-8"))
    for rc in Rc:
        assert equates[f"RC_{rc.name}"] == rc
    assert equates["MAX_NAME"] == MAX_NAME
    rcs = {k for k in equates if k.startswith("RC_")}
    assert len(rcs) == len(Rc), "hvabi.s has constants abi.py lacks"
    hc = {k for k in equates if k.startswith("HC_")}
    assert not hc, "hvabi.s defines hypercall numbers: guest_tool generates those from BUILTINS"


def test_generated_hc_constants_match_the_functions_table() -> None:
    documented = {int(row[0]): row[1] for row in table_after("## Functions")}
    generated = parse_equates(hypercall_prelude())
    assert generated == {f"HC_{name.upper()}": nr for nr, name in documented.items()}


def test_doc_states_the_numbers_the_code_uses() -> None:
    assert f"at most {MAX_NAME} bytes" in DOC
    assert f"{SLOTS} slots" in DOC
    assert f"ABI version: **{ABI_VERSION}**" in DOC
    assert "`hv-emu\\0\\0\\0\\0\\0\\0`" in DOC and HYPERVISOR_SIGNATURE == b"hv-emu" + b"\0" * 6
    assert re.search(r"cap \(16 MiB", DOC)


def test_every_builtin_module_is_the_row_of_the_functions_table_at_its_position() -> None:
    documented = {int(row[0]): row[1] for row in table_after("## Functions")}
    assert dict(enumerate(spec.name for spec in BUILTINS)) == documented
    assert {nr: name for name, nr in NUMBERS.items()} == documented


def test_codes_each_builtin_declares_are_the_codes_its_row_names() -> None:
    rows = {row[1]: row[3] for row in table_after("## Functions")}
    for spec in BUILTINS:
        named = {rc for rc in Rc if re.search(rf"\b{rc.name}\b", rows[spec.name])}
        assert spec.returns == named, f"{spec.name}: module declares {sorted(spec.returns)}, " \
                                      f"its row in docs/ABI.md names {sorted(named)}"


def test_asm_constants_match_the_builtin_modules() -> None:
    equates = parse_equates(HVABI.read_text(encoding="utf-8"))
    hc = parse_equates(hypercall_prelude())
    assert hc == {f"HC_{spec.name.upper()}": nr for nr, spec in enumerate(BUILTINS)}
    for spec in BUILTINS:
        for rc in spec.returns:
            assert equates[f"RC_{rc.name}"] == rc


def test_get_status_example_has_the_lines_the_machine_writes() -> None:
    """The example in "get_status" has the keys a machine without a NIC writes, in its order, and
    the ``db_state`` row names every state the update service reports."""
    section = DOC.split("### `get_status`", 1)[1]
    example = section.split("```\n", 2)[1].splitlines()
    machine = Machine(MachineConfig())
    written = machine.status_text().splitlines()
    assert example[0].split()[0] == written[0].split()[0] == "hv-emu"
    assert [line.split(": ")[0] for line in example[1:]] == [
        line.split(": ")[0] for line in written[1:]]
    row = next(r for r in table_after("### `get_status`") if r[0] == "db_state")
    assert set(re.findall(r"`(\w+)`", row[1])) >= set(DB_STATES)
    assert {line.split(": ")[1] for line in written if line.startswith("db_state")} <= set(
        DB_STATES)
