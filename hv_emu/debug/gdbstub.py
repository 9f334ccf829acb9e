"""A GDB stub: ``hv-emu run --gdb PORT`` lets ``gdb`` step through the guest, VMCALLs included.

Models: the debug stub a VMM offers its user (QEMU's ``-gdb tcp::PORT``, the kvmtool and
Firecracker gdb servers): gdb connects over TCP, reads and writes the vCPU's registers and the
guest's memory, plants breakpoints, single-steps and continues; the stub answers every stop with a
stop reply. A VMCALL is one instruction to gdb: ``stepi`` over it runs the hypercall handler, and
RAX changes across it as the ABI says. A run a signal ended (Ctrl-C, SIGTERM, SIGHUP sent to
hv-emu: ``hv_emu/vcpu/stopping.py``'s ``ENDINGS``) is told to gdb as the process terminated by that
signal (the ``X`` stop reply: gdb prints "Program terminated with signal SIGTERM"), and the session
ends there, so hv-emu ends at once instead of waiting for gdb to detach. A Linux program's end
is told as ``W`` with its exit status, and any other end of the run with the status ``hv-emu
run`` exits with (``run_end.status_of``: 0 for HLT, 4 for a hypercall's stop). gdb's Ctrl-C
during a continue pauses the guest (``gdb_break.py``) and is answered ``T02`` (SIGINT); a
``c`` then goes on from there.

Follows: the GDB manual, appendix E (packets in ``gdb_protocol.py``; ``?``, ``g``/``G``,
``p``/``P``, ``m``/``M``, ``Z0``/``z0`` and ``Z1``/``z1``, ``s``, ``c``, ``k``, ``D``,
``qSupported`` with ``swbreak+``/``hwbreak+``; the stop replies ``T``, ``W`` and ``X``, whose
signal numbers are gdb's, the same as Linux's for the ones used here), and the register layout
gdb uses for ``i386:x86-64`` without a target description: RAX..R15, RIP, EFLAGS, CS..GS, then
x87, SSE and MXCSR.

Leaves out: a target description (``target.xml``: gdb is told ``set architecture i386:x86-64``);
x87/SSE state, FS and GS (read as zeros, not writable: Unicorn's engine has them but hv-emu's
guests do not use them); watchpoints (``Z2``-``Z4`` get the empty reply); telling gdb of a
signal that came while gdb had the guest stopped (gdb is not waiting for a stop reply then: the
connection just closes); threads (one vCPU is thread 1). Breakpoints are code hooks on the
vCPU, never bytes patched into guest memory, so the guest cannot see them. Addresses are
guest-virtual, read through the guest's page tables.

The debugger controls every command; it is a user on localhost, bound to 127.0.0.1. Malformed
commands get ``E01``, unreadable memory ``E14``; the guest controls its registers and memory, which
are only read and shown.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from hv_emu.debug.gdb_break import BreakIn
from hv_emu.debug.gdb_protocol import (
    MAX_PACKET,
    Breakpoint,
    Command,
    Continue,
    Corrupt,
    Detach,
    GdbProtocolError,
    Interrupt,
    Kill,
    Nack,
    Packet,
    PacketReader,
    Query,
    QueryHalt,
    ReadMemory,
    ReadRegister,
    ReadRegisters,
    Step,
    WriteMemory,
    WriteRegister,
    WriteRegisters,
    encode_packet,
    parse_command,
)
from hv_emu.errors import ConfigError, GuestFault
from hv_emu.exits import Exit, Fault, Halt, StopRequest, Timeout
from hv_emu.machine import Machine, RunResult
from hv_emu.memory.walk import read_virt, write_virt
from hv_emu.run_end import status_of
from hv_emu.vcpu.stopping import PAUSED, ending_of

X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")
#: gdb's amd64 register file without a target description, in ``g`` order: (name, size in bytes,
#: the vCPU register it shows or ``None``: read as zeros). Numbers for ``p``/``P`` are indexes.
REGISTERS: tuple[tuple[str, int, str | None], ...] = (
    *((name, 8, name) for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp")),
    *((f"r{n}", 8, f"r{n}") for n in range(8, 16)),
    ("rip", 8, "rip"),
    ("eflags", 4, "rflags"),
    *((seg, 4, seg) for seg in ("cs", "ss", "ds", "es")),
    ("fs", 4, None),
    ("gs", 4, None),
    *((f"st{n}", 10, None) for n in range(8)),
    *((name, 4, None) for name in X87_CONTROL),
    *((f"xmm{n}", 16, None) for n in range(16)),
    ("mxcsr", 4, None),
)
#: The registers gdb may change: the general registers, RIP and EFLAGS.
WRITABLE = frozenset(name for name, size, reg in REGISTERS[:18] if reg is not None)

#: Replies to the general queries, by name (an unknown query gets the empty reply).
QUERY_REPLIES = {
    "qAttached": b"1",  # an existing process: gdb detaches (the guest runs on) when it quits
    "qC": b"QC1",  # the current thread: the one vCPU
    "qfThreadInfo": b"m1",
    "qsThreadInfo": b"l",
    "qSymbol": b"OK",
    "Hg": b"OK",  # set the thread for registers: there is only thread 1
    "Hc": b"OK",
    "T": b"OK",  # is the thread alive
}

#: Unix signal numbers gdb understands in a stop reply.
SIGINT, SIGILL, SIGTRAP, SIGFPE, SIGSEGV, SIGALRM = 2, 4, 5, 8, 11, 14
ERR_PACKET, ERR_MEMORY = b"E01", b"E14"  # EPERM-ish and EFAULT, as gdbserver answers


def fault_signal(fault: Fault) -> int:
    """The signal a Linux process would get for this guest exception."""
    if fault.vector == 0:
        return SIGFPE  # #DE
    if fault.vector == 6 or fault.kind.startswith("#UD"):
        return SIGILL
    if fault.vector in (1, 3):
        return SIGTRAP
    return SIGSEGV


@dataclass
class _Breakpoint:
    type: int  # 0 software, 1 hardware (both are code hooks here)
    handle: int


class GdbStub:
    """The protocol state of one debugging session over ``machine`` (no sockets here)."""

    def __init__(self, machine: Machine,
                 watch: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self.machine = machine
        self.vcpu = machine.vcpu
        #: Held while the guest continues: gdb's Ctrl-C pauses it (``gdb_break.BreakIn``).
        self._watch = watch or contextlib.nullcontext
        self._breakpoints: dict[int, _Breakpoint] = {}
        self._last_stop = b"S%02x" % SIGTRAP  # stopped at the entry point before the first insn
        self._detached = self._killed = self._terminated = False
        self.result: RunResult | None = None  # how the guest's run ended, once it has

    @property
    def done(self) -> bool:
        """The session is over: gdb killed or detached, or a signal ended the guest's run (gdb
        was told: the ``X`` stop reply)."""
        return self._detached or self._killed or self._terminated

    def handle(self, payload: bytes) -> bytes:
        """The reply to one packet's payload."""
        try:
            return self._reply(parse_command(payload))
        except GdbProtocolError:
            return ERR_PACKET

    def _reply(self, command: Command) -> bytes:
        match command:
            case QueryHalt():
                return self._last_stop
            case ReadRegisters():
                return b"".join(self._register(n) for n in range(len(REGISTERS))).hex().encode()
            case WriteRegisters(data=data):
                return self._write_registers(data)
            case ReadRegister(number=number):
                if number >= len(REGISTERS):
                    return ERR_PACKET
                return self._register(number).hex().encode()
            case WriteRegister(number=number, data=data):
                return self._write_register(number, data)
            case ReadMemory(address=address, length=length):
                try:
                    return read_virt(self.vcpu.mem, self.vcpu.paging_state(), address,
                                     length).hex().encode()  # fmt: skip
                except GuestFault:
                    return ERR_MEMORY
            case WriteMemory(address=address, data=data):
                try:
                    write_virt(self.vcpu.mem, self.vcpu.paging_state(), address, data)
                except GuestFault:
                    return ERR_MEMORY
                return b"OK"
            case Breakpoint(insert=insert, type=kind, address=address):
                return self._breakpoint(insert, kind, address)
            case Step(address=address) | Continue(address=address):
                if self.result is not None:
                    return self._last_stop  # the run is over; say so again
                if address is not None:
                    self.vcpu.set_reg("rip", address)
                return self._resume(single=isinstance(command, Step))
            case Kill():
                self._killed = True
                return b"OK"
            case Detach():
                self._detached = True
                return b"OK"
            case Query(name=name):
                if name == "qSupported":
                    return b"PacketSize=%x;swbreak+;hwbreak+" % MAX_PACKET
                return QUERY_REPLIES.get(name, b"")
        return b""  # Unsupported: the empty reply

    # ------------------------------------------------------------------ registers
    def _register(self, number: int) -> bytes:
        _name, size, reg = REGISTERS[number]
        value = self.vcpu.reg(reg) if reg is not None else 0
        return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def _write_register(self, number: int, data: bytes) -> bytes:
        if number >= len(REGISTERS):
            return ERR_PACKET
        _name, size, reg = REGISTERS[number]
        if reg not in WRITABLE or len(data) != size:
            return ERR_PACKET
        self.vcpu.set_reg(reg, int.from_bytes(data, "little"))
        return b"OK"

    def _write_registers(self, data: bytes) -> bytes:
        if len(data) != sum(size for _n, size, _r in REGISTERS):
            return ERR_PACKET
        offset = 0
        for _name, size, reg in REGISTERS:
            if reg in WRITABLE:
                self.vcpu.set_reg(reg, int.from_bytes(data[offset : offset + size], "little"))
            offset += size
        return b"OK"

    # ------------------------------------------------------------------ breakpoints
    def _breakpoint(self, insert: bool, kind: int, address: int) -> bytes:
        if kind not in (0, 1):
            return b""  # watchpoints: unsupported, gdb says so to the user
        present = self._breakpoints.get(address)
        if insert and present is None:
            self._breakpoints[address] = _Breakpoint(kind, self._hook(address))
        elif not insert and present is not None:
            self.vcpu.remove_hook(present.handle)
            del self._breakpoints[address]
        return b"OK"

    def _hook(self, address: int) -> int:
        """A code hook on exactly ``address`` that stops the vCPU before the instruction runs; it
        costs nothing while other code runs (docs/UNICORN.md U24)."""
        return self.vcpu.add_code_hook(lambda _a, _s: self.vcpu.request_stop("breakpoint"),
                                       address, address)  # fmt: skip

    # ------------------------------------------------------------------ running
    def _resume(self, *, single: bool) -> bytes:
        timeout = self.machine.config.timeout
        pc = self.vcpu.linear_pc(self.vcpu.mode())
        here = self._breakpoints.get(pc)
        if here is not None:
            # Leaving a breakpoint: run its instruction with the hook out of the way first.
            self.vcpu.remove_hook(here.handle)
            try:
                exit_ = self.vcpu.run(timeout, steps=1)
            finally:
                here.handle = self._hook(pc)
            if single or not _is_step(exit_):
                return self._stopped(exit_)
        if single:
            return self._stopped(self.vcpu.run(timeout, steps=1))
        with self._watch():
            exit_ = self.vcpu.run(timeout)
        self.vcpu.clear_pause()  # a break-in that came after the stop: gdb is told the stop
        return self._stopped(exit_)

    def _stopped(self, exit_: Exit) -> bytes:
        """The stop reply for how the vCPU stopped; a guest that ended its run has exited."""
        match exit_:
            case StopRequest(reason="step"):
                reply = b"T%02x" % SIGTRAP
            case StopRequest(reason="breakpoint"):
                pc = self.vcpu.linear_pc(self.vcpu.mode())
                hit = self._breakpoints.get(pc)
                kind = b"hwbreak" if hit is not None and hit.type == 1 else b"swbreak"
                reply = b"T%02x%s:;" % (SIGTRAP, kind)
            case Fault():
                reply = b"T%02x" % fault_signal(exit_)
            case Timeout():
                reply = b"T%02x" % SIGALRM
            case StopRequest(reason=reason) if reason == PAUSED:
                reply = b"T%02x" % SIGINT  # gdb's Ctrl-C: "Program received signal SIGINT"
            case StopRequest(reason=reason) if (by := ending_of(reason)) is not None:
                self.result = self.machine.finish(exit_)
                self._terminated = True
                reply = b"X%02x" % by.number  # "Program terminated with signal ..."
            case Halt() | StopRequest():
                self.result = self.machine.finish(exit_)
                linux = self.machine.linux  # a Linux program's own status is hv-emu's (ELF.md)
                status = status_of(exit_, linux.exit_status if linux is not None else None)
                reply = b"W%02x" % (status & 0xFF)  # the status hv-emu run exits with
        self._last_stop = reply
        return reply

    def conclude(self) -> RunResult:
        """End the session: a killed guest stops here; a detached one runs to its end."""
        for hit in self._breakpoints.values():
            self.vcpu.remove_hook(hit.handle)
        self._breakpoints.clear()
        if self.result is not None:
            return self.result
        if self._killed:
            mode = self.vcpu.mode()
            return self.machine.finish(StopRequest("killed by gdb", mode, self.vcpu.reg("rip")))
        return self.machine.finish(self.vcpu.run(self.machine.config.timeout))


def _is_step(exit_: Exit) -> bool:
    return isinstance(exit_, StopRequest) and exit_.reason == "step"


def serve_gdb(machine: Machine, port: int, *, announce: Callable[[int], None],
              host: str = "127.0.0.1") -> RunResult:  # fmt: skip
    """Wait for one gdb on ``host:port`` (0: any free port, passed to ``announce``), serve it,
    and return how the guest's run ended. A dropped or reset connection counts as a detach."""
    try:
        listener = socket.create_server((host, port))
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else str(err)
        raise ConfigError(f"cannot listen for gdb on {host}:{port}: {reason}") from None
    with listener:
        announce(listener.getsockname()[1])
        conn, _peer = listener.accept()
    stub = GdbStub(machine, BreakIn(conn, machine.vcpu.pause).watching)
    # gdb killed hard resets the connection: as if it had detached.
    with conn, contextlib.suppress(ConnectionError):
        _converse(conn, stub)
    return stub.conclude()


def _converse(conn: socket.socket, stub: GdbStub) -> None:
    """Answer gdb's packets until the session is over or gdb goes away."""
    reader = PacketReader()
    last = encode_packet(b"")
    while not stub.done:
        data = conn.recv(4096)
        if not data:
            return  # gdb went away without a word: as if it had detached
        frames = list(reader.feed(data))
        for at, frame in enumerate(frames):
            match frame:
                case Packet(payload=payload):
                    conn.sendall(b"+")
                    if payload[:1] == b"c" and any(isinstance(f, Interrupt) for f in frames[at:]):
                        # gdb's Ctrl-C came in the same read as the continue: the watcher
                        # (``gdb_break``) will never see it, so the continue stops at once.
                        stub.vcpu.pause()
                    last = encode_packet(stub.handle(payload))
                    conn.sendall(last)
                case Corrupt():
                    conn.sendall(b"-")
                case Nack():
                    conn.sendall(last)
            if stub.done:
                return
