"""The initial stack of a Linux process: argc, argv, envp and the auxiliary vector.

Models: what Linux's ``create_elf_tables`` (``fs/binfmt_elf.c``) writes at the top of a new
process's stack before its first instruction, and what ``_start`` in every C library reads:

    high addresses   strings: argv[], envp[], the platform name, 16 random bytes
                     (padding to 16 bytes)
                     AT_NULL, 0                      <- the auxiliary vector, pairs of words
                     ... AT_PHDR, AT_ENTRY, AT_RANDOM, AT_PAGESZ ...
                     NULL, envp[n-1] ... envp[0]     <- pointers to the strings
                     NULL, argv[argc-1] ... argv[0]
    RSP/ESP ->       argc

Words are 8 bytes for ELF64 and 4 for ELF32; RSP is 16-byte aligned at entry (AMD64 ABI 3.4.1).

Follows: the System V ABI "Process initialization" (i386 figure 3-31, AMD64 figure 3.9) and
``include/uapi/linux/auxvec.h``.

A dynamically linked program starts in its interpreter, which finds the program through
``AT_PHDR``/``AT_PHNUM`` (the load bias applied), ``AT_ENTRY`` (the program's own entry) and
itself through ``AT_BASE`` (0 without an interpreter).

Leaves out: ``AT_SYSINFO_EHDR`` (no vDSO: time calls go through ``syscall``),
``AT_MINSIGSTKSZ`` (glibc's default applies), ``AT_HWCAP2``.

The user controls argv and envp (bounded by ``MAX_STRINGS`` bytes, a ``ConfigError`` beyond);
the guest controls nothing here: this runs before its first instruction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from hv_emu.errors import ConfigError
from hv_emu.linux.numbers import Auxv
from hv_emu.loaders.elf_file import ELF_PAGE
from hv_emu.loaders.elf_process import ProcessImage
from hv_emu.memory.guest import GuestMemory
from hv_emu.memory.walk import write_virt

#: Most bytes of argv and envp strings together (Linux's limit is a quarter of the stack).
MAX_STRINGS = 128 * 1024
#: The user and group the program runs as (a plain user, not root).
UID = GID = 1000
#: ``AT_CLKTCK``: clock ticks per second (``USER_HZ``).
CLOCK_TICKS = 100
#: ``AT_PLATFORM`` strings, by ELF class (what ``uname -m``-like code expects).
PLATFORM = {64: "x86_64", 32: "i686"}


@dataclass(frozen=True)
class InitialStack:
    """Where the start-up data landed: the stack pointer at entry and the argv/envp arrays."""

    sp: int
    argv: int
    envp: int
    random: int


def build_initial_stack(
    mem: GuestMemory,
    process: ProcessImage,
    argv: Sequence[str],
    envp: Sequence[str],
    *,
    hwcap: int = 0,
    random: bytes | None = None,
) -> InitialStack:
    """Write argv, envp and the auxiliary vector below ``process.stack.end``; return the stack
    pointer the program starts with."""
    word = process.bits // 8
    paging = process.boot.paging
    if paging is None:
        raise ConfigError("a Linux process needs paging")
    strings = [s.encode("utf-8", "surrogateescape") + b"\0" for s in (*argv, *envp)]
    if sum(map(len, strings)) > MAX_STRINGS:
        raise ConfigError(f"arguments and environment exceed {MAX_STRINGS} bytes")
    random = os.urandom(16) if random is None else random

    # 1. Strings at the very top, then the 16 AT_RANDOM bytes and the platform name.
    cursor = process.stack.end
    blob_addresses: list[int] = []
    for blob in (*strings, PLATFORM[process.bits].encode() + b"\0", random):
        cursor -= len(blob)
        write_virt(mem, paging, cursor, blob)
        blob_addresses.append(cursor)
    *string_addresses, platform, random_at = blob_addresses
    arg_addresses = string_addresses[: len(argv)]
    env_addresses = string_addresses[len(argv) :]

    # 2. The auxiliary vector, as Linux orders it (the order does not matter to readers).
    phdr = process.phdr if process.phdr is not None else 0
    auxv = [
        (Auxv.AT_HWCAP, hwcap), (Auxv.AT_PAGESZ, ELF_PAGE), (Auxv.AT_CLKTCK, CLOCK_TICKS),
        (Auxv.AT_PHDR, phdr), (Auxv.AT_PHENT, process.elf.phentsize),
        (Auxv.AT_PHNUM, process.elf.phnum), (Auxv.AT_BASE, process.interp_base),
        (Auxv.AT_FLAGS, 0), (Auxv.AT_ENTRY, process.entry), (Auxv.AT_UID, UID), (Auxv.AT_EUID, UID),
        (Auxv.AT_GID, GID), (Auxv.AT_EGID, GID), (Auxv.AT_SECURE, 0),
        (Auxv.AT_RANDOM, random_at), (Auxv.AT_EXECFN, arg_addresses[0] if argv else 0),
        (Auxv.AT_PLATFORM, platform), (Auxv.AT_NULL, 0),
    ]  # fmt: skip

    # 3. The word vector: argc, argv[], NULL, envp[], NULL, auxv pairs.
    words = [len(argv), *arg_addresses, 0, *env_addresses, 0]
    for key, value in auxv:
        words += [int(key), value]
    size = len(words) * word
    sp = (cursor - size) & ~0xF  # argc sits at a 16-byte aligned RSP
    if sp < process.stack.start:
        raise ConfigError("arguments and environment do not fit on the stack")
    mask = (1 << (8 * word)) - 1
    write_virt(mem, paging, sp, b"".join((w & mask).to_bytes(word, "little") for w in words))
    argv_at = sp + word
    return InitialStack(sp=sp, argv=argv_at, envp=argv_at + (len(argv) + 1) * word,
                        random=random_at)  # fmt: skip
