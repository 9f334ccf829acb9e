"""System-call arguments narrowed to their C types (hv_emu/linux/arguments.py): one test per
argument class, the table against the handlers, hand-made register values with garbage in the
upper halves, and a gcc-built static glibc program opening a relative path (AT_FDCWD as glibc
passes it: ``mov $0xffffff9c, %edi``)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hv_emu.exits import Handled, Stopped
from hv_emu.linux.arguments import ARGUMENTS, Arg, decode
from hv_emu.linux.numbers import AT_FDCWD, TABLES, Errno
from hv_emu.memory.walk import write_virt
from tests.rigs.linux import LinuxRun, run_program

#: Bits above the low 32 that a 32-bit parameter must ignore.
GARBAGE = 0xDEAD_BEEF_0000_0000


@pytest.mark.parametrize("value, bits, expected", [
    (0xFFFF_FF9C, 64, AT_FDCWD),             # glibc's zero-extended mov $0xffffff9c, %edi
    (0xFFFF_FFFF_FFFF_FF9C, 64, AT_FDCWD),   # the sign-extended form means the same
    (GARBAGE | 5, 64, 5),                     # upper half ignored
    (0x8000_0000, 64, -(1 << 31)),
    (0xFFFF_FF9C, 32, AT_FDCWD),
])  # fmt: skip
def test_int_is_the_low_32_bits_sign_extended(value: int, bits: int, expected: int) -> None:
    assert decode(Arg.INT, value, bits) == expected


@pytest.mark.parametrize("value, bits, expected", [
    (0xFFFF_FFFF, 64, 0xFFFF_FFFF), (GARBAGE | 3, 64, 3), (0xFFFF_FFFF, 32, 0xFFFF_FFFF),
])  # fmt: skip
def test_unsigned_int_is_the_low_32_bits(value: int, bits: int, expected: int) -> None:
    assert decode(Arg.UINT, value, bits) == expected


@pytest.mark.parametrize("value, bits, expected", [
    (2**64 - 1, 64, -1), (0xFFFF_FFFF, 64, 0xFFFF_FFFF), (0xFFFF_FFFF, 32, -1),
    (GARBAGE | 0xFFFF_FFFE, 32, -2),
])  # fmt: skip
def test_long_is_the_whole_register_sign_extended(value: int, bits: int, expected: int) -> None:
    assert decode(Arg.LONG, value, bits) == expected


@pytest.mark.parametrize("kind", [Arg.ULONG, Arg.PTR])
@pytest.mark.parametrize("value, bits, expected", [
    (2**64 - 1, 64, 2**64 - 1), (GARBAGE | 0x1000, 64, GARBAGE | 0x1000),
    (GARBAGE | 0xC000_0000, 32, 0xC000_0000),
])  # fmt: skip
def test_unsigned_long_and_pointers_are_the_whole_register(kind: Arg, value: int, bits: int,
                                                          expected: int) -> None:  # fmt: skip
    assert decode(kind, value, bits) == expected


@given(st.sampled_from(list(Arg)), st.integers(0, 2**64 - 1), st.sampled_from([32, 64]))
def test_every_register_value_decodes_into_its_class_range(kind: Arg, value: int,
                                                          bits: int) -> None:  # fmt: skip
    width = 32 if kind in (Arg.INT, Arg.UINT) else bits
    signed = kind in (Arg.INT, Arg.LONG)
    low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    assert low <= decode(kind, value, bits) <= high


@functools.cache
def _process(bits: int) -> LinuxRun:
    return run_program("", bits=bits)


def test_the_table_names_every_implemented_call_and_no_other() -> None:
    implemented = _process(64).process.implemented
    assert set(ARGUMENTS) == implemented
    known = set(TABLES[64].values()) | set(TABLES[32].values())
    assert implemented <= known and all(len(kinds) <= 6 for kinds in ARGUMENTS.values())


def _handle(run: LinuxRun, **registers: int) -> int:
    machine, process = run.machine, run.process
    assert machine.boot is not None and machine.boot.paging is not None
    full = dict.fromkeys(("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10"), 0)
    outcome = process.handle(full | registers, machine.boot.paging)
    assert isinstance(outcome, Handled)
    value = outcome.registers["rax"]
    top = 1 << (run.process.bits - 1)
    return value - (top << 1) if value & top else value


@pytest.mark.parametrize("bits", [64, 32])
def test_at_fdcwd_in_any_form_opens_a_relative_path(bits: int, tmp_path: Path) -> None:
    host = tmp_path / "data.txt"
    host.write_text("x")
    run = run_program("", bits=bits, grants=(f"data.txt={host}",))
    process, machine = run.process, run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    path_at = process.image.stack.start
    write_virt(machine.mem, machine.boot.paging, path_at, b"data.txt\0")
    if bits == 64:
        openat = {"rax": 257, "rsi": path_at, "rdx": GARBAGE}  # flags: O_RDONLY in the low half
        dirfd, other = "rdi", {"rax": 257, "rsi": path_at}
    else:
        openat = {"rax": 295, "rcx": path_at}
        dirfd, other = "rbx", {"rax": 295, "rcx": path_at}
    for value in (0xFFFF_FF9C, 2**64 - 100, GARBAGE | 0xFFFF_FF9C):
        assert _handle(run, **openat, **{dirfd: value}) >= 0
    # -101 is a descriptor that is not open, however it arrives.
    assert _handle(run, **other, **{dirfd: 0xFFFF_FF9B}) == -int(Errno.EBADF)
    # newfstatat / fstatat64 and faccessat take the same dirfd.
    if bits == 64:
        stat = {"rax": 262, "rdi": 0xFFFF_FF9C, "rsi": path_at, "rdx": path_at + 64}
        access = {"rax": 269, "rdi": 0xFFFF_FF9C, "rsi": path_at, "rdx": GARBAGE | 4}
    else:
        stat = {"rax": 300, "rbx": 0xFFFF_FF9C, "rcx": path_at, "rdx": path_at + 64}
        access = {"rax": 307, "rbx": 0xFFFF_FF9C, "rcx": path_at, "rdx": 4}
    assert _handle(run, **stat) == 0 and _handle(run, **access) == 0
    run.process.files.close_all()


def test_fds_exit_codes_and_offsets_take_their_own_widths(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    run = run_program("", grants=(f"/f={tmp_path}/f",))
    machine = run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    path_at = run.process.image.stack.start
    write_virt(machine.mem, machine.boot.paging, path_at, b"/f\0")
    fd = _handle(run, rax=2, rdi=path_at, rsi=GARBAGE)  # open("/f", O_RDONLY in the low half)
    assert fd >= 0
    # lseek(unsigned int fd, off_t offset, ...): garbage above the fd, -1 as a 64-bit offset.
    assert _handle(run, rax=8, rdi=GARBAGE | fd, rsi=2**64 - 1, rdx=2) == 2  # SEEK_END - 1
    assert _handle(run, rax=8, rdi=fd, rsi=2**64 - 3, rdx=1) == -int(Errno.EINVAL)  # before 0
    # close(0xFFFFFFFF): the unsigned int descriptor 4294967295, which is not open.
    assert _handle(run, rax=3, rdi=0xFFFF_FFFF) == -int(Errno.EBADF)
    # exit_group(int error_code): the low 32 bits, then & 0xff.
    assert isinstance(run.process.handle({"rax": 231, "rdi": GARBAGE | 0x101} | dict.fromkeys(
        ("rsi", "rdx", "r10", "r8", "r9"), 0), machine.boot.paging), Stopped)
    assert run.process.exit_status == 1
    run.process.files.close_all()
