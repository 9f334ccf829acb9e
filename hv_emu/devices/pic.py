"""The 8259A programmable interrupt controller, master and slave cascaded on IRQ2.

Models: the PC/AT's pair of 8259As: eight edge-triggered request inputs each (IRR), a mask
register (IMR, OCW1), the in-service register (ISR) set at the CPU's acknowledge (INTA) and
cleared by an end-of-interrupt (OCW2: non-specific, specific, the rotate variants, set
priority), fixed or rotating priority (IR0 highest after reset), automatic EOI (ICW4 bit 1),
the initialisation sequence ICW1-ICW4 (vector base in ICW2, cascade in ICW3), IRR/ISR reads and
poll mode through OCW3, special mask mode, and the spurious IRQ7 (IRQ15 on the slave) when a
request vanishes before it is acknowledged. The slave's output drives the master's IR2; an
acknowledge of IR2 acknowledges the slave as well. Each chip is two ports: offset 0 command,
offset 1 data (the machine places them at 0x20/0x21 and 0xA0/0xA1, ``layout.py``).

Follows: Intel 8259A data sheet (ICW/OCW formats, priority, AEOI, poll, special mask); QEMU
``hw/intc/i8259.c`` (``pic_set_irq``, ``pic_get_irq``, ``pic_intack``, ``pic_read_irq``,
``pic_ioport_write``: the same decisions, so a guest sees what it sees under QEMU); Linux
``arch/x86/kernel/i8259.c`` (the 0xFB IMR read-back probe).

Leaves out: level-triggered mode (ICW1.LTIM and the ELCR at 0x4D0/0x4D1: edge only), buffered
mode, the 8080/8085 call format (ICW4 bit 0 is taken as set), special fully nested mode.

Guest controls: every port write (ICWs, OCWs in any order, garbage included) and read; all
state is eight-bit registers, so nothing grows and no sequence can wedge the model (ICW1
always restarts initialisation).
"""

from __future__ import annotations

from collections.abc import Callable

#: The cascade input of the master (the slave's INT output).
CASCADE_IRQ = 2
SPURIOUS_IRQ = 7


class Pic8259:
    """One 8259A chip: a ``PortDevice`` of two ports (command, data)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self.reset_state()
        self.imr = 0  # after power-on the mask is clear; ICW1 clears it again

    def reset_state(self) -> None:
        self.irr = 0  # requests
        self.isr = 0  # in service
        self.imr = 0
        self.last_level = 0  # input levels, for edge detection
        self.priority_add = 0  # the lowest-priority IR is priority_add - 1 (rotation)
        self.vector_base = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.auto_eoi = False
        self.rotate_on_auto_eoi = False
        self.init_state = 0  # 0: operating; 1..3: expecting ICW2..ICW4
        self.needs_icw4 = False
        self.single = False

    # ------------------------------------------------------------------ requests
    def set_irq(self, irq: int, level: bool) -> None:
        """Input ``irq`` at ``level``: a rising edge sets its IRR bit (edge-triggered)."""
        mask = 1 << irq
        if level:
            if not self.last_level & mask:
                self.irr |= mask
            self.last_level |= mask
        else:
            self.last_level &= ~mask
        self._on_change()

    def _highest(self, bits: int) -> int | None:
        """The highest-priority set bit of ``bits``, by the current rotation."""
        if not bits:
            return None
        for n in range(8):
            irq = (n + self.priority_add) & 7
            if bits & (1 << irq):
                return n
        return None

    def pending_irq(self, cascade_in_service_ok: bool = False) -> int | None:
        """The IR this chip would signal now (it beats everything in service), or ``None``."""
        request = self._highest(self.irr & ~self.imr)
        if request is None:
            return None
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if cascade_in_service_ok:
            in_service &= ~(1 << CASCADE_IRQ)
        current = self._highest(in_service)
        if current is not None and current <= request:
            return None
        return (request + self.priority_add) & 7

    def acknowledge(self, irq: int) -> None:
        """INTA for ``irq``: into service (unless AEOI), out of the request register."""
        mask = 1 << irq
        if self.auto_eoi:
            if self.rotate_on_auto_eoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= mask
        self.irr &= ~mask  # edge-triggered: the request is consumed

    # ------------------------------------------------------------------ ports
    def io_read(self, offset: int, size: int) -> int:
        if self.poll:
            self.poll = False
            irq = self.pending_irq()
            if irq is None:
                return 0x07  # no request: QEMU's answer (the data sheet leaves W2-W0 open)
            self.acknowledge(irq)
            self._on_change()
            return 0x80 | irq
        if offset & 1:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def io_write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        if offset & 1 == 0:
            self._command(value)
        else:
            self._data(value)
        self._on_change()

    def _command(self, value: int) -> None:
        if value & 0x10:  # ICW1
            self.reset_state()
            self.init_state = 1
            self.needs_icw4 = bool(value & 1)
            self.single = bool(value & 2)
            return
        if value & 0x08:  # OCW3
            if value & 0x04:
                self.poll = True
            if value & 0x02:
                self.read_isr = bool(value & 1)
            if value & 0x40:
                self.special_mask = bool(value & 0x20)
            return
        command = value >> 5  # OCW2
        if command in (0, 4):  # clear / set rotate in automatic EOI
            self.rotate_on_auto_eoi = command == 4
        elif command in (1, 5):  # non-specific EOI (5: and rotate)
            current = self._highest(self.isr)
            if current is not None:
                irq = (current + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if command == 5:
                    self.priority_add = (irq + 1) & 7
        elif command in (3, 7):  # specific EOI (7: and rotate)
            irq = value & 7
            self.isr &= ~(1 << irq)
            if command == 7:
                self.priority_add = (irq + 1) & 7
        elif command == 6:  # set priority: IR (value & 7) becomes the lowest
            self.priority_add = (value + 1) & 7

    def _data(self, value: int) -> None:
        if self.init_state == 1:  # ICW2
            self.vector_base = value & 0xF8
            self.init_state = 2 if not self.single else (3 if self.needs_icw4 else 0)
        elif self.init_state == 2:  # ICW3 (cascade wiring: fixed on a PC)
            self.init_state = 3 if self.needs_icw4 else 0
        elif self.init_state == 3:  # ICW4
            self.auto_eoi = bool(value & 2)
            self.init_state = 0
        else:  # OCW1
            self.imr = value


class PicPair:
    """Master and slave 8259A, the slave on the master's IR2: the system's interrupt
    controller as the vCPU sees it (``pending``, ``acknowledge``) and as devices see it
    (``set_irq`` 0-15)."""

    def __init__(self) -> None:
        #: Called when the INTR output may have changed (the machine kicks the vCPU).
        self.on_intr: Callable[[], None] | None = None
        self.master = Pic8259(self._update)
        self.slave = Pic8259(self._update)
        self.acknowledged = 0  # INTA cycles so far (statistics)

    def _update(self) -> None:
        slave_out = self.slave.pending_irq() is not None
        # The slave's output is a level on the master's IR2; with edge detection a new request
        # behind one already in service shows up after the EOI, as on the real board.
        master = self.master
        mask = 1 << CASCADE_IRQ
        if slave_out:
            if not master.last_level & mask:
                master.irr |= mask
            master.last_level |= mask
        else:
            master.last_level &= ~mask  # QEMU's edge mode: a latched IR2 stays (spurious IR15)
        if self.on_intr is not None and self.pending():
            self.on_intr()

    def set_irq(self, irq: int, level: bool) -> None:
        """ISA IRQ ``irq`` (0-7 master, 8-15 slave) at ``level``."""
        if irq >= 8:
            self.slave.set_irq(irq - 8, level)
        else:
            self.master.set_irq(irq, level)

    def pending(self) -> bool:
        """INTR: the master has an interrupt to signal."""
        return self.master.pending_irq() is not None

    def acknowledge(self) -> int:
        """The CPU's INTA cycle: the vector of the highest-priority request (base + IR), the
        spurious IR7/IR15 vector if the request went away in the meantime."""
        self.acknowledged += 1
        master = self.master
        irq = master.pending_irq()
        if irq is None:
            return master.vector_base + SPURIOUS_IRQ
        master.acknowledge(irq)
        if irq != CASCADE_IRQ:
            vector = master.vector_base + irq
        else:
            slave_irq = self.slave.pending_irq()
            if slave_irq is None:
                vector = self.slave.vector_base + SPURIOUS_IRQ
            else:
                self.slave.acknowledge(slave_irq)
                vector = self.slave.vector_base + slave_irq
        self._update()
        return vector
