"""Disassembly of guest instructions for fault reports and traces.

Models: nothing of the machine; a printing aid that turns the bytes at the guest's program counter
into Intel-syntax text.

Follows: capstone 5 (x86, modes 16/32/64). docs/UNICORN.md: capstone hides the 0x66 prefix, so
the bytes are printed next to the text (U28); its handles are not thread-safe (U33).

Leaves out: decoding prefixes that capstone hides (it prints ``66 c3`` as plain ``ret``).

Guest controls: the bytes decoded; capstone bounds its own work and at most 15 bytes are given.
"""

from __future__ import annotations

import threading
from functools import cache

import capstone

_CS_MODES = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}
#: The longest x86 instruction (Intel SDM vol. 2A, 2.3.11).
MAX_INSN = 15
#: A capstone handle is not thread-safe (U33); machines may run in several threads.
_LOCK = threading.Lock()


@cache
def _engine(mode: int) -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_X86, _CS_MODES[mode])


def disassemble_one(code: bytes, address: int, mode: int) -> str:
    """``"mov dword ptr [rbx], 1"`` for the first instruction in ``code``, with its bytes;
    ``"(bad) 0f 0b ..."`` when capstone cannot decode it."""
    with _LOCK:
        decoded = list(_engine(mode).disasm_lite(code[:MAX_INSN], address, 1))
    for _addr, size, mnemonic, op_str in decoded:
        text = f"{mnemonic} {op_str}".strip()
        return f"{text} [{code[:size].hex(' ')}]"
    return f"(bad) [{code[:MAX_INSN].hex(' ') or 'no bytes'}]"


#: Mnemonics that end a straight run of code: after one of them the next instruction run is not
#: the next one in memory (or the CPU stops), so a linear decode past it proves nothing.
_TRANSFERS = ("j", "call", "ret", "loop", "int", "iret", "sys", "hlt", "ud", "lcall", "ljmp")


def straight_run_ends_in_hlt(code: bytes, address: int, mode: int) -> bool:
    """Whether ``code`` (the bytes from an instruction start at ``address`` up to where the CPU
    stopped) decodes to a straight run of instructions whose last one, ending exactly at the end
    of ``code``, is HLT (prefixes included: ``rep hlt`` is a HLT): then, having run the first
    instruction and stopped at the end, the CPU ran that HLT (docs/UNICORN.md U12, U65)."""
    if not code:
        return False
    end = address + len(code)
    with _LOCK:
        decoded = list(_engine(mode).disasm_lite(code, address))
    for at, size, mnemonic, _ops in decoded:
        if at + size == end:
            return bool(mnemonic == "hlt")
        if mnemonic.startswith(_TRANSFERS):
            return False
    return False
