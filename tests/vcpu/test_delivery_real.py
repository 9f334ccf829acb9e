"""Real-mode delivery through the IVT: INT n, INT3, CPU exceptions, the frame, IRET, and the
guests that have no handler (today's one-line report)."""

from __future__ import annotations

from hv_emu.exits import Fault, Halt, Handled, SoftwareInterrupt
from tests.conftest import Boot

#: Points vector N at ``label`` (segment 0).
SET_VECTOR = """
    xor ax, ax
    mov ds, ax
    mov word ptr [{n}*4], {label}
    mov word ptr [{n}*4+2], 0
"""


def vector(n: int, label: str) -> str:
    return SET_VECTOR.format(n=n, label=label)


def test_int_n_runs_the_ivt_handler_and_iret_returns_after_it(boot: Boot) -> None:
    machine, result = boot(vector(0x21, "handler") + """
        mov al, 'a'
        int 0x21
        mov al, 'c'
        out 0xe9, al
        hlt
    handler:
        out 0xe9, al
        mov al, 'b'
        out 0xe9, al
        iret
    """, mode=16)
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "abc"


def test_the_frame_holds_flags_cs_ip_and_if_tf_are_cleared(boot: Boot) -> None:
    """FLAGS, CS, IP pushed (IP after the INT), IF cleared in the handler, restored by IRET."""
    machine, result = boot(vector(0x30, "handler") + """
        mov sp, 0x7000
        sti
        int 0x30
    after:
        pushf
        pop ax
        out 0xe9, al            # low byte of FLAGS after IRET
        mov al, ah
        out 0xe9, al            # high byte: IF (bit 9) back on
        cli                     # the firmware's timer runs: HLT with IF=1 would wait for it
        hlt
    handler:
        pushf
        pop ax
        mov al, ah
        out 0xe9, al            # high byte in the handler: IF off
        mov bp, sp
        mov ax, [bp]
        out 0xe9, al            # pushed IP, low byte
        mov al, ah
        out 0xe9, al
        mov ax, [bp+2]
        out 0xe9, al            # pushed CS
        mov ax, sp
        mov al, ah
        out 0xe9, al            # SP high byte: 0x6f (0x7000 - 6)
        mov ax, sp
        out 0xe9, al            # SP low byte: 0xfa
        mov ax, after
        out 0xe9, al            # where IRET goes: the instruction after the INT
        mov al, ah
        out 0xe9, al
        iret
    """, mode=16)
    assert isinstance(result.exit, Halt)
    out = bytes(machine.debugcon.captured)
    assert out[0] & 0x02 == 0  # IF cleared inside the handler
    pushed_ip, after = out[1] | out[2] << 8, out[6] | out[7] << 8
    assert pushed_ip == after
    assert out[3] == 0
    assert (out[4], out[5]) == (0x6F, 0xFA)
    assert out[9] & 0x02  # IF set again after IRET (FLAGS high byte)


def test_a_fault_returns_to_the_faulting_instruction(boot: Boot) -> None:
    """#DE pushes the IP of the DIV itself: the handler skips it (2 bytes) before IRET."""
    machine, result = boot(vector(0, "de") + """
        xor cx, cx
        mov al, 'a'
        div cl
        mov al, 'c'
        out 0xe9, al
        hlt
    de:
        mov al, 'b'
        out 0xe9, al
        mov bp, sp
        add word ptr [bp], 2
        iret
    """, mode=16)
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "bc"


def test_int3_ud2_and_a_repeated_fault_each_reach_their_handler(boot: Boot) -> None:
    """Ten #DE in a row are ten deliveries (the CPU forgets each delivered exception, so the
    second is not a double fault), then INT3 and UD2."""
    machine, result = boot(vector(0, "on_de") + vector(3, "on_bp") + vector(6, "on_ud") + """
        mov si, 10
    again:
        xor cx, cx
        div cl
        dec si
        jnz again
        int3
        ud2
        mov al, '.'
        out 0xe9, al
        hlt
    on_de:
        mov al, 'd'
        out 0xe9, al
        mov bp, sp
        add word ptr [bp], 2
        iret
    on_bp:
        mov al, 'b'
        out 0xe9, al
        iret
    on_ud:
        mov al, 'u'
        out 0xe9, al
        mov bp, sp
        add word ptr [bp], 2
        iret
    """, mode=16)
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "d" * 10 + "bu."


def test_a_handler_in_another_segment_gets_its_own_cs(boot: Boot) -> None:
    """The entry's segment is loaded with its base (segment * 16): the handler runs from a copy
    of itself 64 KiB up, reached as 1000:xxxx."""
    machine, result = boot("""
        xor ax, ax
        mov ds, ax
        mov ax, 0x1000
        mov es, ax
        mov si, handler
        mov di, si
        mov cx, handler_end - handler
        rep movsb               # the handler's bytes to 1000:handler as well
        mov word ptr [0x40*4], handler
        mov word ptr [0x40*4+2], 0x1000
        int 0x40
        mov al, '!'
        out 0xe9, al
        hlt
    handler:
        mov ax, cs
        mov al, ah
        out 0xe9, al            # 0x10
        iret
    handler_end:
        hlt
    """, mode=16)
    assert isinstance(result.exit, Halt)
    assert bytes(machine.debugcon.captured) == b"\x10!"


def test_without_a_handler_faults_end_the_run_as_before(boot: Boot) -> None:
    """An IVT entry of 0000:0000 is no handler: the one-line fault report, as without delivery.
    (The firmware serves int 10h and a few more: a vector it leaves at 0000:0000 is used.)"""
    _, result = boot("xor cx, cx\n div cl\n hlt", mode=16)
    assert isinstance(result.exit, Fault)
    assert result.exit.kind == "#DE" and result.exit.vector == 0
    _, result = boot("int 0x60\n hlt", mode=16)
    assert isinstance(result.exit, Fault)
    assert "INT 0x60" in result.exit.kind


def test_a_vector_the_hypervisor_owns_never_reaches_the_ivt(boot: Boot) -> None:
    """A registered software-interrupt handler (a BIOS model, Linux's int 0x80) takes its
    vector even when the guest's IVT has an entry for it."""
    from hv_emu.machine import Machine, MachineConfig

    machine = Machine(MachineConfig(timeout=10.0))
    seen: list[int] = []

    def handler(exit_: SoftwareInterrupt) -> Handled:
        seen.append(exit_.vector)
        return Handled({"rax": 0x21})

    machine.interrupts[0x50] = handler
    _, result = boot(vector(0x50, "guest") + """
        int 0x50
        out 0xe9, al
        hlt
    guest:
        mov al, 'g'
        out 0xe9, al
        iret
    """, mode=16, machine=machine)
    assert isinstance(result.exit, Halt)
    assert seen == [0x50]
    assert machine.debugcon.text() == "!"


def test_a_vector_beyond_the_ivt_limit_is_a_gp(boot: Boot) -> None:
    """LIDT with a limit of 0x3F covers vectors 0-15: INT 0x20 is then a #GP (vector 13),
    delivered through entry 13 with IP on the INT instruction."""
    machine, result = boot(vector(13, "gp") + vector(0x20, "never") + """
        lidt [idtr]
        int 0x20
        mov al, 'x'
        out 0xe9, al
        hlt
    gp:
        mov al, 'g'
        out 0xe9, al
        mov bp, sp
        add word ptr [bp], 2    # skip the INT 0x20
        iret
    never:
        mov al, 'n'
        out 0xe9, al
        iret
    idtr:
        .word 0x3f
        .long 0
    """, mode=16)
    assert isinstance(result.exit, Halt)
    assert machine.debugcon.text() == "gx"
