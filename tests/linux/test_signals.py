"""Signals in the Linux personality: the frame layouts (built and read back, Hypothesis on what
sigreturn parses), the signal system calls' checks, and faults delivered to an assembled
program's handler again and again (docs/ELF.md "Signals")."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.exits import Fault, StopRequest
from hv_emu.linux import sigframe
from hv_emu.linux.numbers import Errno
from hv_emu.linux.sigframe import AltStack, Interrupted, build_frame, restore_frame, siginfo
from hv_emu.memory.walk import read_virt
from tests.rigs.linux import run_program, sys

_U64 = st.integers(0, 2**64 - 1)
_NAMES_64 = sigframe.GREGS_64


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([(64, True), (32, True), (32, False)]),
       st.binary(min_size=800, max_size=800), _U64)  # fmt: skip
def test_any_frame_bytes_read_back_without_raising(kind: tuple[int, bool], raw: bytes,
                                                   flags: int) -> None:  # fmt: skip
    bits, rt = kind
    size = sigframe.frame_size(bits, rt)
    restored = restore_frame(bits, raw[:size], rt=rt, current_flags=flags & 0xFFFFFFFF)
    assert restored.registers["rflags"] & ~(sigframe.FIX_EFLAGS | flags | 0x2) == 0
    assert 0 <= restored.mask < 2**64


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([(64, True), (32, True), (32, False)]),
       st.lists(st.integers(0, 2**32 - 1), min_size=18, max_size=18), _U64)  # fmt: skip
def test_a_built_frame_reads_back_the_interrupted_registers_and_mask(
    kind: tuple[int, bool], values: list[int], mask: int
) -> None:
    bits, rt = kind
    registers = dict(zip(_NAMES_64, values, strict=True))
    registers["rflags"] = 0x202 | (values[-1] & sigframe.FIX_EFLAGS)
    ctx = Interrupted(registers, trapno=14, err=4, cr2=0x1234)
    sp = 0x7FFF_F000 if bits == 32 else 0x7FFF_FFFF_E000
    frame = build_frame(bits, sp=sp, signo=11, info=siginfo(bits, 11, 1, addr=8), ctx=ctx,
                        mask=mask, stack=AltStack(0, 2, 0),
                        handler=0x401000, restorer=0x402000, rt=rt)  # fmt: skip
    assert len(frame.data) == sigframe.frame_size(bits, rt)
    assert frame.address < sp and frame.address % 16 == (8 if bits == 64 else 12)
    back = restore_frame(bits, frame.data, rt=rt, current_flags=0x202)
    names = _NAMES_64 if bits == 64 else (*sigframe.GREGS_32, "rip", "rflags")
    for name in names:
        assert back.registers[name] == registers[name], name
    assert back.mask == mask
    assert frame.entry["rip"] == 0x401000 and frame.entry["rsp"] == frame.address
    pretcode = int.from_bytes(frame.data[: bits // 8], "little")
    assert pretcode == 0x402000


def test_the_x86_64_frame_puts_each_field_where_linux_does() -> None:
    registers = {name: i + 1 for i, name in enumerate(_NAMES_64)}
    frame = build_frame(64, sp=0x10000, signo=4, info=siginfo(64, 4, 2, addr=0x401234),
                        ctx=Interrupted(registers, trapno=6, cr2=5), mask=0x400,
                        stack=AltStack(0x5000, 0, 0x2000), handler=0x401000, restorer=0x402000,
                        rt=True)  # fmt: skip
    data = frame.data
    uc = 8
    assert struct.unpack_from("<Q", data, uc + 40 + 128)[0] == registers["rip"]  # REG_RIP
    assert struct.unpack_from("<Q", data, uc + 40 + 120)[0] == registers["rsp"]  # REG_RSP
    assert struct.unpack_from("<Q", data, uc + 40 + 160)[0] == 6  # trapno
    assert struct.unpack_from("<Q", data, uc + 40 + 184)[0] == 0  # fpstate: NULL
    assert struct.unpack_from("<Q", data, uc + 296)[0] == 0x400  # uc_sigmask
    assert struct.unpack_from("<QiiQ", data, uc + 16) == (0x5000, 0, 0, 0x2000)  # uc_stack
    assert struct.unpack_from("<iiiiQ", data, 312) == (4, 0, 2, 0, 0x401234)  # siginfo
    assert frame.entry["rdi"] == 4 and frame.entry["rsi"] == frame.address + 312
    assert frame.entry["rdx"] == frame.address + 8


#: A handler for SIGSEGV, SIGILL and SIGFPE that logs (signal, si_code, si_addr, RSP % 16 at
#: entry) to the results area, resumes at the address the main code left in R14 and returns
#: through rt_sigreturn.
_HANDLER_64 = """
    jmp main
handler:
    mov [r15], rdi
    mov eax, [rsi + 8]
    mov [r15 + 8], rax
    mov rax, [rsi + 16]
    mov [r15 + 16], rax
    mov rax, rsp
    and rax, 15
    mov [r15 + 24], rax
    add qword ptr [rdx + 40 + 56], 32
    mov rax, [rdx + 40 + 48]
    mov [rdx + 40 + 128], rax
    ret
restorer:
    mov eax, 15
    syscall
main:
    sub rsp, 512
    mov r13, rsp
    lea rax, [rip + handler]
    mov [r13], rax
    mov qword ptr [r13 + 8], 0x04000004
    lea rax, [rip + restorer]
    mov [r13 + 16], rax
    mov qword ptr [r13 + 24], 0
"""


def _install(sig: int) -> str:
    """rt_sigaction(sig, the struct sigaction at R13, NULL, 8)."""
    return sys(64, 13, sig, "[r13]", 0, 8)


def test_faults_in_a_loop_each_reach_the_handler_as_themselves() -> None:
    faults = ""
    # A #PF, a #UD, a #DE and a #GP (a non-canonical address), three times: no #DF, no silent
    # stop at the third ud2 (U15, U61).
    for i in range(3):
        faults += (f"lea r14, [rip + pf{i}]\n mov eax, [8]\n pf{i}:\n"
                   f"lea r14, [rip + ud{i}]\n ud{i}x: ud2\n ud{i}:\n"
                   f"lea r14, [rip + de{i}]\n xor ecx, ecx\n div ecx\n de{i}:\n"
                   f"lea r14, [rip + gp{i}]\n mov rax, 0x8000000000000000\n"
                   f" mov eax, [rax]\n gp{i}:\n")  # fmt: skip
    body = _HANDLER_64 + _install(11) + _install(4) + _install(8) + faults
    run = run_program(body, calls=3 + 4 * 12)  # SA_SIGINFO | SA_RESTORER
    assert isinstance(run.result.exit, StopRequest), run.result.exit
    assert run.results[:3] == [0, 0, 0]
    logs = [run.results[3 + 4 * i : 7 + 4 * i] for i in range(12)]
    for round_ in range(3):
        pf, ud, de, gp = logs[4 * round_ : 4 * round_ + 4]
        assert pf == [11, 1, 8, 8]  # SIGSEGV, SEGV_MAPERR, the address, RSP % 16 == 8
        assert ud[:2] == [4, 2] and ud[3] == 8  # SIGILL, ILL_ILLOPN
        assert de[:2] == [8, 1] and de[3] == 8  # SIGFPE, FPE_INTDIV
        assert gp == [11, 0x80, 0, 8]  # SIGSEGV, SI_KERNEL, no address
    assert run.process.signals.delivered == 12 and run.process.exit_status == 0


def test_a_fault_with_no_handler_keeps_the_fault_report_and_ends_with_128_plus_n() -> None:
    run = run_program("xor ecx, ecx\n div ecx\n")
    assert isinstance(run.result.exit, Fault) and run.result.exit.kind == "#DE"
    assert run.process.killed_by == 8 and run.process.exit_status == 128 + 8


def test_a_fault_in_its_own_handler_kills_as_in_linux() -> None:
    # The handler faults again while SIGSEGV is blocked: force_sig_info kills the process.
    body = _HANDLER_64.replace("handler:\n", "handler:\n mov eax, [16]\n") + _install(11)
    run = run_program(body + "mov eax, [8]\n")
    assert isinstance(run.result.exit, Fault) and run.result.exit.address == 16
    assert run.process.killed_by == 11 and run.process.exit_status == 139


def test_signal_calls_check_their_arguments() -> None:
    body = (
        "sub rsp, 512\n mov r13, rsp\n"
        + sys(64, 13, 11, "[rip + act]", 0, 4)  # sigset size 4
        + sys(64, 13, 9, "[rip + act]", 0, 8)  # SIGKILL cannot be caught
        + sys(64, 13, 65, 0, 0, 8)  # no signal 65
        + sys(64, 14, 7, "[rip + act]", 0, 8)  # bad how
        + sys(64, 62, 2, 10)  # another process
        + sys(64, 62, 1, 0)  # signal 0: does the process exist?
        + sys(64, 234, 1, 1, 0)  # tgkill(1, 1, 0)
        + sys(64, 131, "[rip + small]", 0)  # an alternate stack below MINSIGSTKSZ
        + sys(64, 131, 0, "[r13]")  # read it back: disabled
        + "mov rax, [r13 + 8]\n mov [r15], rax\n add r15, 8\n"
        + sys(64, 14, 0, "[rip + all]", "[r13]", 8)  # block everything
        + sys(64, 14, 0, 0, "[r13]", 8)
        + "mov rax, [r13]\n mov [r15], rax\n add r15, 8\n"
    )
    data = "act: .quad 0, 0, 0, 0\n small: .quad 0x1000, 0, 1024\n all: .quad -1\n"
    run = run_program(body, data=data, calls=13)
    einval, esrch, enomem = -Errno.EINVAL, -Errno.ESRCH, -Errno.ENOMEM
    assert run.results == [einval, einval, einval, einval, esrch, 0, 0, enomem, 0, 2, 0, 0,
                           ((2**64 - 1) & ~((1 << 8) | (1 << 18))) - 2**64]  # fmt: skip


def test_kill_runs_the_handler_when_the_call_returns_and_sigreturn_resumes_after_it() -> None:
    body = """
    jmp main
handler:
    mov [r13 + 32], rdi
    ret
restorer:
    mov eax, 15
    syscall
main:
    sub rsp, 512
    mov r13, rsp
    lea rax, [rip + handler]
    mov [r13], rax
    mov qword ptr [r13 + 8], 0x04000000
    lea rax, [rip + restorer]
    mov [r13 + 16], rax
    mov qword ptr [r13 + 24], 0
    mov qword ptr [r13 + 32], 0
    mov r12, 0x1234
""" + sys(64, 13, 10, "[r13]", 0, 8) + sys(64, 62, 1, 10) + """
    mov rax, [r13 + 32]
    mov [r15], rax
    mov [r15 + 8], r12
""" + sys(64, 62, 1, 15)  # SIGTERM, default action: terminate
    run = run_program(body, calls=4)
    assert run.results == [0, 0, 10, 0x1234]
    assert isinstance(run.result.exit, StopRequest) and "SIGTERM" in run.result.exit.reason
    assert run.process.exit_status == 143


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([32, 64]), st.integers(0, 31), _U64, _U64, _U64,
       st.sampled_from([0, 1, 0x401000]))  # fmt: skip
def test_hostile_exceptions_never_raise(bits: int, vector: int, cr2: int, rsp: int, rip: int,
                                        handler: int) -> None:  # fmt: skip
    from hv_emu.exits import GuestException, Handled, Stopped, Unhandled
    from hv_emu.linux.sigframe import AltStack
    from hv_emu.linux.signal_numbers import SA_ONSTACK, SA_RESTORER, SA_SIGINFO
    from hv_emu.linux.signals import Action

    run = run_program("", bits=bits)
    process, machine = run.process, run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    for sig in range(1, 32):
        process.signals.actions[sig] = Action(handler, SA_SIGINFO | SA_RESTORER | SA_ONSTACK,
                                              rip, rsp)  # fmt: skip
    process.signals.altstack = AltStack(cr2, 0, rsp)
    exit_ = GuestException(vector, None, cr2, bits, rip, {"rsp": rsp, "rip": rip},
                           machine.boot.paging)  # fmt: skip
    outcome = process.on_exception(exit_)
    assert isinstance(outcome, Handled | Stopped | Unhandled)
    if isinstance(outcome, Handled) and handler > 1:
        assert outcome.registers["rip"] == handler


def test_segment_and_alignment_faults_are_sigbus() -> None:
    from hv_emu.exits import GuestException, Handled
    from hv_emu.linux.signal_numbers import SA_RESTORER
    from hv_emu.linux.signals import Action

    for vector, code in ((11, 0x80), (12, 0x80), (17, 1)):
        run = run_program("")
        process, boot = run.process, run.machine.boot
        assert boot is not None and boot.paging is not None
        process.signals.actions[7] = Action(0x401000, SA_RESTORER, 0x401100, 0)
        rsp = boot.stack - 4096
        exit_ = GuestException(vector, None, 0, 64, 0x400100, {"rsp": rsp, "rip": 0x400100},
                               boot.paging)  # fmt: skip
        outcome = process.on_exception(exit_)
        assert isinstance(outcome, Handled) and outcome.registers["rdi"] == 7
        info = read_virt(run.machine.mem, boot.paging, outcome.registers["rsi"], 16)
        assert struct.unpack("<iii", info[:12]) == (7, 0, code)


def test_trace_names_each_system_call_and_shows_the_exceptions(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from guest_tool.assemble import assemble
    from guest_tool.elf_writer import code_address, write_executable
    from hv_emu.cli.main import main

    for bits, exit_call in ((64, "mov eax, 231\n xor edi, edi\n syscall\n"),
                            (32, "mov eax, 252\n xor ebx, ebx\n int 0x80\n")):  # fmt: skip
        call = "syscall" if bits == 64 else "int 0x80"
        kill = ((f"mov eax, 62\n mov edi, 1\n mov esi, 0\n {call}\n" if bits == 64 else
                 f"mov eax, 37\n mov ebx, 1\n mov ecx, 0\n {call}\n")
                + "xor ecx, ecx\n div ecx\n")  # fmt: skip
        code = assemble(kill + exit_call, mode=bits, address=code_address(bits))
        (tmp_path / "prog").write_bytes(write_executable(code, bits=bits))
        capfd.readouterr()
        status = main(["run", str(tmp_path / "prog"), "--trace"])
        err = capfd.readouterr().err
        assert status == 136, err
        assert "kill -> rax=0x0" in err
        assert "EXCEPTION_NMI" in err and "unhandled: SIGFPE with no handler" in err
