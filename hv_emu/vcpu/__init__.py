"""The virtual CPU: one Unicorn engine, its traps turned into VM exits.

Models: the part of a VMM that runs guest code and regains control at each VM exit, in four parts:
``engine`` (the CPU: Unicorn over guest RAM, registers, mode, reset), ``traps`` (the hooks that
turn VMCALL, IN/OUT, CPUID, SYSCALL, INT n, exceptions and bad accesses into exits), ``runloop``
(``Vcpu.run``: enter the guest, HLT, the watchdog, the stale-code flush, single steps) and
``faults`` (the fault report), plus ``cpuid_native`` (the CPU model's own CPUID answers),
``disasm`` (capstone, for fault reports and traces), ``string_io`` and ``bulk_io`` (a ``rep
ins*``/``rep outs*`` decoded and moved a block per exit) and ``mmio`` (MMIO windows: loads and
stores as device calls); event injection: ``exceptions`` (who takes a vector), ``injection``
(events in VT-x terms, the double-fault table), ``deliver`` (one injection), ``ivt`` and ``idt``
(delivery in real and protected/long mode), ``hidden`` (segment caches, CPL, the shadow),
``error_codes`` and ``platform`` (INTR/INTA, the interrupt window, guest time while a timer is
armed, HLT waiting), ``icount`` (what a budgeted entry ran: a HLT, or the budget running
out); ``exception_state`` (the exception in flight, forgotten once a handler took it, or once
delivered: the one place that clears it); ``stopping`` (the watchdog's and the ending signals'
end of a run, host waits included).

Follows: docs/UNICORN.md (Unicorn 2.1.4: the facts U1-U25, U34-U44, U50-U52, U60-U62, U65, U74
and their work-arounds). This package is the only place that imports unicorn.

Leaves out: NMIs and the APIC, MSR and control-register exits, SMP (see each module).

Guest controls: all register and memory state the vCPU reads (see each module).
"""

import os

# Wrong register ids must fail loudly instead of reading 0 (docs/UNICORN.md U4); set before any
# engine exists.
os.environ.setdefault("UC_IGNORE_REG_BREAK", "1")

from hv_emu.vcpu.cpuid_native import native_cpuid
from hv_emu.vcpu.engine import mode_of
from hv_emu.vcpu.runloop import Vcpu
from hv_emu.vcpu.traps import CodeHook, ExitHandler

__all__ = ["CodeHook", "ExitHandler", "Vcpu", "mode_of", "native_cpuid"]
