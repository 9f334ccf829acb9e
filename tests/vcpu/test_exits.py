"""Every kind of VM exit, on the real vCPU, in every mode."""

from __future__ import annotations

import pytest

from hv_emu.exits import Fault, Halt, Timeout
from hv_emu.machine import MachineConfig
from tests.conftest import Boot
from tests.rigs.ports import Fifo

HELLO = {
    64: """
        lea rsi, [rip + msg]
        mov dx, 0xe9
    next:
        lodsb
        test al, al
        jz done
        out dx, al
        jmp next
    done:
        hlt
    msg: .asciz "hello from the guest\\n"
    """,
    32: """
        call here
    here:
        pop esi
        add esi, msg - here
        mov dx, 0xe9
    next:
        lodsb
        test al, al
        jz done
        out dx, al
        jmp next
    done:
        hlt
    msg: .asciz "hello from the guest\\n"
    """,
    16: """
        mov si, msg
        mov dx, 0xe9
    next:
        lodsb
        test al, al
        jz done
        out dx, al
        jmp next
    done:
        hlt
    msg: .asciz "hello from the guest\\n"
    """,
}


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_port_out_reaches_the_debug_console_and_hlt_ends_the_run(boot: Boot, mode: int) -> None:
    machine, result = boot(HELLO[mode], mode=mode)
    assert isinstance(result.exit, Halt)
    assert result.exit.mode == mode
    assert machine.debugcon.text() == "hello from the guest\n"
    assert machine.events.of("halt")[0]["mode"] == mode


@pytest.mark.parametrize("paging", ["2level", "pae"])
def test_32_bit_guest_with_paging(boot: Boot, paging: str) -> None:
    machine, result = boot(HELLO[32], mode=32, paging=paging)
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "hello from the guest\n"
    assert machine.vcpu.reg("cr0") & (1 << 31)


def test_port_in_known_and_unknown_ports(boot: Boot) -> None:
    machine, result = boot("""
        mov dx, 0xe9
        in al, dx            # the debug console reads back 0xe9
        movzx r12, al
        mov dx, 0x80
        in eax, dx           # nobody there: all ones
        mov r13, rax
        in ax, 0x81
        movzx r14, ax
        hlt
    """)
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("r12") == 0xE9
    assert machine.vcpu.reg("r13") == 0xFFFFFFFF
    assert machine.vcpu.reg("r14") == 0xFFFF
    assert machine.bus.unknown[("in", 0x80)] == 1 and machine.bus.unknown[("in", 0x81)] == 1


def test_rep_insw_and_outsw_go_word_by_word_with_nothing_lost() -> None:
    from guest_tool.assemble import assemble
    from hv_emu.machine import Machine

    machine = Machine(MachineConfig(timeout=10.0))
    fifo = Fifo()
    machine.bus.register(0x300, 2, fifo, "fifo")
    machine.load(assemble("""
        mov dx, 0x300
        mov edi, 0x200000
        mov ecx, 256
        rep insw             # a sector's worth, one IN exit per word
        mov esi, 0x200000
        mov ecx, 256
        rep outsw
        hlt
    """, mode=64, address=0x100000))
    assert isinstance(machine.run().exit, Halt)
    words = machine.mem.read(0x200000, 512)
    assert [int.from_bytes(words[i : i + 2], "little") for i in range(0, 512, 2)] == list(
        range(1, 257)
    )
    assert fifo.written == list(range(1, 257))


def test_cpuid_shows_the_hypervisor(boot: Boot) -> None:
    machine, result = boot("""
        mov eax, 1
        cpuid
        mov r12, rcx
        mov eax, 0x40000000
        cpuid
        mov r13, rax
        mov r14, rbx
        mov r15, rcx
        mov eax, 0x40000001
        cpuid
        mov rbp, rbx
        hlt
    """)
    assert isinstance(result.exit, Halt)
    regs = machine.vcpu
    assert regs.reg("r12") & (1 << 31)
    assert regs.reg("r13") == 0x40000001
    signature = regs.reg("r14").to_bytes(4, "little") + regs.reg("r15").to_bytes(4, "little")
    assert signature == b"hv-emu\0\0"
    assert regs.reg("rbp") == 128


@pytest.mark.parametrize("mode", [16, 32, 64])
def test_vmcall_in_every_mode_resolves_a_name(boot: Boot, mode: int) -> None:
    machine, result = boot("""
        mov ebx, name        # an immediate: the name's linear address (zero-extended in 64-bit)
        xor eax, eax
        vmcall               # get_vmmcall_number("get_status")
        mov edi, eax
        mov eax, 0x7f        # an empty slot
        vmcall
        hlt
    name: .asciz "get_status"
    """, mode=mode)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.vcpu.reg("rdi") & 0xFFFFFFFF == 1
    assert machine.vcpu.reg("rax") == 0
    calls = machine.events.of("hypercall")
    assert [(c["nr"], c["name"], c["ret"]) for c in calls] == [
        (0, "get_vmmcall_number", 1), (127, None, 0)
    ]


@pytest.mark.parametrize(
    ("source", "kind", "vector"),
    [
        ("ud2", "#UD invalid opcode", 6),
        ("xor ecx, ecx\n div ecx", "#DE", 0),
        ("mov rbx, 0x40000000\n mov dword ptr [rbx], 1", "#PF", 14),
        ("int3", "#BP", 3),
        ("mov ax, 0x1234\n mov ds, ax", "#GP", 13),
    ],
)
def test_guest_faults_end_the_run_with_a_report(
    boot: Boot, source: str, kind: str, vector: int
) -> None:
    machine, result = boot(source + "\n hlt")
    fault = result.exit
    assert isinstance(fault, Fault), fault
    assert fault.kind == kind and fault.vector == vector
    assert fault.mode == 64
    line = fault.describe()
    assert "\n" not in line and "CS:RIP=" in line and "RAX=" in line
    assert machine.events.of("fault")[0]["kind"] == kind


def test_page_fault_reports_the_address(boot: Boot) -> None:
    _, result = boot("mov rbx, 0x40000000\n mov dword ptr [rbx], 1")
    assert isinstance(result.exit, Fault)
    assert result.exit.address == 0x40000000
    assert "mov dword ptr [rbx], 1" in result.exit.instruction


def test_real_mode_int_10h_reaches_the_bios_and_an_unserved_vector_still_faults(
    boot: Boot,
) -> None:
    """Every 16-bit run has hv-emu's firmware (docs/DEVICES.md): int 10h prints; a vector it
    does not serve stays 0000:0000 in the IVT, so INT n there ends the run as it always did."""
    machine, result = boot("mov ax, 0x0e41\n int 0x10\n hlt", mode=16)
    assert isinstance(result.exit, Halt)
    assert machine.vga.read_screen()[0][0] == "A"
    _, result = boot("mov ah, 0x0e\n int 0x61\n hlt", mode=16)
    assert isinstance(result.exit, Fault)
    assert "INT 0x61" in result.exit.kind


def test_watchdog_stops_a_spinning_guest(boot: Boot) -> None:
    machine, result = boot("spin: jmp spin", config=MachineConfig(timeout=0.2))
    assert isinstance(result.exit, Timeout)
    assert result.exit.seconds == 0.2
    assert machine.events.of("timeout")[0]["rip"] == 0x100000


@pytest.mark.parametrize(
    ("mode", "paging"), [(64, "none"), (32, "pae"), (32, "2level"), (16, "none")]
)
def test_a_loop_of_hypercalls_is_handled_every_time(boot: Boot, mode: int, paging: str) -> None:
    """Unicorn 2.1.4 stops silently at a VMCALL it has met twice before when paging is on; the
    vCPU must still turn every one into a hypercall exit."""
    machine, result = boot("""
        mov edi, 50
    again:
        mov eax, 0x7f        # an empty slot: RAX = 0 back
        vmcall
        dec edi
        jnz again
        hlt
    """, mode=mode, paging=paging)
    assert isinstance(result.exit, Halt), result.exit
    assert machine.hypercalls.calls == 50
    assert len(machine.events.of("hypercall")) == 50


def test_unknown_cpuid_leaves_run_natively_and_cost_the_host_nothing(boot: Boot) -> None:
    """A guest may walk any number of leaves: none is cached or emulated in Python."""
    from hv_emu.vcpu import native_cpuid

    before = native_cpuid.cache_info().currsize
    machine, result = boot("""
        mov r12d, 200
    again:
        mov eax, r12d
        add eax, 0x80000000
        mov ecx, r12d
        cpuid
        dec r12d
        jnz again
        mov eax, 0x80000000
        cpuid
        hlt
    """)
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("rax") & 0xFFFFFFFF >= 0x80000001  # the CPU model's own answer
    assert native_cpuid.cache_info().currsize == before
