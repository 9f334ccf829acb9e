"""Guest code shared by the 16-bit interrupt tests (tests/devices/test_ata_irq.py, the timer
guests of tests/vcpu/test_timer_guest.py): the 8259A pair programmed as a PC BIOS leaves it."""

from __future__ import annotations

#: Where the remapped PICs put IRQ 0 and IRQ 8 (vectors 0x20-0x27, 0x28-0x2F).
MASTER_BASE, SLAVE_BASE = 0x20, 0x28


def remap_pics(master_mask: int, slave_mask: int, indent: str = "    ") -> str:
    """16-bit assembly: ICW1-ICW4 to both PICs (edge, cascade on IRQ2, 8086 mode, vectors at
    ``MASTER_BASE`` and ``SLAVE_BASE``), then their masks (OCW1: a set bit masks the IRQ).
    Clobbers AL."""
    lines = [
        "mov al, 0x11", "out 0x20, al", "out 0xa0, al",  # ICW1: edge, cascade, ICW4 follows
        f"mov al, {MASTER_BASE:#x}", "out 0x21, al", f"mov al, {SLAVE_BASE:#x}", "out 0xa1, al",
        "mov al, 4", "out 0x21, al", "mov al, 2", "out 0xa1, al",  # ICW3: the slave on IRQ2
        "mov al, 1", "out 0x21, al", "out 0xa1, al",  # ICW4: 8086 mode
        f"mov al, {master_mask & 0xFF:#x}", "out 0x21, al",
        f"mov al, {slave_mask & 0xFF:#x}", "out 0xa1, al",
    ]  # fmt: skip
    return "".join(f"{indent}{line}\n" for line in lines)
