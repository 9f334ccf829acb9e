"""The calls dynamic programs need (hv_emu/linux/dynamic.py), made by small assembled programs:
file mappings and MAP_FIXED, munmap, pread64, getdents64, dup/fcntl, /proc/self/exe, the sysroot."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.exits import Handled, Stopped
from hv_emu.linux.clock import ClockCalls
from hv_emu.linux.directories import dirent64
from hv_emu.linux.numbers import Errno, call_name
from hv_emu.memory.walk import read_virt
from tests.rigs.linux import run_program, sys

EEXIST, ENOMEM, EINVAL, EROFS = (-int(e) for e in (Errno.EEXIST, Errno.ENOMEM, Errno.EINVAL,
                                                  Errno.EROFS))  # fmt: skip
PAGE = 4096


def _save(reg: str) -> str:
    return f"mov [r15], {reg}\n add r15, 8\n"


def test_a_file_mapping_is_a_copy_and_map_fixed_lays_pages_over_it(tmp_path: Path) -> None:
    (tmp_path / "lib").write_bytes(b"A" * PAGE + b"B" * PAGE + b"C" * 100)
    body = (
        sys(64, 2, "[rip + lib]", 0, 0)                  # open = 3
        + "mov r12, rax\n"
        + sys(64, 9, 0, 4 * PAGE, 1, 0x802, "r12", 0)     # mmap(0, 16K, R, PRIVATE|DENYWRITE, 3, 0)
        + "mov r13, rax\n"
        + "lea rdi, [r13 + 4096]\n"
        + sys(64, 9, "rdi", PAGE, 3, 0x12, "r12", 2 * PAGE)  # MAP_FIXED page 1 := file page 2
        + "lea rdi, [r13 + 8192]\n"
        + sys(64, 9, "rdi", PAGE, 3, 0x32, -1, 0)         # MAP_FIXED|ANON page 2 := zeros
        + "lea rdi, [r13 + 8192]\n"
        + sys(64, 9, "rdi", PAGE, 3, 0x100022, -1, 0)    # MAP_FIXED_NOREPLACE there: EEXIST
        + sys(64, 9, 0x1000, PAGE, 3, 0x32, -1, 0)        # MAP_FIXED outside the arena: ENOMEM
        + sys(64, 9, 0, PAGE, 3, 0x02, "r12", 100)        # an unaligned offset: EINVAL
        + sys(64, 10, "r13", PAGE, 1)                     # mprotect = 0
        + sys(64, 11, "r13", 4 * PAGE)                    # munmap = 0
        + sys(64, 9, 0, PAGE, 3, 0x22, -1, 0)             # the same pages come back, zeroed
        + "mov rax, [r13]\n" + _save("rax")
    )
    run = run_program(body, data='lib: .asciz "/lib"\n', grants=(f"/lib={tmp_path}/lib",),
                      calls=11)  # fmt: skip
    fd, base, fixed, anon, exists, outside, unaligned, prot, unmap, again, word = run.results
    assert (fd, fixed, anon - base) == (3, base + PAGE, 2 * PAGE)
    assert (exists, outside, unaligned, prot, unmap) == (EEXIST, ENOMEM, EINVAL, 0, 0)
    assert again == base and word == 0
    # Before the munmap the pages were: file page 0, file page 2 (100 bytes, then zeros), zeros.


def test_mapped_file_pages_hold_the_file_then_zeros(tmp_path: Path) -> None:
    (tmp_path / "lib").write_bytes(b"A" * PAGE + b"B" * PAGE + b"C" * 100)
    body = (
        sys(64, 2, "[rip + lib]", 0, 0)
        + "mov r12, rax\n"
        + sys(64, 9, 0, 4 * PAGE, 1, 0x02, "r12", 0)
        + "mov r13, rax\n"
        + "lea rdi, [r13 + 4096]\n"
        + sys(64, 9, "rdi", PAGE, 3, 0x12, "r12", 2 * PAGE)
    )
    run = run_program(body, data='lib: .asciz "/lib"\n', grants=(f"/lib={tmp_path}/lib",),
                      calls=3)  # fmt: skip
    machine, base = run.machine, run.results[1]
    assert machine.boot is not None and machine.boot.paging is not None
    pages = read_virt(machine.mem, machine.boot.paging, base, 4 * PAGE)
    assert pages[:PAGE] == b"A" * PAGE
    assert pages[PAGE : 2 * PAGE] == b"C" * 100 + bytes(PAGE - 100)
    assert pages[2 * PAGE : 3 * PAGE] == b"C" * 100 + bytes(PAGE - 100)  # the file's last page
    assert pages[3 * PAGE :] == bytes(PAGE)  # past the end of the file


def test_pread_dup_fcntl_and_proc_self_exe(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789")
    body = (
        sys(64, 2, "[rip + f]", 0, 0)                     # open = 3
        + sys(64, 17, 3, "[rsp + 512]", 4, 6)             # pread64(3, buf, 4, 6) = 4
        + "mov eax, [rsp + 512]\n" + _save("rax")
        + sys(64, 0, 3, "[rsp + 512]", 2)                 # read = 2: the position did not move
        + sys(64, 17, 3, "[rsp + 512]", 4, -1)            # a negative position: EINVAL
        + sys(64, 33, 3, 9)                               # dup2(3, 9) = 9
        + sys(64, 72, 9, 0, 5)                            # fcntl(9, F_DUPFD, 5) = 5
        + sys(64, 72, 5, 3)                               # fcntl(5, F_GETFL) = O_RDONLY
        + sys(64, 3, 3)                                   # close(3): 9 and 5 still read
        + sys(64, 0, 9, "[rsp + 512]", 3)                 # read(9) = 3, shared position: "234"
        + "mov eax, [rsp + 512]\n" + _save("rax")
        + sys(64, 292, 9, 9, 0)                           # dup3(9, 9): EINVAL
        + sys(64, 89, "[rip + exe]", "[rsp + 512]", 64)   # readlink("/proc/self/exe") = 9
        + "mov rax, [rsp + 512]\n" + _save("rax")
    )
    data = 'f: .asciz "/f"\nexe: .asciz "/proc/self/exe"\n'
    run = run_program(body, data=data, grants=(f"/f={tmp_path}/f",), argv=("bin/prog",),
                      calls=14)  # fmt: skip
    r = run.results
    assert r[:4] == [3, 4, int.from_bytes(b"6789", "little"), 2]
    assert r[4:9] == [EINVAL, 9, 5, 0, 0]
    assert r[9:11] == [3, int.from_bytes(b"2349", "little")]  # "234" over the "6789" before
    assert r[11:13] == [EINVAL, len("/bin/prog")]
    assert r[13].to_bytes(8, "little")[:9].startswith(b"/bin/pro")


def test_getdents64_lists_a_granted_directory_and_openat_is_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file").write_bytes(b"xy")
    (tmp_path / "d" / "sub").mkdir()
    body = (
        sys(64, 257, -100, "[rip + d]", 0o200000, 0)       # openat(AT_FDCWD, "d", O_DIRECTORY)
        + sys(64, 217, 3, "[rsp + 256]", 512)              # getdents64(3, buf, 512)
        + sys(64, 217, 3, "[rsp + 256]", 512)              # the end: 0
        + sys(64, 257, 3, "[rip + name]", 0, 0)            # openat(3, "file") = 4
        + sys(64, 0, 4, "[rsp + 128]", 8)                  # read = 2
        + sys(64, 0, 3, "[rsp + 128]", 8)                  # read of a directory: EISDIR
        + sys(64, 257, -100, "[rip + d]", 0o101, 0)        # open it for writing: EACCES
    )
    run = run_program(body, data='d: .asciz "d"\nname: .asciz "file"\n',
                      grants=(f"d={tmp_path}/d",), calls=7)  # fmt: skip
    fd, size, end, inner, got, isdir, denied = run.results
    assert (fd, end, inner, got) == (3, 0, 4, 2)
    assert (isdir, denied) == (-int(Errno.EISDIR), -int(Errno.EACCES))
    machine = run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    raw = read_virt(machine.mem, machine.boot.paging, machine.boot.stack - 1024 + 256, size)
    names, at = [], 0
    while at < len(raw):
        _ino, _off, reclen, _kind = struct.unpack_from("<QqHB", raw, at)
        names.append(raw[at + 19 : at + reclen].rstrip(b"\0"))
        at += reclen
    assert names[:2] == [b".", b".."] and sorted(names[2:]) == [b"file", b"sub"]


def test_dirent64_records_are_padded_to_eight_bytes() -> None:
    for name in (b"a", b"abcde", b"x" * 13):
        record = dirent64(7, 1, 8, name)
        assert len(record) % 8 == 0 and len(record) >= 19 + len(name) + 1
        assert struct.unpack_from("<QqHB", record) == (7, 1, len(record), 8)


def test_the_sysroot_is_read_only_and_its_directories_list(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "conf").write_bytes(b"c")
    body = (
        sys(64, 2, "[rip + conf]", 0, 0)                  # open("/etc/conf") = 3
        + sys(64, 2, "[rip + conf]", 1, 0)                # for writing: EROFS
        + sys(64, 21, "[rip + conf]", 2)                  # access(W_OK): EROFS
        + sys(64, 2, "[rip + etc]", 0o200000, 0)          # open("/etc", O_DIRECTORY) = 4
        + sys(64, 2, "[rip + conf]", 0o200000, 0)         # a file with O_DIRECTORY: ENOTDIR
    )
    run = run_program(body, data='conf: .asciz "/etc/conf"\netc: .asciz "/etc/../etc"\n',
                      calls=5, sysroot=tmp_path)  # fmt: skip
    assert run.results == [3, EROFS, EROFS, 4, -int(Errno.ENOTDIR)]


_REGS = ("rax", "rdi", "rsi", "rdx", "r10", "r8", "r9")
_WORD = st.one_of(st.integers(0, 16), st.integers(0, 2**64 - 1), st.sampled_from(
    [0, 3, 4, 0x1000, 0x7F00_0000_0000, 0x7F00_0000_1000, 2**64 - 100, 0x100032]))  # fmt: skip
_CALLS = [9, 10, 11, 17, 32, 33, 72, 79, 89, 96, 192, 193, 201, 202, 217, 221, 228, 257, 262, 292]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_CALLS), st.lists(_WORD, min_size=6, max_size=6))
def test_hostile_arguments_to_the_new_calls_never_raise(nr: int, values: list[int]) -> None:
    run = _program_with_a_directory()
    process, machine = run.process, run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    registers = dict(zip(_REGS, [nr, *values], strict=True))
    outcome = process.handle(registers, machine.boot.paging)
    assert isinstance(outcome, Handled | Stopped)


_CACHE: dict[str, object] = {}


def _program_with_a_directory():  # type: ignore[no-untyped-def]
    if "run" not in _CACHE:
        here = Path(__file__).parent
        body = sys(64, 2, "[rip + d]", 0, 0) + sys(64, 2, "[rip + d]", 0, 0)  # fds 3 and 4
        _CACHE["run"] = run_program(body, data='d: .asciz "/d"\n', grants=(f"/d={here}",),
                                    sysroot=here)  # fmt: skip
    return _CACHE["run"]


def test_call_names_for_the_trace() -> None:
    assert call_name(64, {"rax": 17}) == "pread64" and call_name(32, {"rax": 180}) == "pread64"
    assert call_name(64, {"rax": (1 << 64) - 1}) == f"syscall {(1 << 64) - 1}"
    assert call_name(32, {"rax": 0x1_0000_00DC}) == "getdents64"  # EAX only on i386


def test_getcwd_blocks_and_extended_attributes(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(bytes(10000))
    body = (
        sys(64, 79, "[rsp + 512]", 64)                    # getcwd = 2 ("/")
        + "movzx eax, word ptr [rsp + 512]\n" + _save("rax")
        + sys(64, 79, "[rsp + 512]", 1)                   # too small: ERANGE
        + sys(64, 192, "[rip + f]", "[rip + f]", "[rsp + 512]", 64)  # lgetxattr: EOPNOTSUPP
        + sys(64, 192, "[rip + g]", "[rip + f]", "[rsp + 512]", 64)  # of nothing: ENOENT
        + sys(64, 4, "[rip + f]", "[rsp + 512]")          # stat = 0
        + "mov rax, [rsp + 512 + 64]\n" + _save("rax")     # st_blocks, the host's
    )
    run = run_program(body, data='f: .asciz "/f"\ng: .asciz "/g"\n', grants=(f"/f={tmp_path}/f",),
                      calls=7)  # fmt: skip
    assert run.results[:5] == [2, int.from_bytes(b"/\0", "little"), -int(Errno.ERANGE),
                               -int(Errno.EOPNOTSUPP), -int(Errno.ENOENT)]  # fmt: skip
    assert run.results[5:] == [0, (tmp_path / "f").stat().st_blocks]


def test_clocks_futexes_and_dev_null() -> None:
    before = time.time_ns()
    body = (
        sys(64, 228, 0, "[rsp + 512]")                    # clock_gettime(REALTIME) = 0
        + "mov rax, [rsp + 512]\n" + _save("rax")
        + "mov rax, [rsp + 520]\n" + _save("rax")
        + sys(64, 228, 99, "[rsp + 512]")                 # an unknown clock: EINVAL
        + sys(64, 201, 0)                                 # time(NULL) = seconds
        + "mov dword ptr [rsp + 600], 5\n"
        + sys(64, 202, "[rsp + 600]", 128, 5, 0)          # FUTEX_WAIT_PRIVATE, word == 5
        + sys(64, 202, "[rsp + 600]", 128, 6, 0)          # the word changed: EAGAIN
        + sys(64, 202, "[rsp + 600]", 129, 1)             # FUTEX_WAKE_PRIVATE: no waiter, 0
        + sys(64, 2, "[rip + null]", 2, 0)                # open("/dev/null", O_RDWR) = 3
        + sys(64, 1, 3, "[rsp + 600]", 4)                 # write = 4
        + sys(64, 0, 3, "[rsp + 600]", 4)                 # read = 0 (end of file)
        + sys(64, 5, 3, "[rsp + 512]")                    # fstat = 0
        + "mov eax, [rsp + 512 + 24]\n" + _save("rax")    # st_mode
    )
    run = run_program(body, data='null: .asciz "/dev/null"\n', calls=14)
    r = run.results
    assert r[0] == 0 and before // 10**9 <= r[1] <= time.time() + 1 and 0 <= r[2] < 10**9
    assert r[3] == EINVAL and before // 10**9 <= r[4] <= time.time() + 1
    assert r[5:8] == [-int(Errno.ETIMEDOUT), -int(Errno.EAGAIN), 0]
    assert r[8:13] == [3, 4, 0, 0, 0o020666]


def test_an_i386_clock_writes_32_bit_words() -> None:
    clock = ClockCalls(now=lambda _clock: 1_700_000_000 * 10**9 + 123)

    class Fake:
        def __init__(self, bits: int, args: tuple[int, ...]) -> None:
            self.bits, self.args, self.written = bits, args, b""

        def write(self, va: int, data: bytes) -> None:
            self.written = data

    for name, bits, expected in (("clock_gettime", 32, struct.pack("<ii", 1_700_000_000, 123)),
                                 ("clock_gettime64", 32, struct.pack("<qq", 1_700_000_000, 123)),
                                 ("clock_gettime", 64, struct.pack("<qq", 1_700_000_000, 123))):
        call = Fake(bits, (1, 0x1000))
        assert clock.handlers()[name](call) == 0 and call.written == expected  # type: ignore[arg-type]
