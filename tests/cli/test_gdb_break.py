"""gdb's Ctrl-C while the guest runs (a bare 0x03 on the connection): the guest pauses, gdb hears
SIGINT and can go on; and every end of a run gdb is told carries hv-emu run's own exit status."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.debug.gdb_protocol import encode_packet
from hv_emu.debug.gdbstub import GdbStub
from hv_emu.exits import Halt, StopRequest
from hv_emu.linux.files import FileTable
from hv_emu.machine import Machine, MachineConfig
from hv_emu.vcpu.stopping import PAUSED
from tests.rigs.gdb import LOAD, NEEDS_GDB, reg, served, stub_for
from tests.rigs.processes import PATIENCE, hv_emu_process

#: Counts in RBX for ever, after one byte on the debug console.
SPINNER = "mov al, 'r'\n out 0xe9, al\nagain: inc rbx\n jmp again"


def reply(conn: socket.socket) -> bytes:
    """The payload of the next packet the stub sends (acks before it skipped)."""
    data = b""
    while not re.search(rb"\$[^#]*#..", data):
        chunk = conn.recv(4096)
        assert chunk, f"the stub closed the connection after {data!r}"
        data += chunk
    match = re.search(rb"\$([^#]*)#..", data)
    assert match is not None
    return match.group(1)


def test_ctrl_c_during_continue_pauses_the_guest_and_continue_goes_on() -> None:
    with served(assemble(SPINNER, mode=64, address=LOAD)) as (gdb, result, _machine):
        counts = []
        for _ in range(2):  # the break-in is not sticky: a second continue runs again
            gdb.sendall(encode_packet(b"c"))
            time.sleep(0.2)  # the guest spins meanwhile (a reply now would be a bug)
            gdb.sendall(b"\x03")
            assert reply(gdb) == b"T02"  # SIGINT, as gdbserver and QEMU answer
            gdb.sendall(b"+" + encode_packet(b"p1"))  # RBX: rax, rbx, ... in gdb's order
            counts.append(int.from_bytes(bytes.fromhex(reply(gdb).decode()), "little"))
            gdb.sendall(b"+")
        assert 0 < counts[0] < counts[1]  # the guest ran, stopped, and ran on from there
        gdb.sendall(encode_packet(b"k"))
        assert reply(gdb) == b"OK"
    assert isinstance(result[0].exit, StopRequest) and result[0].exit.reason == "killed by gdb"


def test_ctrl_c_in_the_same_read_as_the_continue_still_pauses() -> None:
    """A scripted client (or a quick Ctrl-C) sends ``$c#63`` and 0x03 in one segment: the break-in
    is not lost with the packet reader's leftovers (the watchdog would answer T0e after 5 s)."""
    with served(assemble(SPINNER, mode=64, address=LOAD), timeout=5) as (gdb, _result, _machine):
        gdb.sendall(encode_packet(b"c") + b"\x03")
        assert reply(gdb) == b"T02"
        gdb.sendall(b"+" + encode_packet(b"k"))
        assert reply(gdb) == b"OK"


def test_a_late_break_in_leaves_no_stop_repeating() -> None:
    """A pause that came after the run returned starts the vCPU's stop repeater; forgetting the
    pause ends it, so no stray ``emu_stop`` can cut the next run (a ``stepi``) short."""
    vcpu = stub_for(assemble(SPINNER, mode=64, address=LOAD)).vcpu
    vcpu.pause()
    assert any(t.name == "hv-emu stop" for t in threading.enumerate())
    vcpu.clear_pause()
    assert not any(t.name == "hv-emu stop" and t.is_alive() for t in threading.enumerate())


def test_a_guest_paused_in_hlt_is_still_halted_when_it_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A break-in that ends a HLT's wait shows the guest at its HLT, and the HLT runs again on
    the next run: the pause is no wake-up (without the rewind the guest would run on into the
    loop after it and time out)."""
    image = assemble("sti\n hlt\nafter: jmp after", mode=64, address=LOAD)
    hlt_at = LOAD + image.index(b"\xf4")
    stub = stub_for(image)
    vcpu = stub.vcpu
    waiting = vcpu.wait_for_interrupt

    def break_in_while_waiting(give_up: threading.Event) -> bool:
        vcpu.pause()  # gdb's 0x03 arrives while the vCPU waits in its HLT
        return waiting(give_up)

    monkeypatch.setattr(vcpu, "wait_for_interrupt", break_in_while_waiting)
    paused = vcpu.run(10)
    assert isinstance(paused, StopRequest) and paused.reason == PAUSED
    assert paused.rip == hlt_at == reg(stub, "rip")
    monkeypatch.setattr(vcpu, "wait_for_interrupt", waiting)
    assert isinstance(vcpu.run(10), Halt)  # nothing can wake it: the run ends at the HLT


def test_a_break_in_after_the_stop_is_forgotten() -> None:
    """gdb's 0x03 raced with a breakpoint's stop: gdb is told the breakpoint, and the next
    continue runs to the guest's end instead of stopping at once for the late break-in."""
    image = assemble("nop\nhere: nop\n hlt", mode=64, address=LOAD)
    machine = Machine(MachineConfig(timeout=10))
    machine.load(image)

    @contextlib.contextmanager
    def late_break() -> Iterator[None]:
        yield
        machine.vcpu.pause()  # arrives just after the run returned

    stub = GdbStub(machine, late_break)
    stub.handle(b"Z0,%x,1" % (LOAD + 1))
    assert stub.handle(b"c").startswith(b"T05")
    assert stub.handle(b"c") == b"W00"


def test_a_stop_that_is_not_a_halt_is_told_with_hv_emus_status() -> None:
    """A Linux program that waits for a signal nothing will send stops the run: ``hv-emu run``
    exits 4, and gdb hears ``W04``, not 0."""
    code = "sub rsp, 8\n mov qword ptr [rsp], 0\n mov rdi, rsp\n mov esi, 8\n"
    code += "mov eax, 130\n syscall"  # rt_sigsuspend(&empty mask, 8)
    program = write_executable(assemble(code, mode=64, address=code_address(64)), bits=64)
    machine = Machine(MachineConfig(timeout=10))
    machine.load_elf(program, argv=["waits"], files=FileTable(stdout=io.BytesIO()))
    stub = GdbStub(machine)
    assert stub.handle(b"c") == b"W04"
    final = stub.conclude().exit
    assert isinstance(final, StopRequest) and final.reason.startswith("rt_sigsuspend")


@NEEDS_GDB
def test_real_gdbs_ctrl_c_interrupts_a_running_guest(tmp_path: Path) -> None:
    """gdb in batch mode continues a spinning guest; SIGINT to gdb (what the terminal sends on
    Ctrl-C) makes it send 0x03: it reports SIGINT, reads the registers and kills the guest."""
    image = tmp_path / "spin.bin"
    image.write_bytes(assemble(SPINNER, mode=64, address=LOAD))
    with hv_emu_process(image, "--gdb", "0", "--timeout", "600") as hv:
        assert hv.stderr is not None and hv.stdout is not None
        port = re.search(r"127\.0\.0\.1:(\d+)", hv.stderr.readline().decode())
        assert port is not None
        gdb = subprocess.Popen(
            ["gdb", "-nx", "-batch", "-ex", "set architecture i386:x86-64",
             "-ex", f"target remote :{port.group(1)}", "-ex", "continue",
             "-ex", "info registers rip", "-ex", "kill"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert hv.stdout.read(1) == b"r"  # gdb's continue runs the guest
            time.sleep(0.3)  # gdb is waiting for the stop reply
            gdb.send_signal(signal.SIGINT)
            said, _ = gdb.communicate(timeout=PATIENCE)
            _, err = hv.communicate(timeout=PATIENCE)
        finally:
            if gdb.poll() is None:
                gdb.kill()
                gdb.wait()
    assert "Program received signal SIGINT" in said, said
    rip = re.search(r"^rip +0x([0-9a-f]+)", said, re.MULTILINE)
    assert rip is not None and LOAD + 4 <= int(rip.group(1), 16) < LOAD + 10, said  # in the loop
    assert hv.returncode == 4, err
    assert "stopped: killed by gdb" in err.decode()
