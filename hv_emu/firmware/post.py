"""The interrupt hardware as POST leaves it: the 8259A pair and the 8254's counter 0.

Models: what a PC BIOS programs before it boots, through the same ports a guest uses (so the
devices see ordinary port writes): the master 8259A at vector base 08h and the slave at 70h
(ICW1 11h: edge, cascade, ICW4 follows; ICW3 04h / 02h: the slave on IR2; ICW4 01h: 8086 mode,
normal EOI), masks master FAh (IRQ0 the timer and IRQ2 the cascade open) and slave FFh (all
closed: the firmware installs no handler for IRQ8-15, whose vectors stay 0000:0000); counter 0
in mode 3 (square wave) with count 0 (65536): IRQ0 at 1,193,182 / 65,536 = 18.2 Hz, the PC's
timer tick, which the firmware's int 08h counts in the BDA.

Follows: IBM PC/AT Technical Reference (vector bases 08h and 70h); SeaBIOS ``src/hw/pic.c``
``pic_reset`` (the same ICWs) and ``src/hw/timer.c`` ``pit_setup`` (counter 0, count 0; SeaBIOS
uses mode 2, the IBM PC BIOS mode 3: both give one IRQ0 edge per 65,536 input clocks).

Leaves out: the RTC's IRQ8, the keyboard's IRQ1 and the ATA's IRQ14 (masked: the firmware polls
the disk, and a guest that wants IRQ14 unmasks it and installs its handler), the A20 gate.

Guest controls: nothing at this point (it has not run yet); afterwards it may reprogram all of
it, as any PC guest may.
"""

from __future__ import annotations

from hv_emu.bus import PortIoBus
from hv_emu.layout import PORT_PIC_MASTER, PORT_PIC_SLAVE, PORT_PIT

MASTER_BASE, SLAVE_BASE = 0x08, 0x70
MASTER_MASK, SLAVE_MASK = 0xFA, 0xFF
_ICW1 = 0x11  # edge, cascade, ICW4 needed
_ICW4 = 0x01  # 8086 mode, normal EOI
_PIT_CONTROL = 3  # the control word's offset in the PIT's block
_COUNTER0_MODE3 = 0x36  # counter 0, LSB then MSB, mode 3, binary


def program_interrupt_hardware(bus: PortIoBus) -> None:
    """The PIC pair and the PIT as a PC BIOS leaves them (module docstring)."""
    for port, base, cascade, mask in ((PORT_PIC_MASTER, MASTER_BASE, 0x04, MASTER_MASK),
                                      (PORT_PIC_SLAVE, SLAVE_BASE, 0x02, SLAVE_MASK)):  # fmt: skip
        bus.write(port, 1, _ICW1)
        for value in (base, cascade, _ICW4, mask):  # ICW2, ICW3, ICW4, then OCW1
            bus.write(port + 1, 1, value)
    bus.write(PORT_PIT + _PIT_CONTROL, 1, _COUNTER0_MODE3)
    bus.write(PORT_PIT, 1, 0)  # count 0 = 65536: LSB...
    bus.write(PORT_PIT, 1, 0)  # ...then MSB
