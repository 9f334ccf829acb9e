"""The exit tracer: one line per VM exit with the right facts, the summary by reason, the CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import capstone

from guest_tool.assemble import assemble
from guest_tool.programs import build_program
from hv_emu.debug.trace import ExitTracer, TracedExit
from hv_emu.exits import Failed, Fault, Handled, Hypercall, PortOut
from hv_emu.machine import Machine, MachineConfig
from hv_emu.memory.walk import PagingState

BIN = Path(sys.executable).parent
LINE = re.compile(
    r"^ *(?P<t>\d+\.\d{6}) (?P<reason>[A-Z_]+) +(?P<cs>[0-9a-f]{4}):(?P<rip>[0-9a-f]{8,16}) "
    r"(?P<rest>.*) (?P<took>\d+\.\d\dus)$"
)
GUEST = """
    lea rbx, [rip + name]
    xor eax, eax
    vmcall                      # get_vmmcall_number("get_status") -> RAX = 1
    mov edx, 0xe9
    mov al, 'A'
    out dx, al
    mov eax, 1
    cpuid
    hlt
name: .asciz "get_status"
"""


def traced_machine(source: str) -> tuple[Machine, ExitTracer, io.StringIO, io.StringIO]:
    machine = Machine(MachineConfig(timeout=10), console=io.BytesIO())
    lines, records = io.StringIO(), io.StringIO()
    tracer = ExitTracer(machine.vcpu, machine.bus, machine.hypercalls, lines=lines,
                        records=records)  # fmt: skip
    machine.exit_observers.append(tracer)
    machine.load(assemble(source, mode=64, address=0x100000))
    return machine, tracer, lines, records


def offset_of(source: str, mnemonic: str) -> int:
    """Where the first instruction ``mnemonic`` lands in the image (disassembled by capstone)."""
    code = assemble(source, mode=64, address=0)
    cs = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return next(insn.address for insn in cs.disasm(code, 0) if insn.mnemonic == mnemonic)


def test_each_exit_is_one_line_with_reason_place_instruction_and_action() -> None:
    machine, tracer, lines, records = traced_machine(GUEST)
    result = machine.run()
    assert result.halted
    text = lines.getvalue().splitlines()
    assert text[0].split()[:3] == ["t(s)", "reason", "cs:rip"]
    parsed = [LINE.match(line) for line in text[1:]]
    assert all(parsed), text
    reasons = [m["reason"] for m in parsed if m]
    assert reasons == ["VMCALL", "IO_INSTRUCTION", "CPUID", "HLT"]
    vmcall, out, cpuid, hlt = (m for m in parsed if m)
    # CS:RIP is the trapping instruction's own address, even where RIP has moved past it.
    assert int(vmcall["rip"], 16) == 0x100000 + offset_of(GUEST, "vmcall")
    assert int(out["rip"], 16) == 0x100000 + offset_of(GUEST, "out")
    assert int(hlt["rip"], 16) == 0x100000 + offset_of(GUEST, "hlt")
    assert int(vmcall["cs"], 16) == machine.vcpu.reg("cs")
    assert "vmcall [0f 01 c1]" in vmcall["rest"] and "get_vmmcall_number -> rax=0x1" in vmcall[
        "rest"]
    assert "out dx, al [ee]" in out["rest"] and "value=0x41" in out["rest"]
    assert "-> debugcon" in out["rest"]
    assert "cpuid [0f a2]" in cpuid["rest"] and "eax=0x1" in cpuid["rest"]
    assert "stop: halt" in hlt["rest"]
    # The JSON lines say the same, as numbers.
    objs = [json.loads(line) for line in records.getvalue().splitlines()]
    assert [o["reason"] for o in objs] == reasons
    assert objs[0]["rip"] == int(vmcall["rip"], 16) and objs[0]["registers"]["rax"] == 0
    assert objs[1]["registers"] == {"port": 0xE9, "size": 1, "value": 0x41}
    assert all(o["seconds"] >= 0 for o in objs)
    assert {r: len(s.times) for r, s in tracer.stats.items()} == {
        "VMCALL": 1, "IO_INSTRUCTION": 1, "CPUID": 1, "HLT": 1}


def test_summary_counts_exits_by_reason_like_perf_kvm_stat() -> None:
    machine, tracer, _lines, _records = traced_machine(
        "mov edx, 0xe9\n mov ecx, 5\n again: out dx, al\n loop again\n hlt")
    machine.run()
    summary = tracer.summary().splitlines()
    assert summary[0] == "Analyze events for all VCPUs:"
    assert summary[2].split() == ["VM-EXIT", "Samples", "Samples%", "Time%", "Min", "Time",
                                  "Max", "Time", "Avg", "time"]  # fmt: skip
    rows = {line.split()[0]: line.split() for line in summary[4:-2]}
    assert rows["IO_INSTRUCTION"][1:3] == ["5", "83.33%"]
    assert rows["HLT"][1:3] == ["1", "16.67%"]
    assert summary[-1].startswith("Total Samples:6, Total events handled time:")


def test_a_fault_is_traced_where_it_happened() -> None:
    machine, _tracer, lines, _records = traced_machine("mov rax, [0x7fff00000000]\n hlt")
    result = machine.run()
    assert isinstance(result.exit, Fault)
    last = lines.getvalue().splitlines()[-1]
    match = LINE.match(last)
    assert match and match["reason"] == "EXCEPTION_NMI"
    assert int(match["rip"], 16) == result.exit.rip and "fault: " in last


def test_trace_of_built_exits_without_running() -> None:
    """Exits built by hand, as dispatch tests do: the tracer reads only what it must."""
    machine = Machine(MachineConfig(timeout=10))
    machine.load(b"\xf4")
    tracer = ExitTracer(machine.vcpu, machine.bus, machine.hypercalls)
    paging = PagingState(0, 0, 0, 0)
    call = tracer.trace(Hypercall(7, (1, 2, 3, 4, 5), 64, 0x100003, paging),
                        Handled(registers={"rax": 0}), 1e-6)  # fmt: skip
    assert isinstance(call, TracedExit) and call.rip == 0x100000
    assert call.action == "unknown number -> rax=0x0"
    assert call.registers == {"rax": 7, "rbx": 1, "rcx": 2, "rdx": 3}
    out = tracer.trace(PortOut(0x80, 1, 0x12), Handled(), 0.0)
    assert out.action == "-> no device"
    fault = Fault("#GP", 0, 13, 64, 0x18, 0x100000, 0x100000, "hlt [f4]")
    assert tracer.trace(fault, Failed(fault), 0.0).action == "fault: #GP"


def test_cli_trace_and_trace_json(tmp_path: Path) -> None:
    (tmp_path / "hello.bin").write_bytes(build_program("hello", mode=64))
    done = subprocess.run(
        [str(BIN / "hv-emu"), "run", "hello.bin", "--trace", "--trace-json", "exits.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the guest\n"
    err = done.stderr.splitlines()
    exits = [line for line in err if LINE.match(line)]
    assert len(exits) == len("hello from the guest\n") + 1
    assert "Analyze events for all VCPUs:" in err
    assert err[-1].startswith("hv-emu: guest halted")
    records = [json.loads(line) for line in (tmp_path / "exits.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in records] == ["IO_INSTRUCTION"] * 21 + ["HLT"]
    assert bytes(r["registers"]["value"] for r in records[:-1]) == b"hello from the guest\n"
