"""The virtual CPU: one Unicorn engine, its traps turned into VM exits.

Models: the part of a VMM that runs guest code and regains control at each VM exit. Where VT-x has
the VMCS and VM-exit reasons, hv-emu has Unicorn hooks: VMCALL arrives as an invalid instruction
(Unicorn decodes ``0f 01 c1`` as #UD), IN/OUT and CPUID through instruction hooks, guest exceptions
through the interrupt hook, HLT as a normal return from ``emu_start``. Each trap becomes an exit
value (``exits.py``) handed to one callback (the machine's ``dispatch``), whose outcome is applied
here.

Follows: /work/shared/notes/unicorn-keystone.md (Unicorn 2.1.4): always open ``UC_MODE_64`` and copy
a 16/32-bit start state in from a donor engine's context, so the 64-bit register API works in every
mode (trap 1); invalidate translated code after host writes (trap 2); never ``emu_stop`` from an IN
hook during ``rep ins*`` (trap 3: IN is always answered inside the hook); one IN and one OUT hook
dispatching by port (trap 10); a watchdog thread instead of ``timeout=`` (trap 9); raw
``uc_reg_read`` for the hot registers. This is the only module that imports unicorn.

Leaves out: interrupt delivery (no PIC/APIC: guests poll), reflecting exceptions into the guest IDT
(every guest exception ends the run with a fault report), MSR and control-register exits, SMP.

Guest controls: all register and memory state; the hooks treat every value they read as hostile and
never let an exception escape into Unicorn (it is stored and re-raised after ``emu_start``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from functools import cache

from hv_emu.abi import VMCALL_BYTES
from hv_emu.boot import BootState
from hv_emu.disasm import MAX_INSN, disassemble_one
from hv_emu.errors import GuestFault
from hv_emu.exits import (
    Cpuid,
    Exit,
    Fault,
    Halt,
    Handled,
    Hypercall,
    Outcome,
    PortIn,
    PortOut,
    SoftwareInterrupt,
    Stopped,
    StopRequest,
    Syscall,
    Timeout,
    Unhandled,
)
from hv_emu.layout import SEL_CODE32, SEL_CODE64, SEL_DATA
from hv_emu.memory import GuestMemory
from hv_emu.paging import PagingState, read_virt

# Wrong register ids must fail loudly instead of reading 0 (notes §9); set before any engine exists.
os.environ.setdefault("UC_IGNORE_REG_BREAK", "1")

import unicorn
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _binding

ExitHandler = Callable[[Exit], Outcome]
#: A code hook: called with (address, size) before each instruction in its range.
CodeHook = Callable[[int, int], None]

_MSR_EFER = 0xC0000080
_EFER_LMA = 1 << 10
_CR0_PE = 1 << 0
_CR0_PG = 1 << 31
_HLT = 0xF4
_INT_IMM8 = 0xCD  # INT imm8
_UNTIL = 2**64 - 1  # an unreachable sentinel: run until a trap stops us (notes §6)

_GPRS = {
    "rax": X.UC_X86_REG_RAX, "rbx": X.UC_X86_REG_RBX, "rcx": X.UC_X86_REG_RCX,
    "rdx": X.UC_X86_REG_RDX, "rsi": X.UC_X86_REG_RSI, "rdi": X.UC_X86_REG_RDI,
    "rsp": X.UC_X86_REG_RSP, "rbp": X.UC_X86_REG_RBP, "rip": X.UC_X86_REG_RIP,
    "r8": X.UC_X86_REG_R8, "r9": X.UC_X86_REG_R9, "r10": X.UC_X86_REG_R10,
    "r11": X.UC_X86_REG_R11, "r12": X.UC_X86_REG_R12, "r13": X.UC_X86_REG_R13,
    "r14": X.UC_X86_REG_R14, "r15": X.UC_X86_REG_R15, "rflags": X.UC_X86_REG_RFLAGS,
    "cs": X.UC_X86_REG_CS, "ss": X.UC_X86_REG_SS, "ds": X.UC_X86_REG_DS, "es": X.UC_X86_REG_ES,
    "cr0": X.UC_X86_REG_CR0, "cr2": X.UC_X86_REG_CR2, "cr3": X.UC_X86_REG_CR3,
    "cr4": X.UC_X86_REG_CR4,
    # The hidden segment bases a 64-bit OS sets for thread-local storage (arch_prctl).
    "fs_base": X.UC_X86_REG_FS_BASE, "gs_base": X.UC_X86_REG_GS_BASE,
}  # fmt: skip
_GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
_FAULT_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "cr0", "cr2", "cr3")
_VECTORS = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
            10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
            18: "#MC", 19: "#XM"}  # fmt: skip


class _Msr(ctypes.Structure):
    """``uc_x86_msr``: the argument of a raw ``uc_reg_read(UC_X86_REG_MSR)``."""

    _fields_ = (("rid", ctypes.c_uint32), ("val", ctypes.c_uint64))


def mode_of(paging: PagingState) -> int:
    """16 if CR0.PE is clear, 64 if EFER.LMA is set, else 32 (notes §10.A)."""
    if not paging.cr0 & _CR0_PE:
        return 16
    return 64 if paging.efer & _EFER_LMA else 32


class Vcpu:
    """One virtual CPU over ``mem``; every exit goes to ``on_exit``."""

    def __init__(self, mem: GuestMemory, on_exit: ExitHandler) -> None:
        self.mem = mem
        self.on_exit = on_exit
        self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        # The guest's RAM is the very mmap GuestMemory owns: no copies either way.
        self.uc.mem_map_ptr(0, mem.size, unicorn.UC_PROT_ALL, mem.host_address)
        mem.add_write_listener(self._invalidate)
        self._reg_buf = ctypes.c_uint64()
        self._reg_ptr = ctypes.byref(self._reg_buf)
        self._efer_buf = _Msr(_MSR_EFER, 0)
        self._efer_ptr = ctypes.byref(self._efer_buf)
        self._uc_reg_read = _binding.uclib.uc_reg_read
        self._stop: Exit | None = None  # why the current emu_start was stopped on purpose
        self._error: BaseException | None = None  # an exception raised inside a hook
        self._timed_out = threading.Event()
        self._pending_fault: tuple[str, int, int] | None = None  # (kind, address, vector)
        self._stale_code = False  # host wrote guest RAM: translated code may be stale
        self._resume = False  # we stopped emu_start ourselves only to flush; just go on
        self._in_port_in = False  # inside an IN hook, where stopping would lose data (trap 3)
        self._in_hook = False  # inside any hook, during emu_start
        self._booted = False  # reset() has run: the engine is no longer in its fresh state
        #: Make RIP exact in every hook (a tracer asks; it costs an emu_start per VMCALL).
        self.exact_rip_in_hooks = False
        self._install_hooks()

    # ------------------------------------------------------------------ registers
    def reg(self, name: str) -> int:
        """A register by name (``rax``, ``cr3``...), read through the raw C API (0.5 µs)."""
        self._reg_buf.value = 0  # segment registers fill only the low bytes
        self._uc_reg_read(self.uc._uch, _GPRS[name], self._reg_ptr)
        return int(self._reg_buf.value)

    def set_reg(self, name: str, value: int) -> None:
        self.uc.reg_write(_GPRS[name], value & 0xFFFFFFFFFFFFFFFF)
        if name == "rip" and self._in_hook and self.exact_rip_in_hooks:
            # Unicorn 2.1.4 stops syncing RIP for later hooks once a hook has written it (fixed
            # upstream by unicorn PR #2181); a new emu_start syncs it again.
            self._resume = True
            self.uc.emu_stop()

    def registers(self, names: tuple[str, ...] = tuple(_GPRS)) -> dict[str, int]:
        return {name: self.reg(name) for name in names}

    def efer(self) -> int:
        """The EFER MSR, read through the raw C API like the other hot registers."""
        self._uc_reg_read(self.uc._uch, X.UC_X86_REG_MSR, self._efer_ptr)
        return int(self._efer_buf.val)

    def mode(self) -> int:
        return mode_of(self.paging_state())

    def paging_state(self) -> PagingState:
        """CR0, CR3, CR4 and EFER: what a page walk and the operating mode depend on."""
        return PagingState(cr0=self.reg("cr0"), cr3=self.reg("cr3"), cr4=self.reg("cr4"),
                           efer=self.efer())  # fmt: skip

    def linear_pc(self, mode: int) -> int:
        """The linear address of the next instruction: CS*16+IP in real mode, else RIP (flat)."""
        rip = self.reg("rip")
        if mode == 16:
            return (self.reg("cs") << 4) + (rip & 0xFFFF)
        return rip if mode == 64 else rip & 0xFFFFFFFF

    # ------------------------------------------------------------------ start state
    def reset(self, boot: BootState) -> None:
        """Put the CPU in ``boot``'s mode at its entry point (notes §3.5-3.6)."""
        if boot.mode != 64 or self._booted:
            # A fresh engine of the boot mode lends its CPU state: for 16/32-bit guests, and for a
            # 64-bit guest loaded after another guest ran (whose mode and caches linger).
            donor_mode = {16: unicorn.UC_MODE_16, 32: unicorn.UC_MODE_32}.get(boot.mode,
                                                                              unicorn.UC_MODE_64)
            donor = unicorn.Uc(unicorn.UC_ARCH_X86, donor_mode)
            if boot.mode == 32:
                # A 32-bit donor loads descriptors from the GDT when selectors are written, so
                # the flat segments travel in the context with their hidden caches.
                donor.mem_map_ptr(0, self.mem.size, unicorn.UC_PROT_ALL, self.mem.host_address)
                donor.reg_write(X.UC_X86_REG_GDTR, (0, boot.gdt_base, boot.gdt_limit, 0))
                donor.reg_write(X.UC_X86_REG_CS, SEL_CODE32)
                for seg in (X.UC_X86_REG_DS, X.UC_X86_REG_ES, X.UC_X86_REG_SS):
                    donor.reg_write(seg, SEL_DATA)
            self.uc.context_restore(donor.context_save())
        if boot.mode == 64:
            self.uc.reg_write(X.UC_X86_REG_GDTR, (0, boot.gdt_base, boot.gdt_limit, 0))
            # In a 64-bit engine a selector write changes only the selector (notes §3.5): the
            # hidden cache already describes 64-bit code, and iretq would reload it from our GDT.
            self.uc.reg_write(X.UC_X86_REG_CS, SEL_CODE64)
            self.uc.reg_write(X.UC_X86_REG_SS, SEL_DATA)
        if boot.paging is not None:
            # Enable order matters: CR4 (PAE/PSE), CR3, EFER, then CR0.PG (notes §3.1).
            self.uc.reg_write(X.UC_X86_REG_CR4, boot.paging.cr4)
            self.uc.reg_write(X.UC_X86_REG_CR3, boot.paging.cr3)
            self.uc.msr_write(_MSR_EFER, boot.paging.efer)
            self.uc.reg_write(X.UC_X86_REG_CR0, boot.paging.cr0)
        self.set_reg("rsp", boot.stack)
        self.set_reg("rip", boot.entry)
        self.uc.ctl_flush_tb()
        self._booted = True

    # ------------------------------------------------------------------ the run loop
    def run(self, timeout: float | None, *, steps: int | None = None) -> Exit:
        """Run until the guest halts, faults, times out or a handler stops it; return that exit.

        ``steps`` runs at most that many instructions and then returns ``StopRequest("step")``
        (a debugger's single step; ``count=`` is slow, so only then)."""
        self._timed_out.clear()
        watchdog = None
        if timeout is not None:
            watchdog = threading.Timer(timeout, self._watchdog_fire)
            watchdog.daemon = True
            watchdog.start()
        try:
            while True:
                if self._timed_out.is_set():
                    mode = self.mode()
                    return Timeout(timeout or 0.0, mode, self.reg("rip"))
                self._stop = self._error = self._pending_fault = None
                self._resume = False
                if self._stale_code:
                    self._stale_code = False
                    self.uc.ctl_flush_tb()
                start = self.reg("rip")
                try:
                    self.uc.emu_start(start, _UNTIL, count=steps or 0)
                except unicorn.UcError as err:
                    if self._error is not None:
                        raise self._error from None
                    if self._stop is not None:  # a fault recorded by a hook, then stopped
                        return self._stop
                    return self._fault_from(err)
                if self._error is not None:
                    raise self._error
                if self._stop is not None:
                    return self._stop
                if steps is not None and self._resume and not self._timed_out.is_set():
                    # A handler wrote guest RAM during the step: the step is done all the same
                    # (the flush happens at the next emu_start).
                    return StopRequest("step", self.mode(), self.reg("rip"))
                if self._timed_out.is_set() or self._resume:
                    continue  # a timeout is reported at the top of the loop; a flush done there
                mode = self.mode()
                pc = self.linear_pc(mode)
                if self._byte_before(mode, pc) == _HLT:
                    return Halt(mode, self.reg("rip"))
                # Unicorn 2.1.4 with paging on stops silently, without calling the invalid-
                # instruction hook, at an invalid opcode it has met twice before (seen with
                # VMCALL: the third call in a loop). Finish the exit here, in the host loop.
                if steps is not None:
                    # A single step that did not move RIP off a VMCALL is the same silent stop.
                    if self.reg("rip") == start and self._code_at(pc) == VMCALL_BYTES:
                        stop = self._silent_invalid_opcode(mode, pc)
                        if stop is not None:
                            return stop
                    return StopRequest("step", mode, self.reg("rip"))
                stop = self._silent_invalid_opcode(mode, pc)
                if stop is not None:
                    return stop
        finally:
            if watchdog is not None:
                watchdog.cancel()

    def _code_at(self, pc: int) -> bytes:
        """The bytes of a VMCALL's length at linear ``pc``, or ``b""`` if they are unmapped."""
        try:
            return read_virt(self.mem, self.paging_state(), pc, len(VMCALL_BYTES))
        except GuestFault:
            return b""

    def _silent_invalid_opcode(self, mode: int, pc: int) -> Exit | None:
        """Handle a VMCALL Unicorn stopped at without a hook call; any other opcode is a #UD."""
        paging = self.paging_state()
        if self._code_at(pc) != VMCALL_BYTES:
            return self._fault("#UD invalid opcode", 0, 6)
        self._vmcall(mode, paging)
        if self._error is not None:
            raise self._error
        return self._stop  # None: resume after the VMCALL

    def _watchdog_fire(self) -> None:
        self._timed_out.set()
        self.uc.emu_stop()

    def _byte_before(self, mode: int, pc: int) -> int:
        try:
            return read_virt(self.mem, self.paging_state(), pc - 1, 1)[0]
        except GuestFault:
            return -1

    def _invalidate(self, pa: int, n: int) -> None:
        """A host write to guest RAM (DMA, a hypercall's result, the loader).

        Unicorn does not notice host writes, so code translated from that RAM may be stale (notes
        trap 2). ``ctl_remove_cache`` cannot help: it takes a guest-*virtual* address and walks the
        guest's page tables to find the page, which faults when the tables do not map it. So the
        whole translation cache is flushed at the next ``emu_start``; a write from a hook ends the
        current ``emu_start`` (at the end of the translation block) so the guest never runs stale
        code, except from an IN hook, which must not stop (trap 3) and never writes RAM itself.
        """
        self._stale_code = True
        if self._in_hook and not self._in_port_in:
            self._resume = True
            self.uc.emu_stop()

    # ------------------------------------------------------------------ hooks
    def _install_hooks(self) -> None:
        uc = self.uc
        uc.hook_add(unicorn.UC_HOOK_INSN_INVALID, self._on_invalid_insn)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_in, None, 1, 0, X.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_out, None, 1, 0, X.UC_X86_INS_OUT)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_cpuid, None, 1, 0, X.UC_X86_INS_CPUID)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._on_syscall, None, 1, 0, X.UC_X86_INS_SYSCALL)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(
            unicorn.UC_HOOK_MEM_UNMAPPED | unicorn.UC_HOOK_MEM_PROT, self._on_bad_memory
        )

    def _apply(self, outcome: Outcome, mode: int) -> None:
        """Carry out a dispatch outcome inside a hook."""
        if isinstance(outcome, Handled):
            for name, value in outcome.registers.items():
                self.set_reg(name, value)
        elif isinstance(outcome, Stopped):
            self.request_stop(outcome.reason)
        elif isinstance(outcome, Unhandled):
            self._stop = self._fault(outcome.why, 0, -1)
            self.uc.emu_stop()
        else:
            self._stop = outcome.fault
            self.uc.emu_stop()

    def request_stop(self, reason: str) -> None:
        """End the current run with a ``StopRequest`` (from a handler or a code hook; never from
        an IN hook, see trap 3)."""
        self._stop = StopRequest(reason, self.mode(), self.reg("rip"))
        self.uc.emu_stop()

    # ------------------------------------------------------------------ extension points
    def add_code_hook(self, callback: CodeHook, begin: int = 1, end: int = 0) -> int:
        """Call ``callback(address, size)`` before each instruction in ``[begin, end]`` (all
        code when begin > end). Costly (about 0.3 µs per instruction): for debuggers and traces,
        never on the default path. Returns a handle for ``remove_hook``."""

        def hook(uc: unicorn.Uc, address: int, size: int, _ud: object) -> None:
            try:
                callback(address, size)
            except BaseException as err:
                self._hook_error(err)

        return int(self.uc.hook_add(unicorn.UC_HOOK_CODE, hook, None, begin, end))

    def remove_hook(self, handle: int) -> None:
        self.uc.hook_del(handle)

    def general_registers(self, mode: int) -> dict[str, int]:
        """RAX..R15 (the low 32 bits outside long mode)."""
        mask = 0xFFFFFFFFFFFFFFFF if mode == 64 else 0xFFFFFFFF
        return {name: self.reg(name) & mask for name in _GENERAL}

    def _hook_error(self, err: BaseException) -> None:
        if self._error is None:
            self._error = err
        self.uc.emu_stop()

    def _on_invalid_insn(self, uc: unicorn.Uc, _ud: object) -> bool:
        """#UD: a VMCALL (ours to emulate) or a genuinely invalid opcode (a guest fault)."""
        self._in_hook = True
        try:
            paging = self.paging_state()
            mode = mode_of(paging)
            pc = self.linear_pc(mode)
            try:
                code = read_virt(self.mem, paging, pc, len(VMCALL_BYTES))
            except GuestFault:
                code = b""
            if code != VMCALL_BYTES:
                self._pending_fault = ("#UD invalid opcode", 0, 6)
                return False  # Unicorn ends the run with UC_ERR_INSN_INVALID
            self._vmcall(mode, paging)
        except BaseException as err:  # never let an exception unwind through Unicorn's C frames
            self._hook_error(err)
        finally:
            self._in_hook = False
        return True

    def _vmcall(self, mode: int, paging: PagingState) -> None:
        """The VMCALL exit: like VT-x, move RIP past the instruction, then run the handler."""
        rip = self.reg("rip") + len(VMCALL_BYTES)
        self.set_reg("rip", rip & 0xFFFF if mode == 16 else rip)
        mask = 0xFFFFFFFFFFFFFFFF if mode == 64 else 0xFFFFFFFF
        regs = [self.reg(r) & mask for r in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi")]
        exit_ = Hypercall(regs[0], (regs[1], regs[2], regs[3], regs[4], regs[5]), mode,
                          self.reg("rip"), paging)  # fmt: skip
        self._apply(self.on_exit(exit_), mode)

    def _on_in(self, uc: unicorn.Uc, port: int, size: int, _ud: object) -> int:
        # Always answered here, never by stopping: stopping inside rep insw loses a word (trap 3).
        self._in_hook = self._in_port_in = True
        try:
            outcome = self.on_exit(PortIn(port, size))
            if isinstance(outcome, Handled):
                return outcome.value
            self._apply(outcome, self.mode())
        except BaseException as err:
            self._hook_error(err)
        finally:
            self._in_hook = self._in_port_in = False
        return (1 << (8 * size)) - 1

    def _on_out(self, uc: unicorn.Uc, port: int, size: int, value: int, _ud: object) -> None:
        self._in_hook = True
        try:
            outcome = self.on_exit(PortOut(port, size, value))
            if not isinstance(outcome, Handled):
                self._apply(outcome, self.mode())
        except BaseException as err:
            self._hook_error(err)
        finally:
            self._in_hook = False

    def _on_cpuid(self, uc: unicorn.Uc, _ud: object) -> int:
        try:
            leaf = self.reg("rax") & 0xFFFFFFFF
            outcome = self.on_exit(Cpuid(leaf, self.reg("rcx") & 0xFFFFFFFF))
            if isinstance(outcome, Handled) and outcome.cpuid is not None:
                # Native CPUID zero-extends into RAX..RDX, so write the full registers (notes §2).
                for name, value in zip(("rax", "rbx", "rcx", "rdx"), outcome.cpuid, strict=True):
                    self.set_reg(name, value & 0xFFFFFFFF)
                return 1
            if not isinstance(outcome, Handled):
                self._apply(outcome, self.mode())
        except BaseException as err:
            self._hook_error(err)
        return 0

    def _on_syscall(self, uc: unicorn.Uc, _ud: object) -> None:
        """SYSCALL: Unicorn calls this with RIP on the instruction and resumes after it."""
        self._in_hook = True
        try:
            paging = self.paging_state()
            mode = mode_of(paging)
            rip = self.reg("rip") + 2  # syscall is 0f 05
            exit_ = Syscall(mode, rip, self.general_registers(mode), paging)
            self._apply(self.on_exit(exit_), mode)
        except BaseException as err:
            self._hook_error(err)
        finally:
            self._in_hook = False

    def _on_interrupt(self, uc: unicorn.Uc, intno: int, _ud: object) -> None:
        """A guest exception or INT n. Nothing is delivered through the IDT: the run ends."""
        try:
            mode = self.mode()
            pc = self.linear_pc(mode)
            try:
                before = read_virt(self.mem, self.paging_state(), pc - 2, 2)
            except GuestFault:
                before = b""
            if before == bytes((_INT_IMM8, intno)):
                # A software INT n (RIP is already past it): a real-mode guest calling the BIOS,
                # or a system call. Vectors overlap exceptions (INT 0x10 is vector 16, #MF), so
                # the instruction bytes decide. It is an exit like any other.
                paging = self.paging_state()
                exit_ = SoftwareInterrupt(intno, mode, self.reg("rip"),
                                          self.general_registers(mode), paging)  # fmt: skip
                self._apply(self.on_exit(exit_), mode)
                return  # Unicorn resumes after the INT unless _apply stopped it
            kind = _VECTORS.get(intno, f"interrupt vector {intno:#x}")
            address = self.reg("cr2") if kind == "#PF" else 0
            self._stop = self._fault(kind, address, intno)
        except BaseException as err:
            self._hook_error(err)
            return
        uc.emu_stop()

    def _on_bad_memory(self, uc: unicorn.Uc, access: int, address: int, size: int,
                       value: int, _ud: object) -> bool:  # fmt: skip
        kinds = {
            unicorn.UC_MEM_READ_UNMAPPED: "read of unmapped memory",
            unicorn.UC_MEM_WRITE_UNMAPPED: "write to unmapped memory",
            unicorn.UC_MEM_FETCH_UNMAPPED: "fetch from unmapped memory",
            unicorn.UC_MEM_WRITE_PROT: "write to read-only memory",
            unicorn.UC_MEM_FETCH_PROT: "fetch from non-executable memory",
        }
        self._pending_fault = (kinds.get(access, f"memory access type {access}"), address, -1)
        return False  # Unicorn ends the run with UC_ERR_*; _fault_from reports it

    # ------------------------------------------------------------------ fault reports
    def _fault(self, kind: str, address: int, vector: int) -> Fault:
        mode = self.mode()
        pc = self.linear_pc(mode)
        try:
            code = read_virt(self.mem, self.paging_state(), pc, MAX_INSN)
        except GuestFault:
            try:
                code = read_virt(self.mem, self.paging_state(), pc, 1)
            except GuestFault:
                code = b""
        instruction = disassemble_one(code, pc, mode) if code else "<instruction unreadable>"
        mask = 0xFFFFFFFFFFFFFFFF if mode == 64 else 0xFFFFFFFF
        regs = {name: self.reg(name) & mask for name in _FAULT_REGS}
        return Fault(kind, address, vector, mode, self.reg("cs"), self.reg("rip"), pc,
                     instruction, regs)  # fmt: skip

    def _fault_from(self, err: unicorn.UcError) -> Fault:
        if self._pending_fault is not None:
            kind, address, vector = self._pending_fault
        else:
            kind, address, vector = f"Unicorn error: {err}", 0, -1
        return self._fault(kind, address, vector)


@cache
def native_cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
    """EAX..EDX of Unicorn's own CPU model (a Haswell) for a leaf, run once in a scratch engine."""
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")  # cpuid
    uc.reg_write(X.UC_X86_REG_RAX, leaf)
    uc.reg_write(X.UC_X86_REG_RCX, subleaf)
    uc.emu_start(0, 2)
    eax, ebx, ecx, edx = (
        uc.reg_read(r) & 0xFFFFFFFF
        for r in (X.UC_X86_REG_RAX, X.UC_X86_REG_RBX, X.UC_X86_REG_RCX, X.UC_X86_REG_RDX)
    )
    return eax, ebx, ecx, edx
