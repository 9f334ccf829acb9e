"""Extension points of the vCPU and the machine: software interrupts, SYSCALL, code hooks,
single steps and exit observers (what OS personalities, debuggers and tracers build on)."""

from __future__ import annotations

from guest_tool.assemble import assemble
from hv_emu.exits import (
    Exit,
    Fault,
    Halt,
    Handled,
    Hypercall,
    Outcome,
    SoftwareInterrupt,
    Stopped,
    StopRequest,
    Syscall,
)
from hv_emu.machine import Machine, MachineConfig
from tests.conftest import Boot, boot_asm


def test_software_interrupt_reaches_a_registered_handler(boot: Boot) -> None:
    machine = Machine(MachineConfig(timeout=10))
    seen: list[SoftwareInterrupt] = []

    def linux_int80(exit_: SoftwareInterrupt) -> Handled:
        seen.append(exit_)
        return Handled(registers={"rax": exit_.registers["rbx"] * 2})

    machine.interrupts[0x80] = linux_int80
    _, result = boot_asm("mov eax, 4\n mov ebx, 21\n int 0x80\n mov edi, eax\n hlt",
                         mode=32, machine=machine)  # fmt: skip
    assert isinstance(result.exit, Halt)
    assert machine.vcpu.reg("rdi") == 42
    assert seen[0].vector == 0x80 and seen[0].registers["rax"] == 4 and seen[0].mode == 32
    assert seen[0].rip == 0x100000 + 12  # past the INT


def test_unhandled_software_interrupt_and_syscall_are_faults(boot: Boot) -> None:
    _, result = boot("int 0x80\n hlt")
    assert isinstance(result.exit, Fault) and "INT 0x80: no handler" in result.exit.kind
    _, result = boot("syscall\n hlt")
    assert isinstance(result.exit, Fault) and "SYSCALL" in result.exit.kind


def test_syscall_handler_and_stopping_from_it() -> None:
    machine = Machine(MachineConfig(timeout=10))

    def personality(exit_: Syscall) -> Outcome:
        if exit_.registers["rax"] == 60:  # exit
            return Stopped(f"exit({exit_.registers['rdi']})")
        return Handled(registers={"rax": 7})

    machine.set_syscall_handler(personality)
    _, result = boot_asm("mov eax, 1\n syscall\n mov r12, rax\n mov eax, 60\n mov edi, 3\n"
                         " syscall\n hlt", machine=machine)  # fmt: skip
    assert result.exit == StopRequest("exit(3)", 64, result.exit.rip)  # type: ignore[union-attr]
    assert machine.vcpu.reg("r12") == 7


def test_code_hook_breakpoint_and_single_step() -> None:
    machine = Machine(MachineConfig(timeout=10))
    image = assemble("mov eax, 1\n target: mov eax, 2\n mov eax, 3\n hlt", mode=64,
                     address=0x100000)  # fmt: skip
    machine.load(image)
    target = 0x100005
    handle = machine.vcpu.add_code_hook(lambda a, s: machine.vcpu.request_stop("breakpoint"),
                                        target, target)  # fmt: skip
    first = machine.vcpu.run(10)
    assert isinstance(first, StopRequest) and first.reason == "breakpoint"
    assert first.rip == target and machine.vcpu.reg("rax") == 1
    machine.vcpu.remove_hook(handle)
    step = machine.vcpu.run(10, steps=1)
    assert isinstance(step, StopRequest) and step.reason == "step"
    assert machine.vcpu.reg("rax") == 2 and step.rip == target + 5
    assert isinstance(machine.vcpu.run(10), Halt)
    assert machine.vcpu.reg("rax") == 3


def test_exit_observers_see_every_exit_with_its_outcome() -> None:
    machine = Machine(MachineConfig(timeout=10))
    log: list[tuple[Exit, Outcome, float]] = []
    machine.exit_observers.append(lambda e, o, t: log.append((e, o, t)))
    _, result = boot_asm("mov dx, 0xe9\n mov al, 65\n out dx, al\n xor eax, eax\n mov ebx, 0\n"
                         " vmcall\n hlt", machine=machine)  # fmt: skip
    assert isinstance(result.exit, Halt)
    kinds = [type(e).__name__ for e, _, _ in log]
    assert kinds == ["PortOut", "Hypercall", "Halt"]  # the exit that ended the run comes last
    assert isinstance(log[1][0], Hypercall) and log[1][1] == Handled(registers={"rax": 0})
    assert log[2][0] == result.exit and log[2][1] == Stopped("halt")
    assert all(t >= 0 for _, _, t in log)


def test_code_a_software_interrupt_handler_rewrites_runs_as_rewritten(boot: Boot) -> None:
    """An INT n handler that writes guest RAM (a ``read`` into a code page) must not leave the
    guest running code translated from the old bytes: the same rule as for SYSCALL and VMCALL."""
    machine = Machine(MachineConfig(timeout=10))
    f_imm = 0x100000 + 2 + 1  # after the 2-byte jmp: f = mov eax, imm32 (B8 imm32); ret

    def patch_f(_exit: SoftwareInterrupt) -> Handled:
        machine.mem.write(f_imm, (2).to_bytes(4, "little"))
        return Handled()

    machine.interrupts[0x30] = patch_f
    source = """
        jmp main
    f:  mov eax, 1
        ret
    main:
        call f
        mov esi, eax
        int 0x30
        call f
        mov edi, eax
        hlt
    """
    _, result = boot(source, mode=32, machine=machine)
    assert isinstance(result.exit, Halt)
    assert (machine.vcpu.reg("rsi"), machine.vcpu.reg("rdi")) == (1, 2)
