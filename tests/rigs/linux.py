"""A rig for Linux guest programs: assemble a few system calls into a static ELF, run it on a
real Machine, and read back each call's result; build C programs with gcc and run them natively
to compare (tests/linux/)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.events import EventLog
from hv_emu.linux.files import FileGrant, FileTable
from hv_emu.linux.syscalls import LinuxProcess
from hv_emu.machine import Machine, MachineConfig, RunResult
from hv_emu.memory.walk import read_virt

_ARGS = {
    64: ("rdi", "rsi", "rdx", "r10", "r8", "r9"),
    32: ("ebx", "ecx", "edx", "esi", "edi", "ebp"),
}


def sys(bits: int, nr: int, *args: int | str) -> str:
    """Assembly for one system call whose result is stored in the next results slot. An argument
    is an integer, a register, or ``[address expression]`` (loaded with lea)."""
    regs = _ARGS[bits]
    lines = []
    for reg, arg in zip(regs, args, strict=False):
        if isinstance(arg, str) and arg.startswith("["):
            lines.append(f"lea {reg}, {arg}")
        else:
            lines.append(f"mov {reg}, {arg}")
    # The number last, so an argument may come from the previous call's result in RAX.
    lines += [f"mov {'rax' if bits == 64 else 'eax'}, {nr}"]
    lines.append("syscall" if bits == 64 else "int 0x80")
    if bits == 64:
        lines += ["mov [r15], rax", "add r15, 8"]
    else:
        # The results cursor lives at [esp + 4096] (EBP is free again after the call).
        lines += ["mov ebp, [esp + 4096]", "mov [ebp], eax", "add ebp, 4", "mov [esp + 4096], ebp"]
    return "\n".join(lines) + "\n"


@dataclass
class LinuxRun:
    machine: Machine
    process: LinuxProcess
    result: RunResult
    stdout: bytes
    results: list[int]


def run_program(body: str, *, bits: int = 64, data: str = "", argv: tuple[str, ...] = ("prog",),
                grants: tuple[str, ...] = (), calls: int = 0, mem_mib: int = 16,
                stdin: bytes = b"", sysroot: Path | None = None) -> LinuxRun:  # fmt: skip
    """Run ``body`` (then exit_group(0)) as a Linux program; ``data`` goes after the code.
    Results of the first ``calls`` system calls made with ``sys`` are returned, in order."""
    if bits == 64:
        prologue = "sub rsp, 1024\n mov r15, rsp\n"
        epilogue = "mov eax, 231\n xor edi, edi\n syscall\n"
    else:
        # Results go to a 1 KiB area below the stack; its cursor sits at [esp + 4096].
        prologue = "sub esp, 8192\n lea eax, [esp + 16]\n mov [esp + 4096], eax\n"
        epilogue = "mov eax, 252\n xor ebx, ebx\n int 0x80\n"
    code = assemble(prologue + body + epilogue + data, mode=bits, address=code_address(bits))
    out = io.BytesIO()
    files = FileTable([FileGrant.parse(g) for g in grants], stdin=io.BytesIO(stdin), stdout=out,
                      stderr=io.BytesIO(), sysroot=sysroot)  # fmt: skip
    machine = Machine(MachineConfig(mem_mib=mem_mib, timeout=10), events=EventLog())
    process = machine.load_elf(write_executable(code, bits=bits), argv=argv, files=files)
    result = machine.run()
    machine.close()
    results: list[int] = []
    if calls:
        assert machine.boot is not None and machine.boot.paging is not None
        paging = machine.boot.paging
        if bits == 64:
            base = machine.boot.stack - 1024
            raw = read_virt(machine.mem, paging, base, 8 * calls)
            results = [v - (1 << 64) if v >> 63 else v for v in struct.unpack(f"<{calls}Q", raw)]
        else:
            base = machine.boot.stack - 8192 + 16
            raw = read_virt(machine.mem, paging, base, 4 * calls)
            results = [v - (1 << 32) if v >> 31 else v for v in struct.unpack(f"<{calls}I", raw)]
    return LinuxRun(machine, process, result, out.getvalue(), results)


def gcc_can(*flags: str) -> bool:
    """Whether gcc can link a static C program with ``flags`` (``-m32`` needs gcc-multilib)."""
    if shutil.which("gcc") is None:
        return False
    done = subprocess.run(["gcc", "-static", *flags, "-x", "c", "-o", "/dev/null", "-"],
                          input="int main(void) { return 0; }\n", capture_output=True, text=True,
                          check=False)  # fmt: skip
    return done.returncode == 0


#: The two x86 ABIs the C programs of tests/linux/ are built for (gcc flags), each skipped where
#: gcc cannot link a static program for it.
C_ABIS = [
    pytest.param((), marks=pytest.mark.skipif(
        not gcc_can(), reason="needs gcc and static glibc (Debian: gcc, libc6-dev)"), id="x86-64"),
    pytest.param(("-m32",), marks=pytest.mark.skipif(
        not gcc_can("-m32"), reason="needs gcc -m32 -static (Debian: gcc-multilib)"), id="i386"),
]  # fmt: skip


def build_c(directory: Path, name: str, source: str, *flags: str) -> Path:
    """``source`` built with ``gcc -static -O2 flags`` as ``directory/name``."""
    (directory / f"{name}.c").write_text(source)
    subprocess.run(["gcc", "-static", "-O2", *flags, "-o", str(directory / name),
                    str(directory / f"{name}.c")], check=True)  # fmt: skip
    return directory / name


def run_native(program: Path, *args: str) -> tuple[int, bytes]:
    """Run ``program`` on this host: (the status a shell shows, 128 + n for signal n; stdout)."""
    done = subprocess.run([str(program), *args], capture_output=True, timeout=60, check=False)
    status = 128 - done.returncode if done.returncode < 0 else done.returncode
    return status, done.stdout
