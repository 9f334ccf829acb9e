"""Interrupt request lines: how a device asks for attention without knowing who listens.

Models: the wire from a device's INTRQ pin to an input of the interrupt controller (an ISA IRQ
line). A device holds a ``Line`` and drives it high or low; the machine decides where the line
goes (the PIC input ``layout.py`` names) when it wires the board. A line nobody connected goes
nowhere, so a device works the same on a board without a controller (polled).

Follows: the ISA bus's edge-triggered IRQ lines (a rising edge is a request; IBM PC/AT
Technical Reference) and QEMU's ``qemu_irq`` (a device raises and lowers an opaque handle).

Leaves out: shared lines and level-triggered PCI INTx, MSI.

Guest controls: when a device raises or lowers its line (through the device's registers); the
line only passes the level on.
"""

from __future__ import annotations

from collections.abc import Callable


class Line:
    """One IRQ line: ``set(level)`` forwards a change of level to whoever the machine
    connected (``connect``); the level is remembered, so a repeated level is not a new edge."""

    def __init__(self) -> None:
        self.level = False
        self._sink: Callable[[bool], None] | None = None

    def connect(self, sink: Callable[[bool], None]) -> None:
        self._sink = sink
        if self.level:
            sink(True)

    def set(self, level: bool) -> None:
        if level == self.level:
            return
        self.level = level
        if self._sink is not None:
            self._sink(level)

    def raise_(self) -> None:
        self.set(True)

    def lower(self) -> None:
        self.set(False)

    def pulse(self) -> None:
        """A rising edge and back (an edge-triggered request that holds nothing high)."""
        self.set(True)
        self.set(False)
