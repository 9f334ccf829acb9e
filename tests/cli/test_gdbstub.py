"""The GDB stub: its protocol state on a real vCPU, a real gdb stepping across a VMCALL, and a
real gdb told the truth when a signal sent to hv-emu ends the guest it was running."""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.debug.gdbstub import GdbStub
from hv_emu.exits import Halt, StopRequest
from hv_emu.linux.files import FileTable
from hv_emu.machine import Machine, MachineConfig
from tests.rigs.gdb import LOAD, NEEDS_GDB, reg, served
from tests.rigs.gdb import stub_for as rig_stub_for
from tests.rigs.processes import PATIENCE, hv_emu_process

BIN = Path(sys.executable).parent
GUEST = """
    lea rbx, [rip + name]
    xor eax, eax
    vmcall                      # get_vmmcall_number("update_signatures") -> RAX = 2
    mov rdi, rax
    hlt
name: .asciz "update_signatures"
"""
IMAGE = assemble(GUEST, mode=64, address=LOAD)
VMCALL_AT = LOAD + IMAGE.index(b"\x0f\x01\xc1")


def stub_for(image: bytes = IMAGE, config: MachineConfig | None = None) -> GdbStub:
    return rig_stub_for(image, config)


def test_g_gives_gdbs_amd64_layout() -> None:
    stub = stub_for()
    reply = bytes.fromhex(stub.handle(b"g").decode())
    assert len(reply) == 17 * 8 + 7 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4  # 536 bytes
    assert int.from_bytes(reply[16 * 8 : 17 * 8], "little") == LOAD  # RIP after RAX..R15
    assert int.from_bytes(reply[7 * 8 : 8 * 8], "little") == stub.vcpu.reg("rsp")
    assert int.from_bytes(reply[17 * 8 + 4 : 17 * 8 + 8], "little") == stub.vcpu.reg("cs")
    assert stub.handle(b"?") == b"S05"
    assert stub.handle(b"qSupported:swbreak+") == b"PacketSize=4000;swbreak+;hwbreak+"
    assert stub.handle(b"vMustReplyEmpty") == b""
    assert stub.handle(b"m1,zz") == b"E01"


def test_registers_and_memory_can_be_written() -> None:
    stub = stub_for()
    assert stub.handle(b"P0=" + (0x1234).to_bytes(8, "little").hex().encode()) == b"OK"
    assert stub.vcpu.reg("rax") == 0x1234 and reg(stub, "rax") == 0x1234
    assert stub.handle(b"P0=12") == b"E01"  # wrong size
    assert stub.handle(b"P28=" + bytes(16).hex().encode()) == b"E01"  # xmm0: not modelled
    assert stub.handle(b"p999") == b"E01"
    full = bytearray(bytes.fromhex(stub.handle(b"g").decode()))
    full[8:16] = (0xBEEF).to_bytes(8, "little")  # RBX
    assert stub.handle(b"G" + full.hex().encode()) == b"OK" and stub.vcpu.reg("rbx") == 0xBEEF
    assert stub.handle(b"G00") == b"E01"
    assert stub.handle(b"m%x,%x" % (LOAD, len(IMAGE))) == IMAGE.hex().encode()
    assert stub.handle(b"M200000,3:aabbcc") == b"OK"
    assert stub.handle(b"m200000,3") == b"aabbcc"
    assert stub.handle(b"m7fff00000000,4") == b"E14"  # not mapped by the guest's page tables
    assert stub.handle(b"M7fff00000000,1:00") == b"E14"


def test_breakpoint_step_across_the_vmcall_and_run_to_the_end() -> None:
    stub = stub_for()
    assert stub.handle(b"Z0,%x,1" % VMCALL_AT) == b"OK"
    assert stub.handle(b"c") == b"T05swbreak:;"
    assert reg(stub, "rip") == VMCALL_AT and reg(stub, "rax") == 0
    assert stub.handle(b"s") == b"T05"  # one instruction: the VMCALL, hypercall and all
    assert reg(stub, "rip") == VMCALL_AT + 3 and reg(stub, "rax") == 2
    assert stub.machine.hypercalls.calls == 1
    assert stub.handle(b"c") == b"W00"
    assert stub.result is not None and isinstance(stub.result.exit, Halt)
    assert stub.vcpu.reg("rdi") == 2
    assert stub.conclude() is stub.result


def test_continuing_from_a_breakpoint_does_not_stop_on_it_again() -> None:
    loop = assemble("mov ecx, 3\n again: dec ecx\n jnz again\n hlt", mode=64, address=LOAD)
    stub = stub_for(loop)
    again = LOAD + 5
    stub.handle(b"Z0,%x,1" % again)
    counts = []
    for _ in range(3):
        assert stub.handle(b"c") == b"T05swbreak:;"
        counts.append(stub.vcpu.reg("rcx"))
    assert counts == [3, 2, 1]
    assert stub.handle(b"z0,%x,1" % again) == b"OK"
    assert stub.handle(b"c") == b"W00"


def test_kill_ends_the_run_and_detach_lets_it_finish() -> None:
    stub = stub_for()
    assert stub.handle(b"k") == b"OK" and stub.done
    killed = stub.conclude()
    assert isinstance(killed.exit, StopRequest) and killed.exit.reason == "killed by gdb"
    stub = stub_for()
    stub.handle(b"Z0,%x,0" % VMCALL_AT)
    assert stub.handle(b"D;1") == b"OK" and stub.done
    finished = stub.conclude()  # breakpoints are gone: the guest runs to its HLT
    assert isinstance(finished.exit, Halt) and stub.vcpu.reg("rdi") == 2


@pytest.mark.parametrize(("signum", "reply"), [(signal.SIGINT, b"X02"), (signal.SIGTERM, b"X0f"),
                                               (signal.SIGHUP, b"X01")])  # fmt: skip
def test_a_signal_ending_the_run_is_an_x_stop_reply_and_ends_the_session(
    signum: int, reply: bytes
) -> None:
    stub = stub_for(assemble("again: jmp again", mode=64, address=LOAD))
    timer = threading.Timer(0.2, stub.vcpu.interrupt, args=(signum,))
    timer.start()
    assert stub.handle(b"c") == reply  # gdb's signal numbers are Linux's for these
    timer.join()
    assert stub.done  # no waiting for gdb to detach
    assert stub.handle(b"?") == reply and stub.handle(b"c") == reply  # said again if asked
    result = stub.conclude()
    assert isinstance(result.exit, StopRequest) and result.exit.reason.endswith(
        "(Ctrl-C)" if signum == signal.SIGINT else f"({signal.Signals(signum).name})")


def test_a_linux_programs_exit_is_told_with_its_status() -> None:
    program = write_executable(assemble("mov edi, 7\n mov eax, 231\n syscall", mode=64,
                                        address=code_address(64)), bits=64)  # fmt: skip
    machine = Machine(MachineConfig(timeout=10))
    machine.load_elf(program, argv=["seven"], files=FileTable(stdout=io.BytesIO()))
    stub = GdbStub(machine)
    assert stub.handle(b"c") == b"W07"  # exit_group(7): hv-emu run exits with 7
    assert isinstance(stub.conclude().exit, StopRequest)


def test_single_steps_over_a_run_of_vmcalls_handle_each_one() -> None:
    """Unicorn 2.1.4 stops silently at a VMCALL under single-step too; the vCPU finishes it."""
    image = assemble("xor eax, eax\n" + "vmcall\n" * 4 + "hlt", mode=64, address=LOAD)
    stub = stub_for(image)
    replies = [stub.handle(b"s") for _ in range(5)]
    assert replies == [b"T05"] * 5
    assert stub.machine.hypercalls.calls == 4
    assert reg(stub, "rip") == LOAD + 2 + 4 * 3
    assert stub.handle(b"s") == b"W00"


def test_a_fault_is_a_signal_and_the_session_stays() -> None:
    stub = stub_for(assemble("xor ecx, ecx\n div ecx\n hlt", mode=64, address=LOAD))
    assert stub.handle(b"c") == b"T08"  # SIGFPE for #DE
    assert stub.handle(b"?") == b"T08" and not stub.done
    assert reg(stub, "rip") == LOAD + 2


def run_under_gdb(tmp_path: Path, commands: list[str]) -> tuple[str, str, int]:
    (tmp_path / "guest.bin").write_bytes(IMAGE)
    hv = subprocess.Popen(
        [str(BIN / "hv-emu"), "run", "guest.bin", "--gdb", "0", "--timeout", "20"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hv.stderr is not None
        announce = hv.stderr.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", announce).group(1))  # type: ignore[union-attr]
        args = ["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64",
                "-ex", f"target remote :{port}"]  # fmt: skip
        for command in commands:
            args += ["-ex", command]
        gdb = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        _out, err = hv.communicate(timeout=30)
    finally:
        if hv.poll() is None:
            hv.kill()
            hv.wait()
    return gdb.stdout + gdb.stderr, announce + err, hv.returncode


@NEEDS_GDB
def test_real_gdb_steps_across_a_vmcall(tmp_path: Path) -> None:
    gdb, hv_err, status = run_under_gdb(tmp_path, [
        f"break *{VMCALL_AT:#x}", "continue", "info registers rip rax", "x/3xb $rip",
        "stepi", "info registers rip rax", "continue",
    ])  # fmt: skip
    assert f"Breakpoint 1, {VMCALL_AT:#018x} in ?? ()" in gdb, gdb
    values = re.findall(r"^(rip|rax) +(0x[0-9a-f]+)", gdb, re.MULTILINE)
    assert values == [("rip", hex(VMCALL_AT)), ("rax", "0x0"),
                      ("rip", hex(VMCALL_AT + 3)), ("rax", "0x2")]  # fmt: skip
    assert re.search(r":\s+0x0f\s+0x01\s+0xc1", gdb)  # gdb reads the VMCALL's bytes
    assert "exited normally" in gdb
    assert status == 0, hv_err
    assert "hv-emu: guest halted: 1 hypercalls" in hv_err


@NEEDS_GDB
def test_gdb_quitting_early_detaches_and_the_guest_runs_on(tmp_path: Path) -> None:
    gdb, hv_err, status = run_under_gdb(tmp_path, ["stepi", "info registers rip"])
    assert re.search(rf"^rip +{LOAD + 7:#x}", gdb, re.MULTILINE), gdb  # past the 7-byte LEA
    assert status == 0 and "guest halted: 1 hypercalls" in hv_err


def test_a_connection_reset_by_gdb_is_a_detach_and_the_guest_runs_on() -> None:
    """gdb killed hard resets the TCP connection: the stub treats it as the end of the session
    (a detach), never as an error of hv-emu."""
    with served(IMAGE, timeout=10) as (gdb, result, machine):
        gdb.sendall(b"$?#3f")
        assert gdb.recv(1) == b"+"
        # Close with RST (SO_LINGER 0) while the stub's reply is still unread.
        gdb.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert isinstance(result[0].exit, Halt) and machine.vcpu.reg("rdi") == 2


def test_a_busy_port_is_one_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "guest.bin").write_bytes(IMAGE)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([str(BIN / "hv-emu"), "run", "guest.bin", "--gdb", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"hv-emu: error: cannot listen for gdb on 127.0.0.1:{port}: Address already in use"]
    bad = subprocess.run([str(BIN / "hv-emu"), "run", "guest.bin", "--gdb", "70000"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "not a TCP port" in bad.stderr


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda head, rest: head + rest,
              st.sampled_from([b"m", b"M", b"p", b"P", b"G", b"Z0,", b"z0,", b"s", b"c", b"?"]),
              st.text("0123456789abcdef,:=;x", max_size=30).map(str.encode)),
), max_size=6))
def test_any_packets_get_a_reply_never_an_exception(payloads: list[bytes]) -> None:
    stub = stub_for(config=MachineConfig(mem_mib=2, timeout=2))  # 2 MiB: a stray run ends soon
    for payload in payloads:
        reply = stub.handle(payload)
        assert isinstance(reply, bytes)


@NEEDS_GDB
def test_sigterm_while_gdb_continues_tells_gdb_and_ends_hv_emu(tmp_path: Path) -> None:
    """gdb continues a tight loop; SIGTERM to hv-emu: gdb is told the program terminated with
    SIGTERM (an ``X0f`` stop reply), and hv-emu ends with status 143 without gdb detaching."""
    image, events = tmp_path / "g.bin", tmp_path / "e.jsonl"
    image.write_bytes(assemble("mov al, 'r'\n out 0xe9, al\nagain: jmp again", mode=64,
                               address=LOAD))  # fmt: skip
    with hv_emu_process(image, "--gdb", "0", "--timeout", "600", "--events", str(events)) as hv:
        assert hv.stderr is not None and hv.stdout is not None
        announce = hv.stderr.readline().decode()
        port = re.search(r"127\.0\.0\.1:(\d+)", announce)
        assert port is not None, announce
        gdb = subprocess.Popen(
            ["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64",
             "-ex", f"target remote :{port.group(1)}", "-ex", "continue",
             "-ex", "info program"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert hv.stdout.read(1) == b"r"  # gdb's continue runs the guest
            hv.send_signal(signal.SIGTERM)
            _, err = hv.communicate(timeout=PATIENCE)  # while gdb is still connected or not
            said, _ = gdb.communicate(timeout=PATIENCE)
        finally:
            if gdb.poll() is None:
                gdb.kill()
                gdb.wait()
    assert hv.returncode == 143, err
    assert err.decode().splitlines()[-1].startswith("hv-emu: terminated at RIP=0x"), err
    assert "Program terminated with signal SIGTERM" in said, said
    assert "exited normally" not in said, said
    assert json.loads(events.read_text().splitlines()[-1])["reason"] == "terminated (SIGTERM)"
