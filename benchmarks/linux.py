"""Linux programs: the cost of one system call through the personality, and of starting a static
glibc program, each against a named peer measured in the same run.

1. A static ELF64 program calls ``getpid`` N times in a loop; the same loop with a two-byte NOP
   in place of ``syscall`` is subtracted, leaving one SYSCALL exit, the personality's decode and
   answer, and the return. Peer: the VMCALL round trip of ``get_vmmcall_number`` (the cheapest
   hypercall) in the same machine setup, from ``benchmarks/hypercall.py``.
2. ``gcc -static`` hello world from ``load_elf`` to ``exit_group`` (parse, address space, start-up
   stack, glibc's start-up calls, one ``write``). Peer: the same file run natively on this host
   (``fork``+``exec`` included). Skipped without gcc.
3. Debian's dynamically linked ``/usr/bin/sha256sum`` of a 1 MiB file with ``--sysroot /``, from
   ``load_elf`` to ``exit_group`` (the loader, ``libc.so.6`` mapped from the sysroot, relocation,
   the hashing). Peer: the same program on the same file run natively (``fork``+``exec``
   included). Skipped where the program or the loader is missing.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.common import Row, median_of, seconds
from benchmarks.hypercall import _hv_emu
from benchmarks.hypercall import per_call_us as per_vmcall_us
from guest_tool.assemble import assemble
from guest_tool.elf_writer import code_address, write_executable
from hv_emu.linux.files import FileGrant, FileTable
from hv_emu.machine import Machine, MachineConfig

N = 5000
LOOP = """
    mov r15d, {n}
again:
    mov eax, 39
    {call}
    dec r15d
    jnz again
    mov eax, 231
    xor edi, edi
    syscall
"""


def _run_elf(image: bytes) -> float:
    machine = Machine(MachineConfig(timeout=120))
    machine.load_elf(image, argv=["bench"], files=FileTable(stdout=io.BytesIO()))
    return seconds(machine.run)


def _syscall_us() -> float:
    def loop(call: str) -> float:
        code = assemble(LOOP.format(n=N, call=call), mode=64, address=code_address(64))
        return _run_elf(write_executable(code, bits=64))

    return median_of(3, lambda: (loop("syscall") - loop("nop\n nop")) / N * 1e6)


def _glibc_start() -> Row | None:
    if shutil.which("gcc") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        source, program = Path(tmp) / "hello.c", Path(tmp) / "hello"
        source.write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
        subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(source)], check=True)
        image = program.read_bytes()

        def ours() -> float:
            machine = Machine(MachineConfig(timeout=120))
            out = io.BytesIO()
            return seconds(lambda: (machine.load_elf(image, argv=["hello"],
                                                     files=FileTable(stdout=out)),
                                    machine.run()))  # fmt: skip

        native = median_of(5, lambda: seconds(lambda: subprocess.run(
            [str(program)], capture_output=True, check=True)))  # fmt: skip
        return Row("static glibc hello: load + run to exit_group", median_of(5, ours) * 1e3,
                   "ms", "the same file run natively (fork+exec)", native * 1e3)  # fmt: skip


SHA256SUM = Path("/usr/bin/sha256sum")


def _dynamic_sha256sum() -> Row | None:
    if not SHA256SUM.exists() or not Path("/lib64/ld-linux-x86-64.so.2").exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.bin"
        data.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
        image = SHA256SUM.read_bytes()
        expected = subprocess.run([str(SHA256SUM), "data.bin"], cwd=tmp, env={},
                                  capture_output=True, check=True).stdout  # fmt: skip

        def ours() -> float:
            machine = Machine(MachineConfig(timeout=300))
            out = io.BytesIO()
            files = FileTable([FileGrant("data.bin", data)], stdout=out, sysroot=Path("/"))
            took = seconds(lambda: (machine.load_elf(image, argv=[str(SHA256SUM), "data.bin"],
                                                     files=files), machine.run()))  # fmt: skip
            machine.close()
            if out.getvalue() != expected:
                raise RuntimeError(f"sha256sum under hv-emu printed {out.getvalue()!r}")
            return took

        native = median_of(5, lambda: seconds(lambda: subprocess.run(
            [str(SHA256SUM), "data.bin"], cwd=tmp, env={}, capture_output=True, check=True)))
        return Row("dynamic sha256sum of 1 MiB (--sysroot /): load + run to exit_group",
                   median_of(3, ours) * 1e3, "ms", "the same program and file run natively "
                   "(fork+exec)", native * 1e3)  # fmt: skip


def run() -> list[Row]:
    vmcall = per_vmcall_us(lambda call: _hv_emu(call, (64, "none")))
    rows = [Row("Linux getpid round trip (ELF64, SYSCALL exit)", _syscall_us(), "µs",
                "get_vmmcall_number VMCALL round trip (64-bit)", vmcall)]  # fmt: skip
    for row in (_glibc_start(), _dynamic_sha256sum()):
        if row is not None:
            rows.append(row)
    return rows
