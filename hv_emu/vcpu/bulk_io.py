"""String I/O in one exit: the vCPU's half of bulk ``rep outs*`` and ``rep ins*``.

Models: what KVM's ``complete_emulated_pio``/``kvm_fast_pio`` do for a string I/O instruction: on
the first element's IN or OUT exit, find the instruction at RIP (``string_io.py`` decodes it and
plans the block), move as many elements as the device takes or gives at once through the guest's
page walk, and write RCX and RSI/RDI so that Unicorn's own update of that element finishes them
(docs/UNICORN.md U35). The port hooks in ``traps.py`` call in here.

Follows: docs/UNICORN.md U9-U11 and U35 (host stores from an IN hook cannot end ``emu_start``, so
the translated code they overwrite is dropped here with ``ctl_remove_cache``, page by page, where
the CPU may fetch from every stored page: CPL 0, no execute-disable, no SMEP), Intel SDM vol. 2B
(INS, OUTS).

Leaves out, one element per exit as before: an INS block at CPL 3 (the walk has no U/S checks),
with EFER.NXE or CR4.SMEP on, or over the pages of the instruction itself (the CPU's own stores
notice code they change; ours are outside the translation block that runs); what
``string_io.py`` leaves out.

Guest controls: the instruction bytes, RCX, RSI/RDI, DF, the segments and the memory moved; every
block is bounded by the device's room, and every page is translated before a byte moves.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Protocol

from hv_emu.errors import GuestFault
from hv_emu.layout import PAGE_SIZE
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import PagingState, plan_write, read_virt
from hv_emu.vcpu.engine import Engine, RegisterBatch, mode_of
from hv_emu.vcpu.string_io import (
    MAX_INSN,
    RepString,
    decode_rep_string,
    elements_in_order,
    plan_block,
    registers_after,
)

_NOT_REP_MAX = 4096  # RIPs remembered as holding no rep string I/O (the guest picks them: bounded)
_CR0_PG = 1 << 31
_CR4_SMEP = 1 << 20
_EFER_NXE = 1 << 11


class PortIo(Protocol):
    """The port bus as the direct path sees it (``bus.PortIoBus``): each port's IN and OUT,
    resolved, indexed by the port (Unicorn gives 16-bit ports and sizes 1, 2, 4: U13)."""

    @property
    def readers(self) -> Sequence[Callable[[int, int], int]]: ...

    @property
    def writers(self) -> Sequence[Callable[[int, int, int], None]]: ...

    @property
    def block_ports(self) -> Container[int]: ...

    def write_room(self, port: int, size: int) -> int: ...

    def write_block(self, port: int, size: int, data: bytes) -> None: ...

    def read_room(self, port: int, size: int) -> int: ...

    def read_block(self, port: int, size: int, count: int) -> bytes: ...


class BulkStringIo(Engine):
    """The engine's string-I/O fast path, used by the port hooks of ``Traps``."""

    _read_only: range | None  # guest-physical RAM the guest may not write (Traps, U46)

    def __init__(self, mem: GuestMemory) -> None:
        super().__init__(mem)
        self._string_regs = RegisterBatch(self.uc, ("rcx", "rsi", "rflags"))
        self._ins_regs = RegisterBatch(self.uc, ("rcx", "rdi", "rflags", "cs", "es"))
        # RIPs of INs and OUTs to block ports that were no rep ins*/outs*: not decoded again (a
        # miss here only costs speed: such an access then moves one element, as it always could).
        self._not_rep_string: set[int] = set()
        self._in_port_in = False  # inside an IN hook, where stopping would lose data (U11)
        #: A host write made by the vCPU itself that has already dropped the translated code it
        #: overwrote (bulk ``rep ins*``): nothing for the write listener to flush.
        self._code_dropped_here = False

    def _rep_outs(self, ports: PortIo, port: int, size: int, value: int) -> bool:
        """The first element's exit of a ``rep outs*`` to a device that takes blocks: send it as
        many elements as it takes now and leave RCX/RSI so that Unicorn's own update of this
        element finishes them (``string_io.py``, docs/UNICORN.md U35). False: not such an
        instruction, or nothing to gain; the caller sends this one element alone."""
        room = ports.write_room(port, size)
        if room < 2:
            return False
        rip = self.reg("rip")
        if rip in self._not_rep_string:
            return False
        paging = self.paging_state()
        mode = mode_of(paging)
        insn = self._rep_string_at(paging, mode, rip, size, ins=False)
        if insn is None:
            return False
        rcx, rsi, rflags = self._string_regs.read()
        block = plan_block(insn, rcx, rsi, rflags, room)
        if block is None:
            return False
        base = self.reg(insn.segment) << 4 if mode == 16 else 0
        try:
            data = read_virt(self.mem, paging, base + block.start, block.count * size)
        except GuestFault:
            return False  # the CPU meets the fault itself, element by element
        data = elements_in_order(data, size, block.reverse)
        # The first element as the CPU already fetched it; the rest copied out once, here.
        ports.write_block(port, size, value.to_bytes(size, "little") + data[size:])
        new_rcx, new_rsi = registers_after(insn, rcx, rsi, rflags, block.count)
        self.set_reg("rcx", new_rcx)
        self.set_reg("rsi", new_rsi)
        return True

    def _rep_string_at(self, paging: PagingState, mode: int, rip: int, size: int, *,
                       ins: bool) -> RepString | None:  # fmt: skip
        """The ``rep ins*`` (``ins``) or ``rep outs*`` of ``size`` at ``rip``, or None (and the
        RIP is remembered as holding none)."""
        insn = decode_rep_string(self._code_at(paging, self.linear_address(mode, rip)), mode)
        if insn is None or insn.size != size or insn.ins != ins:
            if len(self._not_rep_string) >= _NOT_REP_MAX:
                self._not_rep_string.clear()
            self._not_rep_string.add(rip)
            return None
        return insn

    def _rep_ins(self, ports: PortIo, port: int, size: int) -> int | None:
        """The first element's exit of a ``rep ins*`` from a device that gives blocks: store as
        many elements as it gives now, return the first (the CPU stores it at RDI itself) and
        leave RCX/RDI so that Unicorn's own update of this element finishes them (U35). The
        host stores cannot end ``emu_start`` from an IN hook (U11), so the translated code they
        overwrite is dropped here, page by page (U10): only where that is safe, at CPL 0 with no
        execute-disable and no SMEP (every stored page is then one the CPU may fetch from) and
        never in the pages of the instruction itself. ``None``: not such an instruction, or
        nothing to gain or not safe; the caller reads this one element alone."""
        room = ports.read_room(port, size)
        if room < 2:
            return None
        rip = self.reg("rip")
        if rip in self._not_rep_string:
            return None
        paging = self.paging_state()
        mode = mode_of(paging)
        if paging.cr4 & _CR4_SMEP or (paging.efer & _EFER_NXE and paging.cr0 & _CR0_PG):
            return None
        insn = self._rep_string_at(paging, mode, rip, size, ins=True)
        if insn is None:
            return None
        rcx, rdi, rflags, cs, es = self._ins_regs.read()
        if mode != 16 and cs & 3:
            return None  # CPL 3: stores would need the U/S checks the walk leaves out
        block = plan_block(insn, rcx, rdi, rflags, room)
        if block is None:
            return None
        start = (es << 4 if mode == 16 else 0) + block.start
        end = start + block.count * size
        pc = self.linear_address(mode, rip)
        code_pages = range(pc // PAGE_SIZE, (pc + MAX_INSN - 1) // PAGE_SIZE + 1)
        if any(page in code_pages for page in range(start // PAGE_SIZE,
                                                    (end - 1) // PAGE_SIZE + 1)):  # fmt: skip
            return None  # rewriting its own code: the CPU's stores notice that, ours would not
        try:
            runs = plan_write(self.mem, paging, start, end - start)
        except GuestFault:
            return None  # the CPU meets the fault itself, element by element
        guarded = self._read_only
        if guarded is not None and any(pa < guarded.stop and guarded.start < pa + length
                                       for pa, length in runs):  # fmt: skip
            return None  # read-only RAM (the firmware's ROM, U46): the CPU's stores fault there
        data = elements_in_order(ports.read_block(port, size, block.count), size, block.reverse)
        first = block.count - 1 if block.reverse else 0  # the element the CPU stores at RDI
        value = int.from_bytes(data[first * size : (first + 1) * size], "little")
        self._in_port_in = self._code_dropped_here = True
        try:
            offset = 0
            for pa, length in runs:
                self.mem.write(pa, data[offset : offset + length])
                offset += length
        finally:
            self._in_port_in = self._code_dropped_here = False
        for page_start in range(start - start % PAGE_SIZE, end, PAGE_SIZE):
            self.uc.ctl_remove_cache(max(start, page_start), min(end, page_start + PAGE_SIZE))
        new_rcx, new_rdi = registers_after(insn, rcx, rdi, rflags, block.count)
        self.set_reg("rcx", new_rcx)
        self.set_reg("rdi", new_rdi)
        return value

    def _code_at(self, paging: PagingState, pc: int) -> bytes:
        """Up to 15 instruction bytes at linear ``pc`` (fewer where a page is unmapped)."""
        first = min(MAX_INSN, PAGE_SIZE - pc % PAGE_SIZE)
        code = b""
        for va, n in ((pc, first), (pc + first, MAX_INSN - first)):
            if n:
                try:
                    code += read_virt(self.mem, paging, va, n)
                except GuestFault:
                    break
        return code
