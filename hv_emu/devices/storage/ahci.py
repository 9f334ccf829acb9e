"""The AHCI host bus adapter: the ABAR register window of QEMU q35's ICH9 AHCI, one disk on port 0.

Models: the memory-mapped registers (ABAR, PCI BAR5: 4 KiB) of an AHCI 1.0 HBA as QEMU presents
the ICH9 AHCI at 00:1f.2 of a q35 machine: the generic host control (CAP 0xC0141F05: 6 ports, 32
command slots, NCQ, AHCI-only, 64-bit addressing, Gen1; GHC with HR, IE and AE (read-only 1);
IS (write 1 to clear); PI 0x3F; VS 1.0; CAP2 0) and six ports (``ahci_port.py``), port 0 holding
the disk and the others empty (PxSSTS 0, PxSIG all ones). Any access size and alignment the vCPU
delivers works: a narrower store changes only its bytes (byte enables), and stores to the
write-1-to-clear and write-1-to-set registers act on the written bytes only. The interrupt line
(``interrupt_line``: GHC.IE and any IS bit; an IS bit is set while PxIS & PxIE is non-zero) is
reported to ``on_interrupt`` whenever it changes, for an interrupt controller to wire.

Follows: Serial ATA AHCI 1.3.1 3.1 (host registers), 10.4.3 (HBA reset); docs/UNICORN.md U51 (the
access sizes the vCPU delivers); QEMU ``hw/ide/ahci.c``
(``ahci_mem_read_32``, ``ahci_mem_write``, ``ahci_check_irq``, ``ahci_reset``) for the values;
docs/STORAGE.md (AHCI) for the whole model and its threat table.

Leaves out: command completion coalescing, enclosure management, BIOS/OS handoff (CAP2 0), the
Index/Data pair of BAR4, MSI, more than one disk, interrupt delivery itself (the machine wires
``on_interrupt`` to the 8259A's IRQ 11, ``layout.IRQ_AHCI``; a driver may poll instead).

Guest controls: every register write, in any size and order, and everything the ports fetch from
guest memory (``ahci_port.py``, ``ahci_command.py``).

Threats (threat -> mitigation):
- offsets of reserved, vendor or absent-port registers -> read 0, writes ignored;
- writes to CAP, PI, VS (Linux writes CAP and PI back after a reset) -> ignored;
- an HBA reset in the middle of anything -> every port reset, the write returns with HR clear;
- the guest programs structures outside RAM -> the ports complete with an error (never raise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hv_emu.devices.storage import ahci_registers as a
from hv_emu.devices.storage import ata_registers as r
from hv_emu.devices.storage.ahci_command import SlotExecutor
from hv_emu.devices.storage.ahci_port import AhciPort, PortState
from hv_emu.devices.storage.disk import Disk
from hv_emu.devices.storage.observer import NullStorageObserver, StorageObserver
from hv_emu.memory.guest import GuestMemory


@dataclass(frozen=True)
class HbaState:
    """A snapshot: the host registers and a copy of every port's state."""

    ghc: int
    is_: int
    ports: tuple[PortState, ...]


#: IDENTIFY's NCQ queue depth (word 75: depth - 1), as QEMU reports for an AHCI disk.
NCQ_DEPTH = 32


class AhciHba:
    """An ``MmioDevice`` over the 4 KiB ABAR; ``disk`` is on port 0."""

    def __init__(
        self,
        disk: Disk,
        mem: GuestMemory,
        observer: StorageObserver | None = None,
        *,
        enabled: Callable[[], bool] | None = None,
        model: str = "HV-EMU HARDDISK",
        serial: str = "HVEMU0000000001",
        firmware: str = "1.0",
    ) -> None:
        self.disk = disk
        self.observer: StorageObserver = observer or NullStorageObserver()
        self.identify_params = r.IdentifyParams(disk.sector_count, model, serial, firmware,
                                                ncq_depth=NCQ_DEPTH)  # fmt: skip
        self.executor = SlotExecutor(mem, disk, self.observer, self.identify)
        self.ports = [AhciPort(mem, self.executor if i == 0 else None, enabled)
                      for i in range(a.NUM_PORTS)]  # fmt: skip
        #: Called with the new level of the interrupt line whenever it changes.
        self.on_interrupt: Callable[[bool], None] | None = None
        self.ghc = a.GHC_AE
        self.is_ = 0
        self._line = False

    def identify(self) -> bytes:
        return r.build_identify(self.identify_params)

    def reset(self) -> None:
        """GHC.HR (and power-on): IS and GHC cleared (AE stays set), every port reset."""
        self.ghc, self.is_ = a.GHC_AE, 0
        for port in self.ports:
            port.hba_reset()
        self._update_irq()

    @property
    def interrupt_line(self) -> bool:
        return self._line

    def snapshot(self) -> HbaState:
        return HbaState(self.ghc, self.is_, tuple(replace(p.st) for p in self.ports))

    def load_snapshot(self, state: HbaState) -> None:
        self.ghc, self.is_ = state.ghc, state.is_
        for port, saved in zip(self.ports, state.ports, strict=True):
            port.st = replace(saved)
        self._update_irq()

    # ------------------------------------------------------------------ MMIO
    def mmio_read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):  # any width and alignment: byte by byte from the dwords
            byte_at = offset + i
            value |= (self._read_dword(byte_at & ~3) >> (8 * (byte_at & 3)) & 0xFF) << (8 * i)
        return value

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        start = offset & ~3
        if start != (offset + size - 1) & ~3:  # spans two dwords: one part each
            first = 4 - (offset & 3)
            self.mmio_write(offset, first, value & ((1 << (8 * first)) - 1))
            self.mmio_write(offset + first, size - first, value >> (8 * first))
            return
        shift = 8 * (offset & 3)
        mask = ((1 << (8 * size)) - 1) << shift
        self._write_dword(start, (value << shift) & mask, mask)
        self._update_irq()

    def _read_dword(self, reg: int) -> int:
        if reg >= a.PORT_REGS_START:
            index, port_reg = divmod(reg - a.PORT_REGS_START, a.PORT_STRIDE)
            return self.ports[index].read(port_reg) if index < a.NUM_PORTS else 0
        host = {a.HOST_CAP: a.CAP_VALUE, a.HOST_GHC: self.ghc, a.HOST_IS: self.is_,
                a.HOST_PI: a.PI_VALUE, a.HOST_VS: a.VS_VALUE}  # fmt: skip
        return host.get(reg, 0)

    def _write_dword(self, reg: int, value: int, mask: int) -> None:
        if reg >= a.PORT_REGS_START:
            index, port_reg = divmod(reg - a.PORT_REGS_START, a.PORT_STRIDE)
            if index < a.NUM_PORTS:
                self.ports[index].write(port_reg, value, mask)
        elif reg == a.HOST_GHC:
            if value & a.GHC_HR:
                self.reset()
            else:
                self.ghc = a.GHC_AE | ((self.ghc & ~mask) | value) & a.GHC_IE
        elif reg == a.HOST_IS:
            self.is_ &= ~value

    def _update_irq(self) -> None:
        for i, port in enumerate(self.ports):
            if port.st.is_ & port.st.ie:
                self.is_ |= 1 << i
        line = bool(self.ghc & a.GHC_IE and self.is_)
        if line != self._line:
            self._line = line
            if self.on_interrupt is not None:
                self.on_interrupt(line)
