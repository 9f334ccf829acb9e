"""VM exits: the Unicorn hooks that catch what the guest does and hand it to the hypervisor.

Models: the exit side of VT-x (and of SVM for its hypercall). Where the CPU writes an exit reason
into the VMCS, hv-emu has Unicorn hooks: the hypercall arrives as an invalid instruction (Unicorn
decodes VMCALL ``0f 01 c1`` and VMMCALL ``0f 01 d9`` as #UD; the configured CPU vendor's is the
hypercall, as VT-x exits on VMCALL and SVM on VMMCALL, and the other stays a #UD; so does the
firmware's ``ud2`` at a ROM stub in real mode, a ``FirmwareCall``), IN and OUT,
CPUID and SYSCALL through instruction hooks, guest exceptions and INT n through the interrupt hook,
accesses outside RAM through the memory hook. Each trap becomes an exit value (``exits.py``)
handed to one callback (the machine's ``dispatch``), whose outcome is applied here: registers
written, an IN answered, or the run stopped. An exception or INT n the guest has a handler for
is not an exit but an event (``injection.py``) kept for the run loop to inject at the next VM
entry (``deliver.py``); who takes a vector is one decision, ``_owner`` (``exceptions.py``),
after an OS personality that takes CPU exceptions itself (a ``GuestException`` exit: Linux's
signals). The first element of a ``rep ins*``/``rep outs*`` to a device that moves blocks takes
the direct path of ``bulk_io.py``.

Follows: docs/UNICORN.md (Unicorn 2.1.4): never ``emu_stop`` from an IN hook during ``rep ins*``
(U11: IN is always answered inside the hook); one IN and one OUT hook dispatching by port
(U13); VMCALL and VMMCALL as invalid instructions (U14, U37); Unicorn delivers nothing through
the guest IDT, the vCPU does (U18, U39); a #UD hook may stop and return True (U44). Intel
SDM vol. 3C 27.1 (on a VMCALL exit the handler, not the CPU, moves RIP past the instruction;
BitVisor does the same for VMMCALL under SVM).

Leaves out: MSR and control-register exits.

Guest controls: all register and memory state; the hooks treat every value they read as hostile and
never let an exception escape into Unicorn (it is stored and re-raised after ``emu_start``).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sized
from dataclasses import replace

import unicorn
from unicorn import x86_const as X

from hv_emu.errors import GuestFault, RunEnding
from hv_emu.exits import (
    Cpuid,
    Exit,
    FirmwareCall,
    Handled,
    Hypercall,
    Outcome,
    PortIn,
    PortOut,
    Stopped,
    StopRequest,
    Syscall,
    Unhandled,
)
from hv_emu.hypercalls.abi import VMCALL_BYTES
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, read_virt
from hv_emu.vcpu.bulk_io import PortIo
from hv_emu.vcpu.deliver import Injection
from hv_emu.vcpu.engine import U64, RegisterBatch, mode_of
from hv_emu.vcpu.exceptions import INVALID_OPCODE, ExceptionTraps
from hv_emu.vcpu.faults import fault_report
from hv_emu.vcpu.hidden import HiddenState
from hv_emu.vcpu.injection import Event, hardware_exception

ExitHandler = Callable[[Exit], Outcome]


#: A code hook: called with (address, size) before each instruction in its range.
CodeHook = Callable[[int, int], None]

_INT_IMM8 = 0xCD  # INT imm8
#: Called with each injection the vCPU makes and the CS:RIP it interrupted (a tracer, a report).
InjectionWatcher = Callable[[Injection, int, int], None]
_HYPERCALL_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")  # the number, then the arguments
#: What the #UD hook needs, in one trip into Unicorn: the paging state, RIP, the hypercall's.
_INVALID_INSN_REGS = ("cr0", "cr3", "cr4", "efer", "rip", *_HYPERCALL_REGS)
_SYSCALL_LENGTH = 2  # 0f 05
_UD2 = b"\x0f\x0b"  # the firmware's trap instruction (docs/UNICORN.md U45)
_FIRMWARE_REGS = ("ds", "es", "ss", "rflags")  # besides the general registers


class Traps(ExceptionTraps):
    """The engine with its hooks installed: every trap becomes an exit sent to ``on_exit``."""

    def __init__(self, mem: GuestMemory, on_exit: ExitHandler) -> None:
        super().__init__(mem)
        self.on_exit = on_exit
        self._hypercall_regs = RegisterBatch(self.uc, _HYPERCALL_REGS)
        self._invalid_insn_regs = RegisterBatch(self.uc, _INVALID_INSN_REGS)
        self._stop: Exit | None = None  # why the current emu_start was stopped on purpose
        self._error: BaseException | None = None  # an exception raised inside a hook
        self._pending_fault: tuple[str, int, int] | None = None  # (kind, address, vector)
        self._resume = False  # we stopped emu_start ourselves only to flush; just go on
        self._emulating = False  # inside emu_start (so inside a hook, when Python runs)
        #: Make RIP exact in every hook (a tracer asks; it costs an emu_start per VMCALL).
        self.exact_rip_in_hooks = False
        #: The direct path for port I/O: when set, and while ``exit_watchers`` is empty, IN and
        #: OUT go straight to these ports instead of through ``PortIn``/``PortOut`` exits and
        #: ``on_exit``. The owner sets both only if its ``on_exit`` sends port exits to this bus
        #: and nothing else (``dispatch`` does), so the guest sees the same either way.
        self.direct_ports: PortIo | None = None
        #: Whoever watches every exit (the machine's exit observers): while any is attached,
        #: every exit is a value passed to ``on_exit``, as tracing and statistics need.
        self.exit_watchers: Sized = ()
        #: The hypercall instruction: VMCALL (Intel, the default) or VMMCALL (AMD), set by the
        #: owner from ``hypercalls.abi.HYPERCALL_INSTRUCTIONS``; any other opcode, the other
        #: vendor's included, is a #UD. Three bytes either way.
        self.hypercall_instruction = VMCALL_BYTES
        #: The linear addresses of the firmware's stub slots (``firmware/rom.py``), set by the
        #: owner for a run with firmware: a ``ud2`` at one of them in real mode is a
        #: ``FirmwareCall`` (U45); a ``ud2`` anywhere else stays a #UD.
        self.firmware_stubs: range | None = None
        self._read_only: range | None = None  # guest-physical RAM the guest may not write (U46)
        #: The CPU state the register API does not reach (segment caches, CPL, the shadow).
        self.hidden = HiddenState(self.uc)
        #: The event to inject at the next VM entry (VT-x's interruption-information field).
        self.pending_event: Event | None = None
        #: Software-interrupt vectors the hypervisor handles itself (an OS personality's
        #: ``int 0x80``, a BIOS model's): never delivered through the guest's tables.
        self.owned_vectors: Container[int] = ()
        #: Who watches injections (a tracer): each gets every ``Injection`` made.
        self.injection_watchers: list[InjectionWatcher] = []
        #: Whether CPU exceptions are offered to an exception handler as ``GuestException``
        #: exits (set by the owner when an OS personality takes them); otherwise a guest
        #: exception is the fault that ends the run, one exit, as it always was.
        self.offer_exceptions = False
        self._install_hooks()

    def set_reg(self, name: str, value: int) -> None:
        super().set_reg(name, value)
        if name == "rip" and self._emulating and self.exact_rip_in_hooks:
            # Unicorn 2.1.4 stops syncing RIP for later hooks once a hook has written it (fixed
            # upstream by unicorn PR #2181; docs/UNICORN.md U16); a new emu_start syncs it.
            self._resume = True
            self.uc.emu_stop()

    def _install_hooks(self) -> None:
        uc = self.uc
        self.add_invalid_insn_hook(self._on_invalid_insn)  # raw, as the port hooks (U34)
        self.add_port_hooks(self._on_in, self._on_out)  # raw: the hottest exits (U34)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, X.UC_X86_INS_CPUID)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(
            unicorn.UC_HOOK_MEM_UNMAPPED | unicorn.UC_HOOK_MEM_PROT, self._on_bad_memory
        )

    # ------------------------------------------------------------------ outcomes
    def _apply(self, outcome: Outcome) -> None:
        """Carry out a dispatch outcome inside a hook."""
        if isinstance(outcome, Handled):
            for name, value in outcome.registers.items():
                self.set_reg(name, value)
            if "rip" in outcome.registers and self._emulating:
                # A handler moved RIP (a signal's delivery or return): start again there, so
                # later hooks read the new RIP, not a stale one (docs/UNICORN.md U16).
                self._resume = True
                self.uc.emu_stop()
        elif isinstance(outcome, Stopped):
            self.request_stop(outcome.reason)
        elif isinstance(outcome, Unhandled):
            self._stop = fault_report(self, outcome.why, 0, -1)
            self.uc.emu_stop()
        else:
            self._stop = outcome.fault
            self.uc.emu_stop()

    def request_stop(self, reason: str) -> None:
        """End the current run with a ``StopRequest`` (from a handler or a code hook; never from
        an IN hook, see docs/UNICORN.md U11). RIP is read now: the stop takes effect only at the
        end of the translation block (U12)."""
        self._stop = StopRequest(reason, self.mode(), self.reg("rip"))
        self.uc.emu_stop()

    def _hook_error(self, err: BaseException) -> None:
        """Keep an exception raised in a hook for the run loop to raise after ``emu_start``: it
        must not unwind through Unicorn's C frames (U22). A host wait the end of the run cut
        short (``RunEnding``: ``stopping.py``) is no error: the run loop reports that end."""
        if self._error is None and not isinstance(err, RunEnding):
            self._error = err
        self.uc.emu_stop()

    # ------------------------------------------------------------------ extension points
    def add_code_hook(self, callback: CodeHook, begin: int = 1, end: int = 0) -> int:
        """Call ``callback(address, size)`` before each instruction in ``[begin, end]`` (all
        code when begin > end). Costly where it covers code (U24: about 0.3 µs per instruction):
        for debuggers and traces, never on the default path. Returns a handle for
        ``remove_hook``."""

        def hook(uc: unicorn.Uc, address: int, size: int, _ud: object) -> None:
            try:
                callback(address, size)
            except BaseException as err:
                self._hook_error(err)

        return int(self.uc.hook_add(unicorn.UC_HOOK_CODE, hook, None, begin, end))

    def remove_hook(self, handle: int) -> None:
        self.uc.hook_del(handle)

    # ------------------------------------------------------------------ VMCALL / VMMCALL
    def _is_hypercall(self, paging: PagingState, pc: int) -> bool:
        """Whether the bytes at linear ``pc`` are the hypercall instruction (unmapped bytes are
        not), read by the walk: Unicorn's host side reads physical memory only (U7)."""
        insn = self.hypercall_instruction
        try:
            return read_virt(self.mem, paging, pc, len(insn)) == insn
        except GuestFault:
            return False

    def _on_invalid_insn(self, _handle: object, _ud: object) -> bool:
        """#UD: the hypercall instruction (ours to emulate) or a genuinely invalid opcode (a guest
        fault), the other vendor's hypercall instruction included."""
        try:
            cr0, cr3, cr4, efer, rip, *hypercall = self._invalid_insn_regs.read()
            paging = PagingState(cr0, cr3, cr4, efer)
            mode = mode_of(paging)
            pc = self.linear_address(mode, rip)
            stubs = self.firmware_stubs
            if mode == 16 and stubs is not None and pc in stubs \
                    and self.fetched_bytes(pc, len(_UD2)) == _UD2:
                self._firmware_call(stubs.index(pc), rip)
                return True
            # The CPU has just fetched these bytes: its own MMU reads them back (U36); the walk
            # is left for an instruction whose bytes may run into the next page.
            insn = self.hypercall_instruction
            fetched = self.fetched_bytes(pc, len(insn))
            if not (fetched == insn if fetched is not None
                    else self._is_hypercall(paging, pc)):  # fmt: skip
                # A #UD: an OS personality may take it (a Linux program gets SIGILL, so that
                # BitVisor's call_vmm.c, try VMCALL, catch SIGILL, try VMMCALL, finds the
                # hypercall on either vendor); else the guest's IVT/IDT if it has a handler;
                # otherwise a guest fault that ends the run.
                if self._exception(6, mode, paging, rip):
                    return True  # resume where the handler put RIP (U14)
                event = hardware_exception(INVALID_OPCODE)
                if self._owner(event, mode) == "guest":
                    self._inject_next(event)
                    return True
                self._pending_fault = ("#UD invalid opcode", 0, 6)
                return False  # Unicorn ends the run with UC_ERR_INSN_INVALID
            self._vmcall(mode, paging, rip, hypercall)
        except BaseException as err:  # never unwind through Unicorn's C frames (U22)
            self._hook_error(err)
        return True

    def _vmcall(self, mode: int, paging: PagingState, rip: int,
                registers: list[int] | None = None) -> None:  # fmt: skip
        """The hypercall exit at ``rip`` (VMCALL, or VMMCALL on AMD): like VT-x and SVM, move
        RIP past the instruction, then run the handler. ``registers``: RAX, RBX, RCX, RDX, RSI,
        RDI if already read."""
        rip += len(self.hypercall_instruction)
        rip = rip & 0xFFFF if mode == 16 else rip & U64
        self.set_reg("rip", rip)
        mask = U64 if mode == 64 else 0xFFFFFFFF
        values = registers if registers is not None else self._hypercall_regs.read()
        nr, rbx, rcx, rdx, rsi, rdi = (value & mask for value in values)
        exit_ = Hypercall(nr, (rbx, rcx, rdx, rsi, rdi), mode, rip, paging)
        self._apply(self.on_exit(exit_))

    def set_read_only(self, region: range | None) -> None:
        """Make guest-physical ``region`` (page-aligned) read-only to the guest, as a PC's ROM
        is, or undo it with ``None``. A guest write there is a fault report ("write to
        read-only memory"); the hypervisor's own writes through ``GuestMemory`` still land
        (docs/UNICORN.md U46)."""
        old, self._read_only = self._read_only, region
        if old is not None and old != region:
            self.uc.mem_protect(old.start, len(old), unicorn.UC_PROT_ALL)
        if region is not None and old != region:
            self.uc.mem_protect(region.start, len(region),
                                unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC)  # fmt: skip

    def _firmware_call(self, vector: int, rip: int) -> None:
        """The firmware's trap at the stub of ``vector``: RIP moves past the ``ud2`` onto the
        stub's return instruction, then the firmware's service runs (U45)."""
        rip = (rip + len(_UD2)) & 0xFFFF
        self.set_reg("rip", rip)
        registers = self.general_registers(16)
        registers.update({name: self.reg(name) for name in _FIRMWARE_REGS})
        self._apply(self.on_exit(FirmwareCall(vector, rip, registers)))

    # ------------------------------------------------------------------ port I/O, CPUID, SYSCALL
    def _on_in(self, _handle: object, port: int, size: int, _ud: object) -> int:
        # Always answered here, never by stopping: stopping inside rep insw loses a word (U11).
        ports = self.direct_ports
        if ports is not None and not self.exit_watchers:
            # The direct path: what dispatch does with PortIn, without building the exit and its
            # outcome (an IN handler neither stops nor writes RAM, so no flag needs setting).
            # A device may raise an IRQ line here (the next ATA block): the kick it causes must
            # not stop emu_start inside an IN hook (U11), hence the flag.
            self._in_port_in = True
            try:
                if port in ports.block_ports:
                    first = self._rep_ins(ports, port, size)
                    if first is not None:
                        return first
                return ports.readers[port](port, size)
            except BaseException as err:
                self._hook_error(err)
                return (1 << (8 * size)) - 1
            finally:
                self._in_port_in = False
        self._in_port_in = True
        try:
            outcome = self.on_exit(PortIn(port, size))
            if isinstance(outcome, Handled):
                return outcome.value
            self._apply(outcome)
        except BaseException as err:
            self._hook_error(err)
        finally:
            self._in_port_in = False
        return (1 << (8 * size)) - 1

    def _on_out(self, _handle: object, port: int, size: int, value: int, _ud: object) -> None:
        # A device may write guest RAM here (a DMA start): Vcpu._invalidate then ends emu_start.
        try:
            ports = self.direct_ports
            if ports is not None and not self.exit_watchers:
                # The direct path: dispatch's PortOut, or a whole block of a rep outs* at once.
                if port in ports.block_ports and self._rep_outs(ports, port, size, value):
                    return
                ports.writers[port](port, size, value)
                return
            outcome = self.on_exit(PortOut(port, size, value))
            if not isinstance(outcome, Handled):
                self._apply(outcome)
        except BaseException as err:
            self._hook_error(err)

    def _on_cpuid(self, uc: unicorn.Uc, _ud: object) -> int:
        try:
            leaf = self.reg("rax") & 0xFFFFFFFF
            outcome = self.on_exit(Cpuid(leaf, self.reg("rcx") & 0xFFFFFFFF))
            if isinstance(outcome, Handled) and outcome.cpuid is not None:
                # Native CPUID zero-extends: write all of RAX..RDX (docs/UNICORN.md U20).
                for name, value in zip(("rax", "rbx", "rcx", "rdx"), outcome.cpuid, strict=True):
                    self.set_reg(name, value & 0xFFFFFFFF)
                return 1
            if not isinstance(outcome, Handled):
                self._apply(outcome)
        except BaseException as err:
            self._hook_error(err)
        return 0

    def _on_syscall(self, uc: unicorn.Uc, _ud: object) -> None:
        """SYSCALL: Unicorn calls this with RIP on the instruction and resumes after it (U21)."""
        try:
            paging = self.paging_state()
            mode = mode_of(paging)
            rip = self.reg("rip") + _SYSCALL_LENGTH
            exit_ = Syscall(mode, rip, self.general_registers(mode), paging)
            outcome = self.on_exit(exit_)
            if isinstance(outcome, Handled) and "rip" in outcome.registers:
                # Unicorn adds the instruction's length to whatever RIP the hook leaves (U60).
                moved = {**outcome.registers}
                moved["rip"] = (moved["rip"] - _SYSCALL_LENGTH) & U64
                outcome = replace(outcome, registers=moved)
            self._apply(outcome)
        except BaseException as err:
            self._hook_error(err)

    # ------------------------------------------------------------------ bad memory
    def _on_bad_memory(self, uc: unicorn.Uc, access: int, address: int, size: int,
                       value: int, _ud: object) -> bool:  # fmt: skip
        """An access outside RAM or against its rights, at a physical address (U7): record it,
        and Unicorn ends the run (U19)."""
        kinds = {
            unicorn.UC_MEM_READ_UNMAPPED: "read of unmapped memory",
            unicorn.UC_MEM_WRITE_UNMAPPED: "write to unmapped memory",
            unicorn.UC_MEM_FETCH_UNMAPPED: "fetch from unmapped memory",
            unicorn.UC_MEM_WRITE_PROT: "write to read-only memory",
            unicorn.UC_MEM_FETCH_PROT: "fetch from non-executable memory",
        }
        self._pending_fault = (kinds.get(access, f"memory access type {access}"), address, -1)
        return False  # Unicorn ends the run with UC_ERR_*; the run loop reports it
