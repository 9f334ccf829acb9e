"""String I/O in bulk: one ``rep outs*`` or ``rep ins*`` exit moves a whole block.

Models: the string-I/O part of a VMM's instruction emulator (KVM's ``emulator_pio_in_out`` with a
count, ``kvm_fast_pio``): on the first element's exit of ``rep outsb/w/d`` or ``rep insb/w/d``
to a device that moves blocks, the instruction at RIP is decoded (prefixes REP, operand size 0x66,
address size 0x67, segment overrides; the direction flag; 16-, 32- and 64-bit address sizes), the
next elements are copied out of guest memory (OUTS) or into it (INS) through the guest's page walk,
and RCX and RSI/RDI are left exactly where the CPU leaves them after that many elements. Unicorn
then finishes the element it was executing: it adds the stride to RSI/RDI, takes 1 from RCX and
ends the instruction, or goes on with the elements the device did not move, one exit each
(docs/UNICORN.md U35).

Follows: Intel SDM vol. 2B, OUTS and INS (operand and address sizes, DF, the segment override of
OUTS's source; INS always stores through ES, which no prefix overrides) and vol. 2A 2.1 (prefix
groups); vol. 1 3.3.7 (16-bit offsets wrap at 64 KiB).

Leaves out, answered one element per exit as before: REPNE (0xF2) and LOCK, REX prefixes, FS/GS
overrides of OUTS (their bases are not read), any run that wraps the offset or faults part-way, and
non-flat 32-bit segments (hv-emu assumes flat segments outside real mode, as everywhere). The
conditions under which INS's host stores are safe for translated code are the caller's
(``traps.py``, docs/UNICORN.md U10).

Guest controls: the instruction bytes (up to 15 are read, a prefix flood is refused), RCX (the
block is bounded by the device's room, never by RCX alone), RSI/RDI, DF, the segment registers,
and the memory copied, which is read or written once per block through the page walk.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_INSN = 15  # the architectural limit of an x86 instruction's length
_SEGMENTS = {0x26: "es", 0x2E: "cs", 0x36: "ss", 0x3E: "ds", 0x64: "fs", 0x65: "gs"}
_STRING_IO = {0x6C: (True, True), 0x6D: (True, False), 0x6E: (False, True), 0x6F: (False, False)}
"""opcode -> (ins, byte-sized)"""
DF = 1 << 10  # RFLAGS.DF


@dataclass(frozen=True)
class RepString:
    """A decoded ``rep outs*`` or ``rep ins*`` (``ins``): element ``size`` in bytes,
    ``address_size`` in bits (16/32/64), ``segment`` of the memory operand (OUTS: ``"ds"`` unless
    overridden; INS: always ``"es"``)."""

    size: int
    address_size: int
    segment: str
    ins: bool = False

    @property
    def offset_mask(self) -> int:
        return (1 << self.address_size) - 1


def decode_rep_string(code: bytes, mode: int) -> RepString | None:
    """The ``rep outs*`` or ``rep ins*`` at the start of ``code`` in a ``mode``-bit code segment,
    or ``None`` for anything else and for the forms left out (see the module's docstring)."""
    rep = False
    operand = 16 if mode == 16 else 32
    address = {16: 16, 32: 32, 64: 64}[mode]
    segment = "ds"
    for i, byte in enumerate(code[:MAX_INSN]):
        if byte == 0xF3:
            rep = True
        elif byte == 0x66:
            operand = 32 if mode == 16 else 16
        elif byte == 0x67:
            address = {16: 32, 32: 16, 64: 32}[mode]
        elif byte in _SEGMENTS:
            segment = _SEGMENTS[byte]
        elif byte in _STRING_IO:
            ins, byte_sized = _STRING_IO[byte]
            if ins:
                segment = "es"  # INS stores through ES whatever the prefixes say
            if not rep or segment in ("fs", "gs"):
                return None
            if mode == 64 and not ins:
                segment = "ds"  # 64-bit mode ignores the ES/CS/SS/DS bases: all zero
            size = 1 if byte_sized else operand // 8
            return RepString(size, address, segment, ins)
        else:
            return None  # F2, F0, REX, another opcode: not ours to speed up
        if i == MAX_INSN - 1:
            return None
    return None


@dataclass(frozen=True)
class Block:
    """A run of elements to move: ``count`` elements from guest-linear ``start`` (the lowest
    address), ``reverse`` when DF = 1 (the first element is then the highest)."""

    start: int
    count: int
    reverse: bool


def plan_block(insn: RepString, rcx: int, pointer: int, rflags: int, room: int) -> Block | None:
    """Which elements one exit moves: at most RCX (in the address size), at most ``room``, never
    across an offset wrap. ``pointer`` is RSI (OUTS) or RDI (INS); ``start`` is an offset here,
    the caller adds the segment base. ``None`` when one element or none would move (the plain
    exit does that as well)."""
    mask, size = insn.offset_mask, insn.size
    count = min(rcx & mask, room)
    offset = pointer & mask
    reverse = bool(rflags & DF)
    if reverse:
        if offset + size > mask + 1:
            return None  # the first element itself wraps: left to the CPU
        count = min(count, offset // size + 1)  # elements down to offset 0, no wrap below it
        start = offset - (count - 1) * size
    else:
        count = min(count, (mask + 1 - offset) // size)  # elements up to the top, no wrap
        start = offset
    return Block(start, count, reverse) if count > 1 else None


def elements_in_order(data: bytes, size: int, reverse: bool) -> bytes:
    """The block's bytes in the order the device receives the elements (OUTS), or, the same
    permutation being its own inverse, in memory order from the order the device gave (INS)."""
    if not reverse:
        return data
    return b"".join(data[i : i + size] for i in range(len(data) - size, -1, -size))


def registers_after(
    insn: RepString, rcx: int, pointer: int, rflags: int, moved: int
) -> tuple[int, int]:
    """RCX and RSI (OUTS) or RDI (INS) to write from the first element's hook after ``moved``
    elements moved, so that the CPU's own update of that element (pointer +/- size, RCX - 1)
    lands where ``moved`` elements of the instruction leave them. Bits above the address size
    are kept (a 16-bit address size changes only CX and SI/DI; a 32-bit one is zero-extended by
    the CPU itself)."""
    mask = insn.offset_mask
    step = -insn.size if rflags & DF else insn.size
    new_rcx = ((rcx & mask) - (moved - 1)) & mask
    new_pointer = ((pointer & mask) + step * (moved - 1)) & mask
    return (rcx & ~mask) | new_rcx, (pointer & ~mask) | new_pointer
