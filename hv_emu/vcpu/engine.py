"""The CPU itself: one Unicorn engine over guest RAM, its registers, its mode, its reset.

Models: the hardware half of a vCPU, what VT-x keeps in the VMCS guest-state area: the general,
segment and control registers, EFER, and the operating mode they imply (real, protected or long).
Guest RAM is the very mmap ``GuestMemory`` owns, mapped into the engine with no copy either way.
``reset`` puts the CPU in a boot state's mode at its entry point, like INIT plus the firmware's
hand-over.

Follows: docs/UNICORN.md (Unicorn 2.1.4): the engine is always opened in ``UC_MODE_64`` and a
16/32-bit start state is copied in from a fresh donor engine of that mode, so the 64-bit register
API works in every mode (U1-U3, U5); the hot registers are read through the raw C API, several at
a time with ``uc_reg_read_batch``, as the Python wrapper costs four times as much per register
(U25). Intel SDM vol. 3A 2.5 (CR0.PE, EFER.LMA) and 9.8 (the order in which paging is switched
on).

Leaves out: compatibility mode (a long-mode guest is assumed to run 64-bit code: CS.L is not
read), MSRs other than EFER, the FPU/SSE data registers (only the x87 control, status and tag
words and MXCSR are set at reset, U63), SMP.

Guest controls: every register value read here; nothing here trusts one (the mode is decided from
CR0 and EFER as the CPU decides it, whatever the guest wrote into them).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import unicorn
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _binding
from unicorn.unicorn_py3.arch.intel import HOOK_INSN_IN_CFUNC, HOOK_INSN_OUT_CFUNC

from hv_emu.layout import PAGE_SIZE, SEL_CODE32, SEL_CODE64, SEL_DATA
from hv_emu.memory.boot import BootState
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import CR0_PE, EFER_LMA, MSR_EFER, PagingState

U64 = 0xFFFFFFFFFFFFFFFF
#: MXCSR at power-up and RESET (SDM vol. 3A table 9-1), and as Linux starts a process: every
#: SIMD exception masked.
MXCSR_RESET = 0x1F80
#: The full x87 tag word with all eight registers empty (11b each), as FNINIT leaves it.
FPTAG_EMPTY = 0xFFFF

#: A raw IN hook: (engine handle, port, size, user data) -> the value read.
RawInHook = Callable[[object, int, int, object], int]
#: A raw OUT hook: (engine handle, port, size, value, user data).
RawOutHook = Callable[[object, int, int, int, object], None]
#: A raw invalid-instruction hook: (engine handle, user data) -> handled.
RawInvalidHook = Callable[[object, object], bool]

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
_SELECTORS = {"ds": X.UC_X86_REG_DS, "es": X.UC_X86_REG_ES, "fs": X.UC_X86_REG_FS,
              "gs": X.UC_X86_REG_GS}  # fmt: skip
GENERAL = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip


class _Msr(ctypes.Structure):
    """``uc_x86_msr``: the argument of a raw ``uc_reg_read(UC_X86_REG_MSR)``."""

    _fields_ = (("rid", ctypes.c_uint32), ("val", ctypes.c_uint64))


def mode_of(paging: PagingState) -> int:
    """16 if CR0.PE is clear, 64 if EFER.LMA is set, else 32 (docs/UNICORN.md U5)."""
    if not paging.cr0 & CR0_PE:
        return 16
    return 64 if paging.efer & EFER_LMA else 32


class RegisterBatch:
    """A fixed list of registers fetched in one ``uc_reg_read_batch`` call: one trip into C for
    the lot (about 1 µs for a dozen, against 0.5 µs each one at a time). ``"efer"`` may be among
    them; it is read as the MSR it is."""

    def __init__(self, uc: unicorn.Uc, names: Sequence[str]) -> None:
        count = len(names)
        self._handle = uc._uch
        # Each slot always holds the same register, so a segment register (which fills only the
        # low two bytes) finds the high bytes still zero from this allocation.
        self._values = (ctypes.c_uint64 * count)()
        self._efer = _Msr(MSR_EFER, 0)
        self._efer_at = names.index("efer") if "efer" in names else -1
        ids = [X.UC_X86_REG_MSR if name == "efer" else _GPRS[name] for name in names]
        self._ids = (ctypes.c_int * count)(*ids)
        base, size = ctypes.addressof(self._values), ctypes.sizeof(ctypes.c_uint64)
        addresses = [base + size * i for i in range(count)]
        if self._efer_at >= 0:
            addresses[self._efer_at] = ctypes.addressof(self._efer)
        self._pointers = (ctypes.c_void_p * count)(*addresses)
        self._count = count
        self._read = _binding.uclib.uc_reg_read_batch

    def read(self) -> list[int]:
        """The registers' values, in the order they were named."""
        status = self._read(self._handle, self._ids, self._pointers, self._count)
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        values = self._values[:]
        if self._efer_at >= 0:
            values[self._efer_at] = int(self._efer.val)
        return values


class Engine:
    """The Unicorn engine of one vCPU, with guest RAM mapped in and registers by name."""

    def __init__(self, mem: GuestMemory) -> None:
        self.mem = mem
        self.uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        # The guest's RAM is the very mmap GuestMemory owns: no copies either way (U8).
        self.uc.mem_map_ptr(0, mem.size, unicorn.UC_PROT_ALL, mem.host_address)
        self._handle = self.uc._uch
        self._reg_buf = ctypes.c_uint64()
        self._reg_ptr = ctypes.byref(self._reg_buf)
        self._efer_buf = _Msr(MSR_EFER, 0)
        self._efer_ptr = ctypes.byref(self._efer_buf)
        self._uc_reg_read = _binding.uclib.uc_reg_read
        self._uc_reg_write = _binding.uclib.uc_reg_write
        self._control = RegisterBatch(self.uc, ("cr0", "cr3", "cr4", "efer"))
        self._general = RegisterBatch(self.uc, GENERAL)
        self._booted = False  # reset() has run: the engine is no longer in its fresh state
        self._raw_hooks: list[object] = []  # the C function pointers Unicorn calls: kept alive
        self._vmem_read = _binding.uclib.uc_vmem_read
        self._fetch_buf = ctypes.create_string_buffer(16)

    def fetched_bytes(self, pc: int, n: int) -> bytes | None:
        """``n`` (<= 16) bytes at linear ``pc`` read through the CPU's own MMU as an instruction
        fetch (``uc_vmem_read``, about 1 µs against about 5 µs for the Python page walk), or
        ``None``. Only for bytes the CPU has just fetched, within one page: a failing read
        overwrites CR2 (docs/UNICORN.md U36), which a page the CPU fetched from cannot cause."""
        if n > len(self._fetch_buf) or pc % PAGE_SIZE + n > PAGE_SIZE:
            return None
        status = self._vmem_read(self._handle, ctypes.c_uint64(pc),
                                 ctypes.c_int(unicorn.UC_PROT_EXEC), self._fetch_buf,
                                 ctypes.c_size_t(n))  # fmt: skip
        return self._fetch_buf.raw[:n] if status == unicorn.UC_ERR_OK else None

    # ------------------------------------------------------------------ raw hooks
    def add_port_hooks(self, on_in: RawInHook, on_out: RawOutHook) -> None:
        """The IN and OUT hooks as C function pointers registered with ``uc_hook_add`` itself.

        The binding's ``hook_add`` wraps a callback in two more Python calls (an exception guard
        and an argument adapter), more than half of a bare hook's cost (docs/UNICORN.md U34). The
        callbacks here get the engine's raw handle, not the ``Uc``, and must never raise (U22):
        ctypes would print the exception and return 0 to Unicorn."""
        self._raw_hook_add(unicorn.UC_HOOK_INSN, HOOK_INSN_IN_CFUNC(on_in), X.UC_X86_INS_IN)
        self._raw_hook_add(unicorn.UC_HOOK_INSN, HOOK_INSN_OUT_CFUNC(on_out), X.UC_X86_INS_OUT)

    def add_invalid_insn_hook(self, on_invalid: RawInvalidHook) -> None:
        """The invalid-instruction (#UD, so VMCALL) hook, registered raw like the port hooks."""
        self._raw_hook_add(unicorn.UC_HOOK_INSN_INVALID,
                           _binding.HOOK_INSN_INVALID_CFUNC(on_invalid))  # fmt: skip

    def _raw_hook_add(self, kind: int, pointer: object, *insn: int) -> None:
        handle = _binding.uc_hook_h()
        extra = [ctypes.c_int(i) for i in insn]
        status = _binding.uclib.uc_hook_add(
            self._handle, ctypes.byref(handle), kind, pointer, None, ctypes.c_uint64(1),
            ctypes.c_uint64(0), *extra,
        )  # fmt: skip
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status)
        self._raw_hooks.append(pointer)

    # ------------------------------------------------------------------ registers
    def reg(self, name: str) -> int:
        """A register by name (``rax``, ``cr3``...), read through the raw C API (0.5 µs)."""
        self._reg_buf.value = 0  # segment registers fill only the low bytes
        self._uc_reg_read(self._handle, _GPRS[name], self._reg_ptr)
        return int(self._reg_buf.value)

    def set_reg(self, name: str, value: int) -> None:
        """Write a register by name through the raw C API (the wrapper costs four times more)."""
        self._reg_buf.value = value & U64
        status = self._uc_reg_write(self._handle, _GPRS[name], self._reg_ptr)
        if status != unicorn.UC_ERR_OK:
            raise unicorn.UcError(status, _GPRS[name])

    def registers(self, names: tuple[str, ...] = tuple(_GPRS)) -> dict[str, int]:
        return {name: self.reg(name) for name in names}

    def general_registers(self, mode: int) -> dict[str, int]:
        """RAX..R15 (the low 32 bits outside long mode), in one trip into Unicorn."""
        mask = U64 if mode == 64 else 0xFFFFFFFF
        return {name: value & mask for name, value in zip(GENERAL, self._general.read(),
                                                          strict=True)}  # fmt: skip

    def selectors(self) -> dict[str, int]:
        """The visible data-segment selectors DS, ES, FS and GS (an OS personality asks which
        segments a changed GDT entry is loaded in: docs/UNICORN.md U38)."""
        return {name: int(self.uc.reg_read(reg)) & 0xFFFF for name, reg in _SELECTORS.items()}

    def efer(self) -> int:
        """The EFER MSR, read through the raw C API like the other hot registers."""
        self._uc_reg_read(self._handle, X.UC_X86_REG_MSR, self._efer_ptr)
        return int(self._efer_buf.val)

    def paging_state(self) -> PagingState:
        """CR0, CR3, CR4 and EFER: what a page walk and the operating mode depend on."""
        cr0, cr3, cr4, efer = self._control.read()
        return PagingState(cr0=cr0, cr3=cr3, cr4=cr4, efer=efer)

    def mode(self) -> int:
        return mode_of(self.paging_state())

    def linear_pc(self, mode: int) -> int:
        """The linear address of the next instruction: CS*16+IP in real mode, else RIP (flat)."""
        return self.linear_address(mode, self.reg("rip"))

    def linear_address(self, mode: int, rip: int) -> int:
        """The linear address of code at ``rip``: CS*16+IP in real mode, else RIP (flat)."""
        if mode == 16:
            return (self.reg("cs") << 4) + (rip & 0xFFFF)
        return rip if mode == 64 else rip & 0xFFFFFFFF

    # ------------------------------------------------------------------ start state
    def reset(self, boot: BootState) -> None:
        """Put the CPU in ``boot``'s mode at its entry point (docs/UNICORN.md U2, U3)."""
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
            # In a 64-bit engine a selector write changes only the selector (docs/UNICORN.md
            # U2): the hidden cache already describes 64-bit code, and iretq would reload it from
            # our GDT.
            self.uc.reg_write(X.UC_X86_REG_CS, SEL_CODE64)
            self.uc.reg_write(X.UC_X86_REG_SS, SEL_DATA)
        if boot.paging is not None:
            # Enable order matters: CR4 (PAE/PSE), CR3, EFER, then CR0.PG (docs/UNICORN.md U6).
            self.uc.reg_write(X.UC_X86_REG_CR4, boot.paging.cr4)
            self.uc.reg_write(X.UC_X86_REG_CR3, boot.paging.cr3)
            self.uc.msr_write(MSR_EFER, boot.paging.efer)
            self.uc.reg_write(X.UC_X86_REG_CR0, boot.paging.cr0)
        if boot.gdt_linear is not None:
            # The donor loaded the flat descriptors with paging off (physical = linear); with
            # paging on, the CPU reads the GDT at a linear address (docs/UNICORN.md U38).
            self.uc.reg_write(X.UC_X86_REG_GDTR, (0, boot.gdt_linear, boot.gdt_limit, 0))
        # Unicorn's fresh engine leaves FCW = 0 and MXCSR = 0 (every x87 exception unmasked,
        # single precision); the x87 and SSE control state is set here (docs/UNICORN.md U63).
        self.uc.reg_write(X.UC_X86_REG_FPCW, boot.fpu_control)
        self.uc.reg_write(X.UC_X86_REG_FPSW, 0)
        self.uc.reg_write(X.UC_X86_REG_FPTAG, FPTAG_EMPTY)
        self.uc.reg_write(X.UC_X86_REG_MXCSR, MXCSR_RESET)
        self.set_reg("rsp", boot.stack)
        self.set_reg("rip", boot.entry)
        self.uc.ctl_flush_tb()  # the loader wrote a new image, which Unicorn did not see (U9)
        self._booted = True
