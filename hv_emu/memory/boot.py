"""The CPU state a guest starts in: what the loader decides and the vCPU applies.

Models: the hand-over from firmware/boot loader to the guest's first instruction: operating mode,
entry point, stack, descriptor table and (in 32/64-bit mode) paging registers.

Follows: the x86 reset and mode-switch rules of Intel SDM vol. 3A ch. 9 (real mode at reset,
protected mode with CR0.PE, IA-32e mode with EFER.LME + CR4.PAE + CR0.PG), and the boot protocols
that start kernels already in protected or long mode with flat segments (Multiboot, Linux 64-bit
boot).

Leaves out: the BIOS (``firmware/`` installs it for 16-bit runs), the A20 gate (always on), SMM.

Guest controls: nothing; this is decided before the guest runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hv_emu.memory.walk import PagingState

#: The operating modes a guest may start in (``--mode``).
MODES = (16, 32, 64)
#: The x87 control word at power-up and RESET (Intel SDM vol. 3A table 9-1: 0040H): what a flat
#: guest sees.
FCW_INIT = 0x0040
#: The x87 control word after FNINIT (all exceptions masked, 64-bit precision, round to nearest):
#: what Linux gives a new process (``fpstate_init_fstate``).
FCW_FNINIT = 0x037F


@dataclass(frozen=True)
class BootState:
    """Everything the vCPU needs to start the guest.

    ``entry`` and ``stack`` are offsets in the code/stack segments (equal to linear addresses, since
    every segment base is 0 at start). ``paging`` is ``None`` when paging is off; in long mode it is
    always set (long mode requires paging). ``gdt_base``/``gdt_limit`` describe the loader's flat
    GDT (0/0 in real mode); ``gdt_base`` is its physical address, and ``gdt_linear`` (if set) the
    GDTR base once paging is on, where the guest's page tables map it (``None``: ``gdt_base``).
    ``fpu_control`` is the x87 control word: ``FCW_INIT`` for a flat guest, ``FCW_FNINIT`` for a
    Linux process (docs/UNICORN.md U63).
    """

    mode: int
    entry: int
    stack: int
    paging: PagingState | None
    gdt_base: int = 0
    gdt_limit: int = 0
    gdt_linear: int | None = None
    #: The x87 control word the guest starts with (MXCSR is always 1F80H, status 0, tags empty).
    fpu_control: int = FCW_INIT

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode} is not one of {MODES}")
        if self.mode == 64 and self.paging is None:
            raise ValueError("long mode requires paging")
