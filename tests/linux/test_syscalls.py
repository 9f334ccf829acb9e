"""The Linux personality (hv_emu/linux/): system calls made by real guest programs through
`syscall` and `int 0x80`, the start-up stack, file confinement, and hostile arguments."""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError
from hv_emu.exits import Handled, Stopped, StopRequest
from hv_emu.linux.files import FileGrant
from hv_emu.linux.numbers import Auxv, Errno
from hv_emu.memory.walk import read_cstring, read_virt, translate
from tests.rigs.linux import LinuxRun, run_program, sys

ENOENT, EACCES, EBADF, ENOSYS = (-int(e) for e in (Errno.ENOENT, Errno.EACCES, Errno.EBADF,
                                                   Errno.ENOSYS))  # fmt: skip


def test_the_start_up_stack_holds_argc_argv_envp_and_the_auxiliary_vector() -> None:
    run = run_program("", argv=("prog", "one", "two words"))
    machine, process = run.machine, run.process
    assert machine.boot is not None and machine.boot.paging is not None
    paging, sp = machine.boot.paging, machine.boot.stack
    assert sp % 16 == 0
    n = (process.image.stack.end - sp) // 8
    words = struct.unpack(f"<{n}Q", read_virt(machine.mem, paging, sp, 8 * n))
    argc = words[0]
    argv = [read_cstring(machine.mem, paging, a, 64) for a in words[1 : 1 + argc]]
    assert argc == 3 and argv == [b"prog", b"one", b"two words"] and words[1 + argc] == 0
    assert words[2 + argc] == 0  # empty environment
    auxv = dict(zip(words[3 + argc :: 2], words[4 + argc :: 2], strict=False))
    elf = process.image.elf
    assert auxv[Auxv.AT_ENTRY] == elf.entry and auxv[Auxv.AT_PAGESZ] == 4096
    assert auxv[Auxv.AT_PHDR] == elf.phdr_address() and auxv[Auxv.AT_PHNUM] == elf.phnum
    assert read_virt(machine.mem, paging, auxv[Auxv.AT_PHDR], 4) == b"\x01\0\0\0"  # PT_LOAD
    assert len(read_virt(machine.mem, paging, auxv[Auxv.AT_RANDOM], 16)) == 16
    assert read_cstring(machine.mem, paging, auxv[Auxv.AT_PLATFORM], 16) == b"x86_64"


def test_a_64_bit_program_reads_a_granted_file_and_writes_standard_output(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(b"0123456789abcdef")
    body = (
        sys(64, 2, "[rip + path]", 0, 0)                    # open("/in", O_RDONLY) = 3
        + "mov r12, rax\n"
        + sys(64, 8, "r12", 10, 0)                          # lseek(3, 10, SEEK_SET) = 10
        + sys(64, 0, "r12", "[rsp + 512]", 100)             # read(3, buf, 100) = 6
        + sys(64, 1, 1, "[rsp + 512]", "rax")               # write(1, buf, 6) = 6
        + sys(64, 5, "r12", "[rsp + 768]", 0)               # fstat(3, &st) = 0
        + "mov rax, [rsp + 768 + 48]\n mov [r15], rax\n add r15, 8\n"  # st_size
        + sys(64, 3, "r12")                                 # close(3) = 0
        + sys(64, 3, "r12")                                 # close(3) again: -EBADF
    )
    run = run_program(body, data='path: .asciz "/in"\n', grants=(f"/in={tmp_path}/in.txt",),
                      calls=8)  # fmt: skip
    assert run.results == [3, 10, 6, 6, 0, 16, 0, EBADF]
    assert run.stdout == b"abcdef"
    assert run.process.exit_status == 0 and isinstance(run.result.exit, StopRequest)


def test_only_granted_files_exist_and_read_only_grants_refuse_writes(tmp_path: Path) -> None:
    (tmp_path / "ro").write_bytes(b"old")
    body = (
        sys(64, 2, "[rip + secret]", 0, 0)        # /etc/hostname exists on the host: not here
        + sys(64, 257, -100, "[rip + ro]", 1, 0)  # openat(AT_FDCWD, "ro", O_WRONLY)
        + sys(64, 2, "[rip + ro]", 0o1101, 0o644)  # open("ro", O_WRONLY|O_CREAT|O_TRUNC)
        + sys(64, 2, "[rip + rw]", 0o1101, 0o644)  # a writable grant: created on the host
        + "mov r12, rax\n"
        + sys(64, 1, "r12", "[rip + ro]", 2)        # write(fd, "ro", 2)
    )
    data = 'secret: .asciz "/etc/hostname"\nro: .asciz "ro"\nrw: .asciz "./out/../rw"\n'
    run = run_program(body, data=data, grants=(f"ro={tmp_path}/ro", f"rw={tmp_path}/new:rw"),
                      calls=5)  # fmt: skip
    assert run.results == [ENOENT, EACCES, EACCES, 3, 2]
    assert (tmp_path / "ro").read_bytes() == b"old"
    assert (tmp_path / "new").read_bytes() == b"ro"


def test_memory_calls_hand_out_zeroed_mapped_memory() -> None:
    body = (
        sys(64, 9, 0, 8192, 3, 0x22, -1, 0)        # mmap(NULL, 8192, RW, PRIVATE|ANON) = a
        + "mov r12, rax\n mov rax, [r12 + 4096]\n mov [r15], rax\n add r15, 8\n"  # zero
        + "mov qword ptr [r12 + 8184], 7\n"        # writable to its last byte
        + sys(64, 9, 0, 4096, 3, 0x02, 1, 0)       # mapping a stream (stdout): -ENODEV
        + sys(64, 12, 0)                            # brk(0) = the current break
        + "mov r13, rax\n lea rdi, [r13 + 0x3000]\n"
        + sys(64, 12, "rdi")                        # brk(+12 KiB) = the new break
        + "mov qword ptr [r13 + 0x2ff8], 9\n"      # the heap is mapped and writable
        + sys(64, 63, "[rsp + 256]")               # uname(&buf) = 0
    )
    run = run_program(body, calls=6)
    mmap_at, zero, enodev, brk0, brk1, uname = run.results
    image = run.process.image
    assert image.mmap.start <= mmap_at < image.mmap.end and zero == 0
    assert enodev == -int(Errno.ENODEV)
    assert brk0 == image.heap.start and brk1 == brk0 + 0x3000 and uname == 0
    assert run.process.brk == brk1


def test_vectored_io_stdin_limits_randomness_and_the_quiet_successes() -> None:
    body = (
        # An iovec array of two buffers at rsp+256: 3 bytes at rsp+512, 4 at rsp+640.
        "lea rax, [rsp + 512]\n mov [rsp + 256], rax\n mov qword ptr [rsp + 264], 3\n"
        "lea rax, [rsp + 640]\n mov [rsp + 272], rax\n mov qword ptr [rsp + 280], 4\n"
        + sys(64, 19, 0, "[rsp + 256]", 2)          # readv(0, iov, 2) = 7 from stdin
        + sys(64, 20, 1, "[rsp + 256]", 2)          # writev(1, iov, 2) = 7
        + sys(64, 318, "[rsp + 768]", 32, 0)        # getrandom(buf, 32) = 32
        + sys(64, 302, 0, 3, 0, "[rsp + 800]")      # prlimit64(0, RLIMIT_STACK, NULL, &old)
        + "mov rax, [rsp + 800]\n mov [r15], rax\n add r15, 8\n"  # its soft limit
        + sys(64, 262, 1, "[rip + empty]", "[rsp + 832]", 0x1000)  # newfstatat(1, "", EMPTY)
        + "mov eax, [rsp + 832 + 24]\n mov [r15], rax\n add r15, 8\n"  # st_mode
        + sys(64, 16, 1, 0x5401, 0)                 # ioctl(1, TCGETS): not a terminal
        + sys(64, 10, 0x400000, 4096, 7)            # mprotect: accepted, changes nothing
        + sys(64, 11, 0x7F0000000000, 4096)         # munmap: accepted
        + sys(64, 20, 1, "[rsp + 256]", 5000)       # writev with too many entries: -EINVAL
    )
    run = run_program(body, data='empty: .byte 0\n', stdin=b"abcdefgh", calls=11)
    assert run.results == [7, 7, 32, 0, 1 << 20, 0, 0o010600, -int(Errno.ENOTTY), 0, 0,
                           -int(Errno.EINVAL)]  # fmt: skip
    assert run.stdout == b"abcdefg"


def test_unsupported_calls_return_enosys_and_are_reported_once() -> None:
    body = sys(64, 57) + sys(64, 57) + sys(64, 999) + sys(64, 39)  # fork, fork, ???, getpid
    run = run_program(body, calls=4)
    assert run.results == [ENOSYS, ENOSYS, ENOSYS, 1]
    reports = run.machine.events.of("syscall_unsupported")
    assert [(r["nr"], r["name"]) for r in reports] == [(57, None), (999, None)]
    assert run.process.unsupported == {57: None, 999: None}


def test_arch_prctl_points_fs_at_thread_local_storage() -> None:
    body = (
        "mov rax, 0x1122334455667788\n mov [rsp + 512], rax\n"
        + sys(64, 158, 0x1002, "[rsp + 512]")     # arch_prctl(ARCH_SET_FS, &word)
        + "mov rax, fs:[0]\n mov [r15], rax\n add r15, 8\n"
    )
    run = run_program(body, calls=2)
    assert run.results == [0, 0x1122334455667788]


def test_a_32_bit_program_makes_its_calls_with_int_0x80(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"thirty-two")
    body = (
        sys(32, 5, "[path]", 0, 0)                 # open = 3
        + "mov esi, eax\n"
        + sys(32, 197, "esi", "[esp + 5120]")      # fstat64(3, &st) = 0
        + "mov eax, [esp + 5120 + 44]\n mov ebp, [esp + 4096]\n mov [ebp], eax\n"
        + "add ebp, 4\n mov [esp + 4096], ebp\n"   # st_size (stat64 offset 44)
        + sys(32, 3, "esi", "[esp + 6144]", 64)    # read = 10
        + sys(32, 4, 1, "[esp + 6144]", "eax")     # write(1, buf, 10) = 10
        + sys(32, 122, "[esp + 6144]")             # uname = 0
        + sys(32, 192, 0, 4096, 3, 0x22, -1, 0)    # mmap2(NULL, 4096, RW, PRIVATE|ANON)
        + sys(32, 45, 0)                           # brk(0)
    )
    run = run_program(body, bits=32, data='path: .asciz "/f"\n', grants=(f"/f={tmp_path}/f",),
                      calls=8)  # fmt: skip
    image = run.process.image
    # open, fstat64, st_size, read, write, uname, mmap2, brk
    assert run.results == [3, 0, 10, 10, 10, 0, image.mmap.start, image.heap.start]
    assert image.mmap.start == 0x4000_0000
    assert run.stdout == b"thirty-two" and run.process.exit_status == 0
    assert run.machine.vcpu.mode() == 32


def test_exit_status_ends_the_run() -> None:
    run = run_program("mov eax, 60\n mov edi, 300\n syscall\n")  # exit(300): status & 0xff
    assert run.process.exit_status == 300 & 0xFF
    assert isinstance(run.result.exit, StopRequest) and run.result.exit.reason == "exit(44)"


@pytest.mark.parametrize("spec, error", [("noequals", "GUESTPATH=HOSTPATH"), ("=x", "GUESTPATH"),
                                         ("a=:rw", "empty")])  # fmt: skip
def test_bad_file_grants_are_config_errors(spec: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        FileGrant.parse(spec)


def test_file_grants_parse() -> None:
    assert FileGrant.parse("/a/./b=host:rw") == FileGrant("/a/b", Path("host"), True)
    assert FileGrant.parse("x=y=z") == FileGrant("x", Path("y=z"), False)


@functools.cache
def _exited_program(bits: int) -> LinuxRun:
    return run_program("", bits=bits)


_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10")
_WORD = st.one_of(st.integers(0, 400), st.integers(0, 2**64 - 1), st.sampled_from(
    [0, 1, 2, 3, 0x400000, 0x7FFF_FFFF_E000, 0x7F00_0000_0000, 2**64 - 100, 2**63]))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([32, 64]), st.lists(_WORD, min_size=len(_REGS), max_size=len(_REGS)))
def test_hostile_arguments_never_raise(bits: int, values: list[int]) -> None:
    run = _exited_program(bits)  # one process per ABI, called again and again
    process, machine = run.process, run.machine
    assert machine.boot is not None and machine.boot.paging is not None
    registers = dict(zip(_REGS, values, strict=True))
    registers["rax"] %= 400  # mostly real call numbers
    outcome = process.handle(registers, machine.boot.paging)
    assert isinstance(outcome, Handled | Stopped)
    # The program's own pages are still where they were.
    translate(machine.mem, machine.boot.paging, process.image.elf.entry)


def test_seeking_past_the_largest_file_offset_is_einval_and_leaves_the_position(
    tmp_path: Path,
) -> None:
    from hv_emu.linux.files import FileTable, SyscallError
    from hv_emu.linux.numbers import SEEK_CUR, SEEK_SET

    (tmp_path / "f").write_bytes(b"abc")
    table = FileTable([FileGrant("/f", tmp_path / "f")])
    fd = table.open("/f", 0)
    assert table.seek(fd, 1, SEEK_SET) == 1
    # Two SEEK_CURs of 2**63 - 2 would reach 2**64 - 3: beyond any off_t (Linux: EINVAL).
    table.seek(fd, (1 << 63) - 2, SEEK_CUR)
    with pytest.raises(SyscallError) as refused:
        table.seek(fd, (1 << 63) - 2, SEEK_CUR)
    assert refused.value.errno is Errno.EINVAL
    # Still at 2**63 - 1: the host answers (end of file or EINVAL), never an OverflowError.
    try:
        assert table.read(fd, 10) == b""
    except SyscallError as host:
        assert host.errno is Errno.EINVAL
    table.close_all()


def test_writing_to_a_stdout_whose_reader_went_away_is_epipe() -> None:
    from hv_emu.linux.files import FileTable, SyscallError

    class Gone:
        def write(self, data: bytes) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

    table = FileTable(stdout=Gone())  # type: ignore[arg-type]
    with pytest.raises(SyscallError) as refused:
        table.write(1, b"hello\n")
    assert refused.value.errno == Errno.EPIPE
