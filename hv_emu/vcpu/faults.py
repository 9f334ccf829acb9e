"""The fault report: what a run that ended in a guest exception or a bad access prints.

Models: the part of a VMM that, when the guest does something the hypervisor will not go on from
(an exception it does not reflect, an access outside RAM, an exit nobody handles), writes down the
CPU state the way a kernel oops does: the kind of fault and its vector, the faulting address, the
mode, CS:RIP, the instruction at the linear PC (disassembled) and the main registers.

Follows: Intel SDM vol. 3A 6.3.1 and table 6-1 (exception vectors and their mnemonics); CR2 holds
the linear address of a page fault (6.15, interrupt 14). docs/UNICORN.md: a guest exception
reaches the hypervisor with RIP on the faulting instruction and CR2 set for a #PF (U18); the bytes
at the PC are read through the guest's page tables, as Unicorn reads physical memory only (U7).

Leaves out: error codes pushed by the exception, the segment registers other than CS, RFLAGS and
the debug registers.

Guest controls: every value in the report (registers, the bytes at the PC, which may be unmapped:
then one byte, or none, is shown); the report is built without raising for any of them.
"""

from __future__ import annotations

from hv_emu.errors import GuestFault
from hv_emu.exits import Fault
from hv_emu.memory.walk import read_virt
from hv_emu.vcpu.disasm import MAX_INSN, disassemble_one
from hv_emu.vcpu.engine import U64, Engine, mode_of

_FAULT_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "cr0", "cr2", "cr3")
_VECTORS = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
            10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
            18: "#MC", 19: "#XM"}  # fmt: skip
#: The vector of a page fault, whose faulting address the CPU leaves in CR2.
PAGE_FAULT = 14


def exception_name(vector: int) -> str:
    """``#GP`` for 13 and so on; an unnamed vector by its number."""
    return _VECTORS.get(vector, f"interrupt vector {vector:#x}")


def fault_report(cpu: Engine, kind: str, address: int, vector: int) -> Fault:
    """The ``Fault`` exit for the CPU as it stands: ``kind`` at ``address`` (vector -1: none)."""
    paging = cpu.paging_state()
    mode = mode_of(paging)
    pc = cpu.linear_pc(mode)
    try:
        code = read_virt(cpu.mem, paging, pc, MAX_INSN)
    except GuestFault:
        try:
            code = read_virt(cpu.mem, paging, pc, 1)
        except GuestFault:
            code = b""
    instruction = disassemble_one(code, pc, mode) if code else "<instruction unreadable>"
    mask = U64 if mode == 64 else 0xFFFFFFFF
    regs = {name: cpu.reg(name) & mask for name in _FAULT_REGS}
    return Fault(kind, address, vector, mode, cpu.reg("cs"), cpu.reg("rip"), pc, instruction,
                 regs)  # fmt: skip
