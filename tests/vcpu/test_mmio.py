"""MMIO: Unicorn's ``mmio_map`` as hv-emu relies on it (docs/UNICORN.md U50-U52, on a bare
engine), and the vCPU's MMIO windows (``Vcpu.map_mmio``, ``hv_emu/mmio.py``) on a machine."""

from __future__ import annotations

import pytest

from guest_tool.assemble import assemble
from hv_emu.errors import ConfigError
from hv_emu.exits import Fault, Halt
from hv_emu.machine import Machine, MachineConfig
from hv_emu.mmio import MmioBus

WINDOW = 0xFEBF0000
CODE = 0x1000


class Recorder:
    """An MMIO device that logs every access and answers reads with a fixed pattern."""

    PATTERN = 0x1122334455667788

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, int]] = []

    def mmio_read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0))
        return self.PATTERN & ((1 << (8 * size)) - 1)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))


def bare_engine(read_stop: bool = False, write_stop: bool = False):  # type: ignore[no-untyped-def]
    import unicorn

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 2 << 20)
    log: list[tuple[str, int, int]] = []
    stops = {"r": read_stop, "w": write_stop}

    def read(engine: unicorn.Uc, offset: int, size: int, _ud: object) -> int:
        log.append(("r", offset, size))
        if stops["r"]:
            stops["r"] = False
            engine.emu_stop()
        return 0x55

    def write(engine: unicorn.Uc, offset: int, size: int, value: int, _ud: object) -> None:
        log.append(("w", offset, size))
        if stops["w"]:
            stops["w"] = False
            engine.emu_stop()

    uc.mmio_map(WINDOW, 0x1000, read, None, write, None)
    return uc, log


def run_bare(uc, source: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Run ``source`` (RBX = the window) once; (RIP after, end address)."""
    from unicorn import x86_const as X

    code = assemble(source + "\nhlt", mode=64, address=CODE)
    uc.mem_write(CODE, code)
    uc.reg_write(X.UC_X86_REG_RBX, WINDOW)
    end = CODE + len(code) - 1
    uc.emu_start(CODE, end)
    return uc.reg_read(X.UC_X86_REG_RIP), end


def test_mmio_map_takes_whole_pages_outside_ram() -> None:
    """docs/UNICORN.md U50: a window must be 4 KiB aligned and sized, and may not overlap RAM."""
    import unicorn

    uc, _ = bare_engine()
    with pytest.raises(unicorn.UcError) as unaligned:
        uc.mmio_map(WINDOW + 0x1800, 0x800, lambda *a: 0, None, lambda *a: None, None)
    assert unaligned.value.errno == unicorn.UC_ERR_ARG
    with pytest.raises(unicorn.UcError) as overlap:
        uc.mmio_map(0x100000, 0x1000, lambda *a: 0, None, lambda *a: None, None)
    assert overlap.value.errno == unicorn.UC_ERR_MAP


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("mov al, [rbx + 1]", [("r", 1, 1)]),
        ("mov ax, [rbx + 2]", [("r", 2, 2)]),
        ("mov eax, [rbx + 4]", [("r", 4, 4)]),
        ("mov rax, [rbx + 8]", [("r", 8, 4), ("r", 12, 4)]),
        ("mov eax, [rbx + 2]", [("r", 0, 4), ("r", 4, 4)]),
        ("mov ax, [rbx + 3]", [("r", 2, 2), ("r", 4, 2)]),
        ("mov byte ptr [rbx + 1], 5", [("w", 1, 1)]),
        ("mov word ptr [rbx + 2], 5", [("w", 2, 2)]),
        ("mov dword ptr [rbx + 4], 5", [("w", 4, 4)]),
        ("mov qword ptr [rbx + 8], rcx", [("w", 8, 4), ("w", 12, 4)]),
        ("mov dword ptr [rbx + 2], 5", [("w", 2, 1), ("w", 3, 1), ("w", 4, 1), ("w", 5, 1)]),
    ],
)
def test_mmio_callbacks_see_only_aligned_accesses(
    source: str, expected: list[tuple[str, int, int]]
) -> None:
    """docs/UNICORN.md U51: aligned 1/2/4-byte accesses arrive whole; an 8-byte access as two
    4-byte ones, low first; an unaligned load as two aligned loads of its size; an unaligned
    store byte by byte."""
    uc, log = bare_engine()
    run_bare(uc, source)
    assert log == expected


def test_a_stop_from_an_mmio_callback_replays_the_access() -> None:
    """docs/UNICORN.md U52: ``emu_stop`` inside an MMIO store (or load) callback ends the run with
    RIP still on that instruction, whose effects on registers are not done; resuming there runs
    it, and calls the callback, again."""
    from unicorn import x86_const as X

    for kind, source in (("w", "mov dword ptr [rbx], 1"), ("r", "mov eax, [rbx]")):
        uc, log = bare_engine(read_stop=kind == "r", write_stop=kind == "w")
        rip, end = run_bare(uc, f"nop\n mov ecx, 7\n {source}\n mov edx, 9")
        assert rip == CODE + 1 + 5  # on the MMIO instruction, after nop and mov ecx
        assert uc.reg_read(X.UC_X86_REG_RCX) == 7 and uc.reg_read(X.UC_X86_REG_RDX) == 0
        uc.emu_start(rip, end)
        assert uc.reg_read(X.UC_X86_REG_RDX) == 9
        assert [entry[0] for entry in log] == [kind, kind]  # the access ran twice


def test_host_writes_from_an_mmio_store_are_seen_without_a_stop() -> None:
    """docs/UNICORN.md U52: a host write to RAM from a store callback lands at once (the guest
    reads it right after), and the run goes on."""
    import unicorn
    from unicorn import x86_const as X

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 2 << 20)

    def write(engine: unicorn.Uc, offset: int, size: int, value: int, _ud: object) -> None:
        engine.mem_write(0x5000, value.to_bytes(4, "little"))

    uc.mmio_map(WINDOW, 0x1000, lambda *a: 0, None, write, None)
    rip, end = run_bare(uc, "mov dword ptr [rbx], 0x1234\n mov eax, [0x5000]")
    assert rip == end and uc.reg_read(X.UC_X86_REG_RAX) == 0x1234


# The binding's "Exception ignored on converting result" for the load is part of the fact.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_binding_raises_a_callbacks_exception_from_emu_start() -> None:
    """docs/UNICORN.md U52: the binding catches an exception of an MMIO callback, stops the run
    with RIP on the access, and raises it from ``emu_start``."""
    import unicorn
    from unicorn import x86_const as X

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 2 << 20)
    calls: list[int] = []

    def read(_engine: unicorn.Uc, offset: int, _size: int, _ud: object) -> int:
        calls.append(offset)
        raise ValueError("device bug")

    uc.mmio_map(WINDOW, 0x1000, read, None, lambda *a: None, None)
    with pytest.raises(ValueError, match="device bug"):
        run_bare(uc, "mov eax, [rbx]\n mov ecx, 7")
    assert calls == [0] and uc.reg_read(X.UC_X86_REG_RIP) == CODE
    assert uc.reg_read(X.UC_X86_REG_RCX) == 0


# ------------------------------------------------------------------ hv-emu's MMIO windows


def machine_with(device: Recorder) -> Machine:
    machine = Machine(MachineConfig(mem_mib=4, timeout=10))
    machine.mmio.register(WINDOW, 0x1000, device, "recorder")
    machine.vcpu.map_mmio(WINDOW, 0x1000, device)
    return machine


def test_a_guest_reaches_an_mmio_device() -> None:
    """A 32-bit guest (paging off) stores to and loads from the window. A 64-bit guest would have
    to map it first: the loader's identity map covers RAM only, so the same store is a #PF."""
    source = (f"mov ebx, {WINDOW:#x}\n mov dword ptr [ebx + 0x10], 0xabcd\n"
              f" mov eax, [ebx + 0x20]\n mov ecx, eax\n hlt")  # fmt: skip
    device = Recorder()
    machine = machine_with(device)
    machine.load(assemble(source, mode=32, address=0x100000), mode=32)
    result = machine.run()
    assert isinstance(result.exit, Halt), result.exit
    assert device.log == [("w", 0x10, 4, 0xABCD), ("r", 0x20, 4, 0)]
    assert machine.vcpu.reg("rcx") == Recorder.PATTERN & 0xFFFFFFFF

    machine = machine_with(Recorder())
    machine.load(assemble(source, mode=64, address=0x100000), mode=64)
    fault = machine.run().exit
    assert isinstance(fault, Fault) and fault.vector == 14 and fault.address == WINDOW + 0x10


def test_an_exception_in_a_device_ends_the_run_and_is_raised() -> None:
    class Broken(Recorder):
        def mmio_read(self, offset: int, size: int) -> int:
            raise RuntimeError("device bug")

    machine = machine_with(Broken())
    machine.load(assemble(f"mov ebx, {WINDOW:#x}\n mov eax, [ebx]\n hlt", mode=32,
                          address=0x100000), mode=32)  # fmt: skip
    with pytest.raises(RuntimeError, match="device bug"):
        machine.run()


def test_dma_from_a_store_is_flushed_before_the_guest_runs_it() -> None:
    """A device store that writes code into RAM (DMA): the guest's next MMIO load stops the run,
    the translated code is flushed, the load is replayed once, and the new code runs."""

    class Dma(Recorder):
        def __init__(self, machine_mem: object) -> None:
            super().__init__()
            self.mem = machine_mem

        def mmio_write(self, offset: int, size: int, value: int) -> None:
            super().mmio_write(offset, size, value)
            self.mem.write(0x100100, bytes([0xB8]) + value.to_bytes(4, "little"))  # type: ignore[attr-defined]

    machine = Machine(MachineConfig(mem_mib=4, timeout=10))
    device = Dma(machine.mem)
    machine.mmio.register(WINDOW, 0x1000, device, "dma")
    machine.vcpu.map_mmio(WINDOW, 0x1000, device)
    source = f"""
        mov ebx, {WINDOW:#x}
        mov esi, 2
    again:
        call 0x100100
        mov dword ptr [ebx], 0x4242
        mov ecx, [ebx + 4]
        dec esi
        jnz again
        call 0x100100
        hlt
    """
    code = assemble(source, mode=32, address=0x100000)
    assert len(code) < 0x100
    machine.load(code, mode=32)
    machine.mem.write(0x100100, bytes.fromhex("b801000000c3"))  # mov eax, 1; ret
    result = machine.run()
    assert isinstance(result.exit, Halt), result.exit
    assert machine.vcpu.reg("rax") == 0x4242  # the rewritten code ran, not the stale one
    assert [e for e in device.log if e[0] == "r"] == [("r", 4, 4, 0)] * 2  # each load once


def test_the_mmio_bus_refuses_bad_windows() -> None:
    bus = MmioBus(64 << 20)
    bus.register(WINDOW, 0x1000, Recorder(), "a")
    for base, size in ((WINDOW, 0x1000), (WINDOW + 0x800, 0x1000), (0x100000, 0x1000),
                       (0xFFFFF000, 0x2000), (WINDOW + 0x1000, 0x10)):  # fmt: skip
        with pytest.raises(ConfigError):
            bus.register(base, size, Recorder(), "b")
    assert bus.find(WINDOW + 0x10) is not None and bus.find(WINDOW + 0x1000) is None
