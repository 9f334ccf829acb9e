"""Dynamically linked programs end to end: Debian's coreutils and a gcc-built program, under hv-emu
with --sysroot, against the same programs run natively (docs/ELF.md "Dynamically linked programs").

Each run is ``python -m hv_emu run ...`` from this checkout (so the code under test is this
tree's), compared with the native process given the same argv and an empty environment (the
environment hv-emu gives its programs)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import linux as bench_linux
from hv_emu.loaders.elf_file import parse_elf

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "ELF.md").read_text(encoding="utf-8")
LOADER = Path("/lib64/ld-linux-x86-64.so.2")
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")

pytestmark = pytest.mark.skipif(
    not (LOADER.exists() and LIBC.exists() and Path("/usr/bin/sha256sum").exists()),
    reason="needs an x86-64 glibc system (Debian: libc6, coreutils) for its dynamic programs",
)


def hv_emu(*argv: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-m", "hv_emu", "run", "-q", *argv], cwd=cwd, env=env,
                          input=stdin, capture_output=True, timeout=120, check=False)  # fmt: skip


def native(*argv: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), cwd=cwd, env={}, input=stdin, capture_output=True,
                          timeout=60, check=False)  # fmt: skip


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "words.txt").write_bytes(b"pear\napple\nfig\napple\nbanana\n")
    (tmp_path / "bytes.bin").write_bytes(bytes(range(256)) * 40 + b"tail")
    return tmp_path


# Program and arguments; paths are granted under the same names, so both runs see the same text.
PROGRAMS = [
    ("sha256sum", "words.txt", "bytes.bin"),
    ("md5sum", "words.txt"),
    ("base64", "bytes.bin"),
    ("sort", "words.txt"),
    ("sort", "-r", "-u", "words.txt"),
    ("wc", "words.txt", "bytes.bin"),
    ("od", "-A", "x", "-t", "x1z", "words.txt"),
    ("cat", "-n", "words.txt"),
    ("uniq", "-c", "words.txt"),
    ("head", "-c", "100", "bytes.bin"),
    ("du", "bytes.bin"),  # the host's st_blocks
    ("readlink", "/lib64/ld-linux-x86-64.so.2", "/lib", "/usr"),  # links in the sysroot; exit 1
    ("tr", "a-z", "A-Z"),  # standard input (words.txt's text) to standard output
    ("wc", "-c"),
    ("base64", "-d"),  # words.txt is not base64: "invalid input", exit status 1
    ("sha256sum", "missing.txt"),  # not granted: not there natively either, exit status 1
    ("sort", "--no-such-option"),  # usage error, exit status 2
]


@pytest.mark.parametrize("program", PROGRAMS, ids=[" ".join(p) for p in PROGRAMS])
def test_coreutils_print_what_they_print_natively(inputs: Path, program: tuple[str, ...]) -> None:
    name, *args = program
    exe = f"/usr/bin/{name}"
    grants = [f"--file={f}={f}" for f in ("words.txt", "bytes.bin")]
    stdin = (inputs / "words.txt").read_bytes()
    ours = hv_emu(exe, "--sysroot", "/", *grants, "--", *args, cwd=inputs, stdin=stdin)
    theirs = native(exe, *args, cwd=inputs, stdin=stdin)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), ours.stderr
    assert ours.stderr == theirs.stderr


def test_ls_lists_a_granted_directory_as_natively(inputs: Path) -> None:
    listing = inputs / "listing"
    listing.mkdir()
    for name in ("b.txt", "a.txt", "c"):
        (listing / name).write_text(name)
    ours = hv_emu("/usr/bin/ls", "--sysroot", "/", "--file", f"/d={listing}", "--", "-a", "/d",
                  cwd=inputs)  # fmt: skip
    theirs = native("/usr/bin/ls", "-a", str(listing), cwd=inputs)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, 0), ours.stderr
    assert ours.stdout == b".\n..\na.txt\nb.txt\nc\n"


def test_a_sysroot_of_just_the_loader_and_libc_is_enough(inputs: Path, tmp_path: Path) -> None:
    root = tmp_path / "sysroot"
    (root / "lib64").mkdir(parents=True)
    (root / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    shutil.copy(LOADER, root / "lib64" / LOADER.name)
    shutil.copy(LIBC, root / "lib" / "x86_64-linux-gnu" / LIBC.name)
    ours = hv_emu("/usr/bin/sha256sum", "--sysroot", str(root), "--file", "w=words.txt", "--",
                  "w", cwd=inputs)  # fmt: skip
    theirs = native("/usr/bin/sha256sum", "words.txt", cwd=inputs)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.split()[0] == theirs.stdout.split()[0]


def test_without_a_sysroot_a_dynamic_program_is_refused_in_one_line(inputs: Path) -> None:
    done = hv_emu("/usr/bin/sha256sum", cwd=inputs)
    assert done.returncode == 2 and done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "dynamically linked" in lines[0] and "--sysroot" in lines[0]


def test_a_loader_missing_from_the_sysroot_is_refused_in_one_line(tmp_path: Path) -> None:
    done = hv_emu("/usr/bin/sha256sum", "--sysroot", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    (line,) = done.stderr.decode().splitlines()
    assert "/lib64/ld-linux-x86-64.so.2 is not in --sysroot" in line


def test_a_link_out_of_the_sysroot_stays_inside_it(inputs: Path, tmp_path: Path) -> None:
    """The sysroot's loader is a link to the host's (absolute): it is looked up inside the
    sysroot, where there is none, so the program does not start."""
    root = tmp_path / "escape"
    (root / "lib64").mkdir(parents=True)
    (root / "lib64" / LOADER.name).symlink_to(LOADER.resolve())
    (root / "up").symlink_to("../../../../../../..")
    (root / "abs").symlink_to("/etc")
    done = hv_emu("/usr/bin/sha256sum", "--sysroot", str(root), cwd=inputs)
    assert done.returncode == 2 and b"is not in --sysroot" in done.stderr
    # A granted directory's links stay inside it too: up/etc/passwd and abs/passwd exist on the
    # host (through the links), not in the granted tree.
    assert (root / "up" / "etc" / "passwd").exists() and (root / "abs" / "passwd").exists()
    cat = hv_emu("/usr/bin/cat", "--sysroot", "/", "--file", f"/r={root}", "--",
                 "/r/up/etc/passwd", "/r/abs/passwd", cwd=inputs)  # fmt: skip
    assert cat.returncode == 1 and cat.stdout == b""
    assert cat.stderr.count(b"No such file or directory") == 2


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (Debian: gcc)")
@pytest.mark.parametrize("bits", [64, 32])
def test_a_gcc_built_dynamic_program_opens_a_relative_path(tmp_path: Path, bits: int) -> None:
    source = tmp_path / "rel.c"
    source.write_text(
        "#include <stdio.h>\n#include <fcntl.h>\n#include <unistd.h>\n"
        "int main(void) {\n"
        '  char buf[64]; int fd = openat(AT_FDCWD, "data/in.txt", O_RDONLY);\n'
        '  if (fd < 0) { perror("openat"); return 4; }\n'
        "  ssize_t n = read(fd, buf, sizeof buf); close(fd);\n"
        '  FILE *f = fopen("data/in.txt", "r"); if (!f) { perror("fopen"); return 5; }\n'
        '  int c = fgetc(f); fclose(f);\n'
        '  printf("read %zd bytes, first %c\\n", n, c); return 0;\n}\n'
    )
    program = tmp_path / "rel"
    built = subprocess.run(["gcc", f"-m{bits}", "-O2", "-o", str(program), str(source)],
                           capture_output=True, check=False)  # fmt: skip
    if built.returncode != 0:
        pytest.skip(f"gcc -m{bits} cannot link here (Debian: gcc-multilib for -m32)")
    elf = parse_elf(program.read_bytes())
    assert (elf.bits, elf.interp) == (bits, str(LOADER) if bits == 64 else "/lib/ld-linux.so.2")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("xyz\n")
    ours = hv_emu(str(program), "--sysroot", "/", "--file", "data/in.txt=data/in.txt",
                  cwd=tmp_path)  # fmt: skip
    theirs = native(str(program), cwd=tmp_path)
    assert theirs.stdout == b"read 4 bytes, first x\n"
    assert (ours.stdout, ours.returncode) == (theirs.stdout, 0), ours.stderr


def test_the_documented_commands_run_as_written(tmp_path: Path) -> None:
    section = DOC.split("## Dynamically linked programs", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 1)[1].split("```", 1)[0]
    outputs = []
    for line in block.strip().splitlines():
        if line.startswith("hv-emu run "):
            done = hv_emu(*line.split()[2:], cwd=tmp_path)
            assert done.returncode == 0, (line, done.stderr)
            outputs.append(done.stdout)
        else:
            subprocess.run(line, shell=True, cwd=tmp_path, check=True)
    digest = native("/usr/bin/sha256sum", "hello.txt", cwd=tmp_path).stdout
    assert outputs == [digest, b"hello\n"]


def test_trace_names_every_system_call(inputs: Path) -> None:
    done = hv_emu("/usr/bin/wc", "--sysroot", "/", "--trace", "--file", "w=words.txt", "--", "w",
                  cwd=inputs)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.decode().splitlines()
             if " SYSCALL " in line and "syscall [0f 05]" in line]  # not the summary's row
    names = {line.split(" -> ")[0].split()[-1] for line in lines if " -> " in line}
    assert {"brk", "openat", "mmap", "pread64", "mprotect", "arch_prctl", "fadvise64", "read",
            "write"} <= names  # fmt: skip
    assert all(" -> " in line or "stop: exit" in line for line in lines)


def test_the_benchmark_row_runs_and_checks_the_digest() -> None:
    """docs/PERFORMANCE.md's dynamic sha256sum row: the program's output is checked inside."""
    row = bench_linux._dynamic_sha256sum()
    assert row is not None and row.value > 0 and row.peer_value is not None


def test_bad_sysroots_and_loaders_are_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "flat.bin").write_bytes(b"\xf4")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / LOADER.name).write_bytes(b"\x7fELF junk")
    cases = [
        (("flat.bin", "--sysroot", "."), "apply to ELF programs only"),
        (("/usr/bin/sha256sum", "--sysroot", "nowhere"), "--sysroot nowhere: not a directory"),
        (("/usr/bin/sha256sum", "--sysroot", "."), "ELF: "),  # the loader is not an ELF file
    ]
    for argv, says in cases:
        done = hv_emu(*argv, cwd=tmp_path)
        lines = done.stderr.decode().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and says in lines[0], (argv, lines)


@pytest.mark.skipif(not Path("/usr/bin/perl").exists(), reason="needs perl")
@pytest.mark.parametrize("argv", [
    ("/usr/bin/perl", "-e", "print 6*7, qq(\\n); open(N, '>', '/dev/null') or die; exit 3"),
    ("/usr/bin/date", "-u", "-d", "@86400", "+%F %T %Z"),
])  # fmt: skip
def test_other_dynamic_programs_as_natively(tmp_path: Path, argv: tuple[str, ...]) -> None:
    ours = hv_emu(argv[0], "--sysroot", "/", "--", *argv[1:], cwd=tmp_path)
    theirs = native(*argv, cwd=tmp_path)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), ours.stderr
