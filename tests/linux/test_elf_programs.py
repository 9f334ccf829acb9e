"""Real Linux programs end to end: hvupdate (built by guest-tool from asm/programs/linux/) in hv-emu
and natively on this machine, the original design's vmcall() compiled by gcc, and static glibc
programs (x86-64, and i386 where gcc -m32 works) reading files, opening relative paths, using
thread-local variables and errno, all through the `hv-emu run` command line."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from guest_tool import cli as guest_tool_cli
from guest_tool.keys import generate_keypair
from hv_emu.cli import main as cli
from hv_emu.cpuid import HYPERVISOR_SIGNATURE
from tests.rigs.linux import gcc_can

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "hv_emu" / "data" / "sample.db"
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian: gcc)")


def sh(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool, *rest = argv
    return subprocess.run([str(BIN / str(tool)), *map(str, rest)], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with hvupdate, a key pair and a signed update (v7) of the sample database."""
    work = tmp_path_factory.mktemp("hvupdate")
    for command in (
        ("guest-tool", "keygen", "demo"),
        ("guest-tool", "bundle", "--db", SAMPLE, "--version", "7", "--key", "demo.key", "-o",
         "update.hvdb"),
        ("guest-tool", "build", "--format", "linux-elf", "-o", "hvupdate"),
    ):  # fmt: skip
        done = sh(*command, cwd=work)
        assert done.returncode == 0, done.stderr
    return work


def test_hvupdate_installs_an_update_in_hv_emu(signed: Path) -> None:
    done = sh("hv-emu", "run", "hvupdate", "--trust", "demo.pub", "--events", "ev.jsonl",
              "--file", "u=update.hvdb", "--file", "u.sig=update.hvdb.sig", "--", "u", "u.sig",
              cwd=signed)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hvupdate: rc=0 (OK)\n"
    assert "program exited with status 0" in done.stderr and "database v7" in done.stderr
    events = [json.loads(line) for line in (signed / "ev.jsonl").read_text().splitlines()]
    calls = [(e["name"], e["ret"]) for e in events if e["event"] == "hypercall"]
    assert calls == [("get_vmmcall_number", 2), ("update_signatures", 0)]
    size = (signed / "update.hvdb").stat().st_size
    assert next(e for e in events if e["event"] == "hypercall" and e["nr"] == 2)["args"][1] == size


def hv_emu(capfd: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``hv-emu`` in this process (faster than a subprocess): status, stdout, stderr."""
    status = cli.main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return status, out, err


def test_hvupdate_reports_a_refusal_and_file_errors_by_exit_status(
    signed: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(signed)
    # A key the hypervisor does not trust: refused, rc=6, exit status 1.
    generate_keypair(signed / "other", "ed25519")
    status, out, _ = hv_emu(capfd, "run", "hvupdate", "--trust", "other.pub", "--file",
                            "u=update.hvdb", "--file", "s=update.hvdb.sig", "--", "u", "s")
    assert status == 1 and out == "hvupdate: rc=6 (UNTRUSTED_KEY)\n"
    # A file that was not granted: the program cannot open it (ENOENT), exit status 2.
    status, _, err = hv_emu(capfd, "run", "hvupdate", "--trust", "demo.pub", "--file",
                            "u=update.hvdb", "--", "u", "update.hvdb.sig")  # fmt: skip
    assert status == 2 and "hvupdate: cannot read update.hvdb.sig: errno 2" in err
    status, _, err = hv_emu(capfd, "run", "hvupdate", "-q")
    assert status == 2 and err == "usage: hvupdate UPDATE UPDATE.sig\n"


def _host_is_a_vm() -> bool:
    """Whether this machine's CPU reports a hypervisor (the "hypervisor" flag of CPUID.1:ECX)."""
    return " hypervisor" in Path("/proc/cpuinfo").read_text(errors="replace")


@pytest.mark.skipif(sys.platform != "linux" or not Path("/proc/cpuinfo").exists(),
                    reason="runs the program natively: needs Linux on x86-64")
def test_hvupdate_runs_natively_and_says_no_hv_emu_instead_of_dying(signed: Path) -> None:
    done = subprocess.run([str(signed / "hvupdate"), "update.hvdb", "update.hvdb.sig"],
                          cwd=signed, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != -signal.SIGILL, "executed VMCALL outside a hypervisor"
    assert done.returncode == 3 and done.stdout == ""
    if not _host_is_a_vm():
        assert done.stderr == "hvupdate: no hypervisor found (CPUID.1:ECX bit 31 is clear)\n"
    else:  # this machine is itself a VM (KVM, Hyper-V...): a hypervisor, but not hv-emu
        assert done.stderr == "hvupdate: the hypervisor is not hv-emu (CPUID 0x40000000)\n"
    assert HYPERVISOR_SIGNATURE.startswith(b"hv-emu")  # what the program compares against


@needs_gcc
def test_the_original_vmcall_function_compiled_by_gcc_reaches_the_hypercall(tmp_path: Path) -> None:
    program = tmp_path / "vmcall"
    subprocess.run(["gcc", "-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector",
                    "-fno-pie", "-no-pie", "-O2", "-o", str(program),
                    str(ROOT / "examples" / "vmcall.c")], check=True)  # fmt: skip
    done = sh("hv-emu", "run", program, "--events", "ev.jsonl", cwd=tmp_path)
    # The exit status is the number get_vmmcall_number gave "get_status" (slot 1).
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("hv-emu ") and "db_version: 0\n" in done.stdout
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert [(e["name"], e["ret"]) for e in events if e["event"] == "hypercall"] == [
        ("get_vmmcall_number", 1), ("get_status", 0)]


@needs_gcc
def test_a_static_glibc_program_reads_a_granted_file(tmp_path: Path) -> None:
    source = tmp_path / "cat.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "int main(int argc, char **argv) {\n"
        "  FILE *f = fopen(argv[1], \"rb\"); if (!f) { perror(argv[1]); return 9; }\n"
        "  char *buf = malloc(1 << 20); size_t n = fread(buf, 1, 1 << 20, f); fclose(f);\n"
        "  printf(\"%s: %d args, %zu bytes, starts %.5s\\n\", argv[0], argc, n, buf);\n"
        "  return fopen(\"/etc/passwd\", \"r\") == NULL ? 42 : 0;\n}\n"
    )
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "cat"), str(source)],
                   check=True)  # fmt: skip
    (tmp_path / "data.txt").write_text("hello from the host\n")
    done = sh("hv-emu", "run", "cat", "--file", "/data=data.txt", "--arg", "/data", "--", "x",
              cwd=tmp_path)  # fmt: skip
    # /etc/passwd exists on the host but was not granted: fopen fails, the status is 42.
    assert done.returncode == 42, done.stderr
    assert done.stdout == "cat: 3 args, 20 bytes, starts hello\n"
    assert "program exited with status 42" in done.stderr


def test_elf_options_are_checked(tmp_path: Path, signed: Path,
                                 capfd: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    flat = tmp_path / "flat.bin"
    flat.write_bytes(b"\xf4")
    status, _, err = hv_emu(capfd, "run", flat, "--file", "a=b")
    assert status == 2 and "apply to ELF programs only" in err
    status, _, err = hv_emu(capfd, "run", signed / "hvupdate", "--load", "0x100000")
    assert status == 2 and "apply to flat images" in err
    broken = tmp_path / "broken"
    broken.write_bytes((signed / "hvupdate").read_bytes()[:40])
    status, _, err = hv_emu(capfd, "run", broken)
    assert status == 2 and err.startswith("hv-emu: error: ELF: ") and len(err.splitlines()) == 1


def test_guest_tool_linux_elf_takes_no_flat_options(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    status = guest_tool_cli.main(["build", "--format", "linux-elf", "--sig", "x.sig", "-o",
                                  str(tmp_path / "h")])  # fmt: skip
    assert status == 2 and "takes no --sig" in capfd.readouterr().err
    assert not (tmp_path / "h").exists()


needs_static_glibc = pytest.mark.skipif(
    not gcc_can(), reason="needs gcc and static glibc (Debian: gcc, libc6-dev)")
needs_gcc_m32 = pytest.mark.skipif(not gcc_can("-m32"),
                                   reason="needs gcc -m32 -static (Debian: gcc-multilib)")

#: Opens, reads, stats and checks access to a relative path: glibc passes AT_FDCWD as a
#: zero-extended 32-bit value (mov $0xffffff9c, %edi).
RELATIVE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
  char buf[64];
  int fd = open("data.txt", O_RDONLY);
  if (fd < 0) { printf("open: %s\n", strerror(errno)); return 9; }
  ssize_t n = read(fd, buf, sizeof buf - 1);
  buf[n > 0 ? n : 0] = 0;
  close(fd);
  struct stat st;
  int s = stat("data.txt", &st);
  int r = access("data.txt", R_OK), w = access("data.txt", W_OK);
  printf("%zd: %s", n, buf);
  printf("stat %d size %lld access %d %d %s\n", s, (long long)st.st_size, r, w, strerror(errno));
  return 0;
}
"""

#: Thread-local variables (through %fs on x86-64, %gs and set_thread_area on i386) and errno.
THREAD_LOCAL = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
__thread int counter = 5;
__thread char name[16] = "tls";
int main(int argc, char **argv) {
  counter += argc;
  int fd = open("/missing", O_RDONLY);
  int e = errno;
  printf("%d-bit: counter=%d name=%s open=%d errno=%d %s\n", (int)(8 * sizeof(void *)), counter,
         name, fd, e, strerror(e));
  return counter;
}
"""


def _build(tmp_path: Path, name: str, source: str, *flags: str) -> Path:
    (tmp_path / f"{name}.c").write_text(source)
    subprocess.run(["gcc", "-static", "-O2", *flags, "-o", str(tmp_path / name),
                    str(tmp_path / f"{name}.c")], check=True)  # fmt: skip
    return tmp_path / name


@pytest.mark.parametrize("flags", [
    pytest.param((), marks=needs_static_glibc, id="x86-64"),
    pytest.param(("-m32",), marks=needs_gcc_m32, id="i386"),
])  # fmt: skip
def test_a_static_glibc_program_opens_a_relative_path(
    tmp_path: Path, flags: tuple[str, ...], capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _build(tmp_path, "rel", RELATIVE, *flags)
    (tmp_path / "data.txt").write_text("hello from the host\n")
    monkeypatch.chdir(tmp_path)
    status, out, err = hv_emu(capfd, "run", "rel", "--file", "data.txt=data.txt")
    assert status == 0, out + err
    assert out == ("20: hello from the host\n"
                           "stat 0 size 20 access 0 -1 Permission denied\n")  # fmt: skip


@pytest.mark.parametrize("flags", [
    pytest.param((), marks=needs_static_glibc, id="x86-64"),
    pytest.param(("-m32",), marks=needs_gcc_m32, id="i386"),
])  # fmt: skip
def test_thread_local_variables_and_errno_work_in_static_glibc_programs(
    tmp_path: Path, flags: tuple[str, ...], capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _build(tmp_path, "tls", THREAD_LOCAL, *flags)
    monkeypatch.chdir(tmp_path)
    status, out, err = hv_emu(capfd, "run", "tls", "--arg", "x", "--events", "ev.jsonl")
    bits = 32 if flags else 64
    assert status == 7, out + err
    assert out == (f"{bits}-bit: counter=7 name=tls open=-1 errno=2 "
                           "No such file or directory\n")  # fmt: skip
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    unsupported = {e["name"] for e in events if e["event"] == "syscall_unsupported"}
    assert "set_thread_area" not in unsupported and "arch_prctl" not in unsupported


@needs_gcc_m32
def test_a_32_bit_static_glibc_hello_world_starts_and_runs(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _build(tmp_path, "hello", '#include <stdio.h>\nint main(void) { puts("hello, world"); }\n',
           "-m32")  # fmt: skip
    status, out, err = hv_emu(capfd, "run", tmp_path / "hello")
    assert status == 0, err
    assert out == "hello, world\n" and "program exited with status 0" in err
