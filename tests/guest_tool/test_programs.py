"""guest_tool.programs and asm/: the constants agree with hv_emu.hypercalls.abi, every program
assembles in every mode, and each one runs in a tiny Unicorn harness that plays the hypervisor.

The harness (until hv_emu.vcpu exists) follows docs/UNICORN.md (U1, U2): one UC_MODE_64 engine,
with a context saved from a fresh UC_MODE_16 / UC_MODE_32 engine restored into it for real and
protected mode; VMCALL arrives as an invalid instruction (U14); OUT to 0xE9 is collected.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("UC_IGNORE_REG_BREAK", "1")

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_MODE_16,
    UC_MODE_32,
    UC_MODE_64,
)
from unicorn.unicorn_py3 import Uc
from unicorn.x86_const import (
    UC_X86_INS_OUT,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDX,
    UC_X86_REG_RIP,
    UC_X86_REG_RSP,
)

from guest_tool import linux_programs, programs
from guest_tool.assemble import AssemblyError, assemble
from guest_tool.disk_programs import build_disk_write_program, build_identify_program
from guest_tool.linux_programs import build_hvupdate
from guest_tool.programs import (
    BLOB_ALIGN,
    HVABI,
    INCLUDE_DIR,
    NEEDS_DATA,
    PORTS,
    PROGRAMS_DIR,
    available_programs,
    build_program,
    build_source_file,
    build_update_program,
    buildable_programs,
    default_load,
    generated_prelude,
    hypercall_equates,
    hypercall_prelude,
    load_source,
    parse_equates,
)
from hv_emu import layout, testing
from hv_emu.errors import ConfigError
from hv_emu.hypercalls import abi
from hv_emu.hypercalls.builtin import NUMBERS
from hv_emu.machine import MachineConfig

BUNDLE = bytes(range(256)) * 3 + b"tail"  # 772 bytes: not a multiple of the alignment
SIGNATURE = bytes(range(64, 128))
STATUS_TEXT = b"hv-emu: 3 signatures, version 7\n"


# ------------------------------------------------------------------ the harness


@dataclass
class Call:
    """One VMCALL as the hypervisor saw it."""

    nr: int
    rbx: int
    rcx: int
    rdx: int
    data: bytes = b""  # for update_signatures: the bundle bytes at RBX, RCX long
    signature: bytes = b""  # the bytes at RDX, len(SIGNATURE) long


@dataclass
class Hypervisor:
    """Fixed answers: the name table, update_signatures' return code, the status text."""

    names: dict[str, int] = field(default_factory=lambda: dict(NUMBERS))
    update_rc: int = abi.Rc.OK
    status: bytes = STATUS_TEXT
    calls: list[Call] = field(default_factory=list)
    output: bytearray = field(default_factory=bytearray)


def run_guest(image: bytes, mode: int, load: int, hv: Hypervisor) -> None:
    """Run ``image`` at ``load`` until HLT, playing the hypervisor ``hv``."""
    uc: Any = Uc(UC_ARCH_X86, UC_MODE_64)  # untyped binding
    if mode != 64:
        donor: Any = Uc(UC_ARCH_X86, UC_MODE_16 if mode == 16 else UC_MODE_32)
        uc.context_restore(donor.context_save())
    uc.mem_map(0, 4 * layout.MIB)
    if load + len(image) > 4 * layout.MIB:
        base = load & ~0xFFFF
        uc.mem_map(base, (load + len(image) - base + 0xFFFF) & ~0xFFFF)
    uc.mem_write(load, image)
    uc.reg_write(UC_X86_REG_RSP, layout.STACK_TOP_REAL if mode == 16 else layout.STACK_TOP)
    width = (1 << 64) - 1 if mode == 64 else (1 << 32) - 1
    names = {name.encode(): nr for name, nr in hv.names.items()}
    names_by_nr = {nr: name for name, nr in hv.names.items()}

    def on_invalid(uc: Any, _data: object) -> bool:
        rip = uc.reg_read(UC_X86_REG_RIP)  # CS = 0 in real mode: IP is the linear address
        if bytes(uc.mem_read(rip, 3)) != abi.VMCALL_BYTES:
            return False
        nr, rbx, rcx, rdx = (uc.reg_read(r) & width for r in
                             (UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX))
        call = Call(nr, rbx, rcx, rdx)
        service = names_by_nr.get(nr)
        rax = 0
        if service == "get_vmmcall_number":
            raw = bytes(uc.mem_read(rbx, abi.MAX_NAME))
            rax = names.get(raw.split(b"\0", 1)[0], 0) if b"\0" in raw else 0
        elif service == "get_status":  # BitVisor's: no NUL, RCX = the length, 1 if short
            uc.reg_write(UC_X86_REG_RCX, len(hv.status))
            if len(hv.status) > rcx:
                rax = abi.Rc.UNREADABLE
            else:
                uc.mem_write(rbx, hv.status)
        elif service == "update_signatures":
            call.data = bytes(uc.mem_read(rbx, rcx))
            call.signature = bytes(uc.mem_read(rdx, len(SIGNATURE)))
            rax = hv.update_rc
        hv.calls.append(call)
        uc.reg_write(UC_X86_REG_RAX, int(rax))
        uc.reg_write(UC_X86_REG_RIP, rip + 3)
        return True

    def on_out(uc: Any, port: int, size: int, value: int, _data: object) -> None:
        if port == layout.PORT_DEBUGCON:
            hv.output.append(value & 0xFF)

    uc.hook_add(UC_HOOK_INSN_INVALID, on_invalid)
    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, UC_X86_INS_OUT)
    uc.emu_start(load, (1 << 64) - 1, count=200_000)
    pc = uc.reg_read(UC_X86_REG_RIP)
    assert bytes(uc.mem_read(pc - 1, 1)) == b"\xf4", "the guest did not end with HLT"


# -------------------------------------------------------------- asm/include/hvabi.s and rcnames.s


def test_hvabi_agrees_with_abi_and_layout() -> None:
    equates = parse_equates(HVABI.read_text())
    expected = {f"RC_{rc.name}": int(rc) for rc in abi.Rc}
    expected |= {"MAX_NAME": abi.MAX_NAME}
    assert equates == expected  # no HC_ and no ports: those are generated
    generated = {f"HC_{name.upper()}": nr for name, nr in NUMBERS.items()}
    assert hypercall_equates() == generated == parse_equates(hypercall_prelude())


def test_the_ports_are_generated_from_layout_and_written_nowhere_in_asm() -> None:
    assert PORTS == {"DEBUGCON_PORT": layout.PORT_DEBUGCON, "NIC_PORT": layout.PORT_NIC,
                     "ATA_PORT": layout.PORT_ATA_PRIMARY,
                     "ATA_CTRL_PORT": layout.PORT_ATA_PRIMARY_CTRL,
                     "BM_PORT": layout.PORT_BUSMASTER}
    assert parse_equates(generated_prelude()) == hypercall_equates() | PORTS
    for path in (PROGRAMS_DIR.parent).rglob("*.s"):
        defined = set(_DEFINITION.findall(path.read_text()))
        assert not defined & set(PORTS), f"{path.name} defines {defined & set(PORTS)}"


_DEFINITION = re.compile(r"^\s*\.(?:equ|set|equiv)\s+([A-Za-z_.$][\w.$]*)\s*,", re.MULTILINE)


@pytest.fixture
def assembled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The whole text (prelude and source) of every assembly from here on, as keystone gets it."""
    texts: list[str] = []

    def spy(source: str, *, mode: int, address: int, prelude: str = "") -> bytes:
        texts.append(prelude + source)
        return assemble(source, mode=mode, address=address, prelude=prelude)

    for module in (programs, linux_programs, testing):
        monkeypatch.setattr(module, "assemble", spy)
    return texts


def test_every_assembly_defines_each_abi_constant_exactly_once(
    assembled: list[str], tmp_path: Path, hv: testing.Hypervisor
) -> None:
    # keystone takes a second .equ of a name silently (the last one wins): count them instead.
    for mode in available_programs()["update"]:
        build_update_program(BUNDLE, SIGNATURE, mode=mode)
    build_program("hello")
    build_program("status")
    build_program("nic", equates={"RX_FRAMES": 1})
    build_identify_program()
    build_disk_write_program(b"x", 1, "pio")
    build_program("ahci", mode=32)
    assert set(buildable_programs()) | set(NEEDS_DATA) == {"hello", "status", "nic", "identify",
                                                           "diskwrite", "update", "ahci"}
    assert len(assembled) == sum(map(len, available_programs().values()))  # each program once
    build_hvupdate()  # asm/programs/linux/hvupdate64.s, which includes hvabi.s
    user = tmp_path / "mine.s"  # a user's source that includes hvabi.s, which is in front already
    user.write_text('#include "hvabi.s"\nmov eax, HC_GET_STATUS\nmov ebx, RC_OK\nhlt\n')
    build_source_file(user)
    hv.run_asm("mov eax, HC_GET_STATUS\n mov ebx, RC_OK\n hlt")
    generated = set(hypercall_equates()) | set(PORTS)
    everything = generated | set(parse_equates(HVABI.read_text()))
    for text in assembled:
        counts = Counter(_DEFINITION.findall(text))
        assert {n: counts[n] for n in generated} == dict.fromkeys(generated, 1)
        assert generated_prelude() in text
        assert all(counts[n] <= 1 for n in everything), text
    for text in assembled[-2:]:  # the user's source and run_asm get every constant, once
        counts = Counter(_DEFINITION.findall(text))
        assert {n: counts[n] for n in everything} == dict.fromkeys(everything, 1)


def test_program_equates_cannot_redefine_hypercall_numbers() -> None:
    with pytest.raises(ConfigError, match="HC_GET_STATUS would redefine hypercall numbers"):
        build_program("status", equates={"HC_GET_STATUS": 9})
    with pytest.raises(ConfigError, match="DEBUGCON_PORT would redefine hypercall numbers or por"):
        build_program("status", equates={"DEBUGCON_PORT": 0x80})


def test_rcnames_table_follows_rc_order() -> None:
    text = (INCLUDE_DIR / "rcnames.s").read_text()
    table = text.split("rc_names:", 1)[1].split("rc_unknown:", 1)[0]
    names = re.findall(r'\.asciz\s+"([^"]*)"', table)
    assert names == [rc.name for rc in sorted(abi.Rc)]
    assert parse_equates(text)["RC_NAME_COUNT"] == len(abi.Rc)


def test_parse_equates_literals_comments_and_errors() -> None:
    text = ".equ A, 0x10   # hex\n  .set B,-3\n.equ C, 0b101 ; x\nmov eax, 1\n.equ A, 7\n"
    assert parse_equates(text) == {"A": 7, "B": -3, "C": 5}
    with pytest.raises(ConfigError, match=r"line 1: \.equ D"):
        parse_equates(".equ D, start + 4\n")


# ------------------------------------------------------------------ sources and includes


def test_includes_expand_once_and_keep_origins(tmp_path: Path) -> None:
    (tmp_path / "lib.s").write_text("lib_a:\n#include \"leaf.s\"\n")
    (tmp_path / "leaf.s").write_text("leaf:\n")
    (tmp_path / "main.s").write_text('#include "lib.s"\nnop\n#include "leaf.s"\n')
    source = load_source("main.s", asm_dir=tmp_path)
    assert source.text == "lib_a:\nleaf:\nnop\n"
    assert source.origins == (("lib.s", 1), ("leaf.s", 1), ("main.s", 2))


def test_include_cycle_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "a.s").write_text('#include "b.s"\n')
    (tmp_path / "b.s").write_text('#include "a.s"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_source("a.s", asm_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_source("missing.s", asm_dir=tmp_path)


def test_available_programs() -> None:
    programs = available_programs()
    assert programs["update"] == (16, 32, 64)
    assert programs["hello"] == (64,)
    assert programs["status"] == (64,)
    assert "print" not in programs and "macros" not in programs


def test_build_program_refusals() -> None:
    with pytest.raises(ConfigError, match="no program 'nosuch'"):
        build_program("nosuch")
    with pytest.raises(ConfigError, match="no program 'hello' for 16-bit"):
        build_program("hello", mode=16)
    with pytest.raises(ConfigError, match="build_update_program"):
        build_program("update")
    with pytest.raises(ConfigError, match=r"needs the payload to write: use .*build_disk_write_pr"):
        build_program("diskwrite")
    with pytest.raises(ConfigError, match="not an assembler symbol"):
        build_program("status", equates={"bad name": 1})


def test_assembly_errors_name_the_asm_file() -> None:
    # STATUS_BUF_SIZE feeds `.space`; a negative size is an error keystone reports.
    with pytest.raises(AssemblyError) as info:
        build_program("status", equates={"STATUS_BUF_SIZE": -1})
    err = info.value
    assert err.origin == "status64.s" and err.line is not None
    assert err.statement == ".space STATUS_BUF_SIZE"
    lines = (PROGRAMS_DIR / "status64.s").read_text().splitlines()
    assert lines[err.line - 1].strip() == ".space STATUS_BUF_SIZE"
    assert str(err).startswith(f"status64.s:{err.line}: ")


# ------------------------------------------------------------------ the update program


@pytest.mark.parametrize("mode", [16, 32, 64])
@pytest.mark.parametrize("lookup", [True, False])
def test_update_image_layout(mode: int, lookup: bool) -> None:
    image = build_update_program(BUNDLE, SIGNATURE, mode=mode, lookup=lookup)
    assert abi.VMCALL_BYTES in image
    assert image.endswith(SIGNATURE)
    code_len = len(image) - len(SIGNATURE) - (-(-len(BUNDLE) // BLOB_ALIGN) * BLOB_ALIGN)
    assert code_len % BLOB_ALIGN == 0
    assert image[code_len:code_len + len(BUNDLE)] == BUNDLE
    assert image.count(abi.VMCALL_BYTES) >= (2 if lookup else 1)


@pytest.mark.parametrize("mode", [16, 32, 64])
@pytest.mark.parametrize("rc", list(abi.Rc))
def test_update_prints_the_return_code(mode: int, rc: abi.Rc) -> None:
    load = default_load(mode)
    image = build_update_program(BUNDLE, SIGNATURE, mode=mode)
    hv = Hypervisor(update_rc=rc)
    run_guest(image, mode, load, hv)
    assert hv.output.decode() == f"hvupdate: rc={int(rc)} ({rc.name})\n"
    lookup, update = hv.calls
    assert (lookup.nr, update.nr) == (NUMBERS["get_vmmcall_number"], NUMBERS["update_signatures"])
    # The registers at the VMCALL point at the exact bundle and signature bytes of the image.
    assert update.data == BUNDLE and update.rcx == len(BUNDLE)
    assert update.signature == SIGNATURE
    assert update.rbx == load + image.index(BUNDLE) and update.rbx % BLOB_ALIGN == 0
    assert update.rdx == load + len(image) - len(SIGNATURE) and update.rdx % BLOB_ALIGN == 0


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_update_uses_the_number_the_lookup_returns(mode: int) -> None:
    hv = Hypervisor(names={"get_vmmcall_number": 0, "update_signatures": 77})
    run_guest(build_update_program(BUNDLE, SIGNATURE, mode=mode), mode, default_load(mode), hv)
    assert [c.nr for c in hv.calls] == [0, 77]
    assert hv.output == b"hvupdate: rc=0 (OK)\n"


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_update_without_the_service_says_not_found(mode: int) -> None:
    hv = Hypervisor(names={"get_vmmcall_number": 0})
    run_guest(build_update_program(BUNDLE, SIGNATURE, mode=mode), mode, default_load(mode), hv)
    assert hv.output == b"hvupdate: update_signatures not found\n"
    assert [c.nr for c in hv.calls] == [0]


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_update_without_lookup_calls_the_fixed_number(mode: int) -> None:
    image = build_update_program(BUNDLE, SIGNATURE, mode=mode, lookup=False)
    hv = Hypervisor(update_rc=abi.Rc.STALE_VERSION)
    run_guest(image, mode, default_load(mode), hv)
    assert [c.nr for c in hv.calls] == [NUMBERS["update_signatures"]]
    assert hv.output == b"hvupdate: rc=5 (STALE_VERSION)\n"


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_unknown_return_code_prints_unknown(mode: int) -> None:
    hv = Hypervisor(update_rc=4242)
    run_guest(build_update_program(BUNDLE, SIGNATURE, mode=mode), mode, default_load(mode), hv)
    assert hv.output == b"hvupdate: rc=4242 (UNKNOWN)\n"


@pytest.mark.parametrize(("mode", "load"), [(64, 0x1_2345_0000), (32, 0x30_0000), (16, 0x1000)])
def test_update_at_another_load_address(mode: int, load: int) -> None:
    image = build_update_program(BUNDLE, SIGNATURE, mode=mode, load=load)
    hv = Hypervisor(update_rc=abi.Rc.BAD_SIGNATURE)
    run_guest(image, mode, load, hv)
    assert hv.output == b"hvupdate: rc=2 (BAD_SIGNATURE)\n"
    assert hv.calls[-1].data == BUNDLE and hv.calls[-1].rbx == load + image.index(BUNDLE)


def test_16bit_bundle_above_64k_is_reached_by_its_linear_address() -> None:
    bundle = bytes(100_000)
    image = build_update_program(bundle, SIGNATURE, mode=16)
    hv = Hypervisor()
    run_guest(image, 16, layout.DEFAULT_LOAD_REAL, hv)
    assert hv.calls[-1].data == bundle and hv.calls[-1].signature == SIGNATURE
    assert hv.calls[-1].rdx > 0x10000


def test_16bit_image_too_big_for_conventional_memory() -> None:
    room = layout.REAL_MODE_IMAGE_END - layout.DEFAULT_LOAD_REAL
    with pytest.raises(ConfigError, match=r"16-bit update image is \d+ bytes") as info:
        build_update_program(bytes(room), SIGNATURE, mode=16)
    assert f"{room} bytes available" in str(info.value)


def test_16bit_code_must_fit_the_first_segment() -> None:
    with pytest.raises(ConfigError, match="64 KiB"):
        build_update_program(BUNDLE, SIGNATURE, mode=16, load=0xFF00)


# ------------------------------------------------------------------ hello and status


def test_identify_runs_with_and_without_a_disk(tmp_path: Path, hv: testing.Hypervisor) -> None:
    """The ATA ports are in front of every program: the identify program builds by name."""
    run = hv.run_program("identify")
    assert run.halted and run.output.startswith("identify: no disk on the primary channel")
    config = MachineConfig(disk=tmp_path / "disk.img", disk_size_mib=1, timeout=10.0)
    with_disk = testing.Hypervisor(config)
    try:
        run = with_disk.run_program("identify")
    finally:
        with_disk.close()
    assert run.output == "identify: HV-EMU HARDDISK, 2048 sectors (LBA48 yes, DMA yes)\n"


def test_hello_prints_and_halts() -> None:
    hv = Hypervisor()
    run_guest(build_program("hello"), 64, layout.DEFAULT_LOAD, hv)
    assert hv.output == b"hello from the guest\n"
    assert hv.calls == []


def test_status_prints_the_hypervisors_text() -> None:
    hv = Hypervisor()
    image = build_program("status")
    run_guest(image, 64, layout.DEFAULT_LOAD, hv)
    assert hv.output == STATUS_TEXT
    _lookup, status = hv.calls
    # vmmstatus's call: one byte of the buffer kept for the NUL the program stores itself.
    assert status.nr == NUMBERS["get_status"] and status.rcx == 1023
    assert layout.DEFAULT_LOAD < status.rbx < layout.DEFAULT_LOAD + len(image)


def test_status_with_a_small_buffer_reports_the_code() -> None:
    hv = Hypervisor()
    run_guest(build_program("status", equates={"STATUS_BUF_SIZE": 8}), 64,
              layout.DEFAULT_LOAD, hv)
    assert hv.output == b"hvstatus: rc=1 (UNREADABLE): the text is 32 bytes, the buffer 7\n"


def test_status_with_a_buffer_of_exactly_the_texts_length_prints_it() -> None:
    # BitVisor's get_status takes a buffer as long as the text (it writes no NUL); the program
    # offers its size minus one and terminates the text itself.
    hv = Hypervisor()
    run_guest(build_program("status", equates={"STATUS_BUF_SIZE": len(STATUS_TEXT) + 1}), 64,
              layout.DEFAULT_LOAD, hv)
    assert hv.output == STATUS_TEXT
    assert hv.calls[-1].rcx == len(STATUS_TEXT)


def test_status_without_the_service() -> None:
    hv = Hypervisor(names={"get_vmmcall_number": 0})
    run_guest(build_program("status"), 64, layout.DEFAULT_LOAD, hv)
    assert hv.output == b"hvstatus: get_status not found\n"


def test_a_users_source_may_not_redefine_an_abi_constant(tmp_path: Path) -> None:
    """keystone would take the second `.equ` silently (the last one wins): a program built so would
    call a different hypercall than its source says."""
    mine = tmp_path / "mine.s"
    mine.write_text(".equ HC_GET_STATUS, 5\nmov eax, HC_GET_STATUS\nhlt\n")
    with pytest.raises(ConfigError, match=r"mine\.s redefines HC_GET_STATUS"):
        build_source_file(mine)
    mine.write_text(".set RC_OK, 1\nhlt\n")
    with pytest.raises(ConfigError, match="redefines RC_OK"):
        build_source_file(mine)
    mine.write_text('#include "hvabi.s"\n#include "print64.s"\nmov eax, HC_GET_STATUS\nhlt\n')
    assert build_source_file(mine)


def test_an_included_file_that_is_not_assembly_is_named(tmp_path: Path) -> None:
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:\n")
    (tmp_path / "mine.s").write_text(f'hlt\n#include "{tmp_path / "passwd"}"\n')
    with pytest.raises(AssemblyError) as info:
        build_source_file(tmp_path / "mine.s")
    assert str(info.value).startswith("passwd:1: `root:x:0:0:root:/root:/bin/bash`: keystone: ")
    assert "prelude" not in str(info.value)


def test_a_missing_include_names_every_directory_searched(tmp_path: Path) -> None:
    (tmp_path / "main.s").write_text('#include "nowhere.s"\nhlt\n')
    with pytest.raises(ConfigError, match=r'#include "nowhere.s": not found in .*, .*include'):
        load_source("main.s", asm_dir=tmp_path)
