"""The 8259A pair: initialisation sequences, masks, priorities, EOIs, the cascade, IRR/ISR reads,
poll mode and the spurious IRQ7, driven through its ports as a guest drives it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.devices.pic import PicPair

CMD, DATA = 0, 1


def programmed(master_base: int = 0x08, slave_base: int = 0x70, icw4: int = 0x01) -> PicPair:
    """The pair as SeaBIOS programs it (ICW1 0x11, bases, cascade 0x04/0x02, ICW4), all unmasked."""
    pic = PicPair()
    for chip, base, cascade in ((pic.master, master_base, 0x04), (pic.slave, slave_base, 0x02)):
        chip.io_write(CMD, 1, 0x11)
        chip.io_write(DATA, 1, base)
        chip.io_write(DATA, 1, cascade)
        chip.io_write(DATA, 1, icw4)
        chip.io_write(DATA, 1, 0x00)
    return pic


def test_initialisation_sets_the_vector_base_and_the_imr_reads_back() -> None:
    pic = programmed(0x20, 0x28)
    pic.master.io_write(DATA, 1, 0xFB)  # Linux's probe: the IMR must read back exactly
    assert pic.master.io_read(DATA, 1) == 0xFB
    pic.master.io_write(DATA, 1, 0)
    pic.set_irq(0, True)
    assert pic.pending()
    assert pic.acknowledge() == 0x20
    pic.master.io_write(CMD, 1, 0x20)
    pic.set_irq(9, True)
    assert pic.acknowledge() == 0x29  # through the cascade


def test_a_masked_request_waits_and_unmasking_delivers_it() -> None:
    pic = programmed()
    seen: list[bool] = []
    pic.on_intr = lambda: seen.append(pic.pending())
    pic.master.io_write(DATA, 1, 0x01)  # mask IRQ0
    pic.set_irq(0, True)
    assert not pic.pending()
    pic.master.io_write(DATA, 1, 0x00)
    assert pic.pending() and seen[-1]
    assert pic.acknowledge() == 0x08


def test_edges_not_levels_make_requests() -> None:
    pic = programmed()
    pic.set_irq(1, True)
    assert pic.acknowledge() == 0x09
    pic.master.io_write(CMD, 1, 0x20)
    pic.set_irq(1, True)  # still high: no new edge
    assert not pic.pending()
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    assert pic.pending()


def test_priority_in_service_and_nonspecific_eoi() -> None:
    pic = programmed()
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.set_irq(5, True)  # lower priority than IR3 in service: held
    assert not pic.pending()
    pic.set_irq(1, True)  # higher: nests
    assert pic.acknowledge() == 0x09
    pic.master.io_write(CMD, 1, 0x0B)  # OCW3: read ISR
    assert pic.master.io_read(CMD, 1) == 0b1010
    pic.master.io_write(CMD, 1, 0x20)  # EOI ends IR1, the highest in service
    assert pic.master.io_read(CMD, 1) == 0b1000
    assert not pic.pending()
    pic.master.io_write(CMD, 1, 0x63)  # specific EOI for IR3
    assert pic.acknowledge() == 0x0D
    pic.master.io_write(CMD, 1, 0x0A)  # OCW3: read IRR
    assert pic.master.io_read(CMD, 1) == 0


def test_rotation_makes_the_last_served_lowest() -> None:
    pic = programmed()
    pic.master.io_write(CMD, 1, 0xC4)  # set priority: IR4 lowest, IR5 highest
    pic.set_irq(2 - 2, True)  # IR0
    pic.set_irq(6, True)
    assert pic.acknowledge() == 0x0E  # IR6 beats IR0 now
    pic.master.io_write(CMD, 1, 0xA0)  # rotate on non-specific EOI: IR6 becomes lowest
    assert pic.acknowledge() == 0x08


def test_auto_eoi_leaves_nothing_in_service() -> None:
    pic = programmed(icw4=0x03)
    pic.set_irq(0, True)
    assert pic.acknowledge() == 0x08
    pic.master.io_write(CMD, 1, 0x0B)
    assert pic.master.io_read(CMD, 1) == 0
    pic.set_irq(0, False)
    pic.set_irq(0, True)
    assert pic.acknowledge() == 0x08


def test_slave_irqs_need_an_eoi_to_both_chips() -> None:
    pic = programmed()
    pic.set_irq(14, True)
    assert pic.acknowledge() == 0x76
    pic.set_irq(0, True)  # IR0 beats IR2 in service on the master
    assert pic.acknowledge() == 0x08
    pic.master.io_write(CMD, 1, 0x20)
    pic.set_irq(15, True)  # the slave still has IR6 in service: IR7 waits
    assert not pic.pending()
    pic.slave.io_write(CMD, 1, 0x20)
    pic.master.io_write(CMD, 1, 0x20)
    assert pic.acknowledge() == 0x77


def test_a_vanished_request_is_the_spurious_irq7() -> None:
    pic = programmed()
    pic.set_irq(4, True)
    assert pic.pending()
    pic.master.io_write(DATA, 1, 0x10)  # masked between INTR and INTA
    assert pic.acknowledge() == 0x0F
    pic.master.io_write(CMD, 1, 0x0B)
    assert pic.master.io_read(CMD, 1) == 0  # no ISR bit: the handler sends no EOI


def test_poll_mode_acknowledges_through_a_read() -> None:
    pic = programmed()
    pic.set_irq(5, True)
    pic.master.io_write(CMD, 1, 0x0C)
    assert pic.master.io_read(CMD, 1) == 0x85
    pic.master.io_write(CMD, 1, 0x0C)
    assert pic.master.io_read(CMD, 1) == 0x07  # nothing: QEMU's answer


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["m", "s"]), st.integers(0, 1), st.integers(0, 255),
                          st.booleans(), st.integers(0, 15)), max_size=60))  # fmt: skip
def test_any_port_sequence_keeps_eight_bit_state_and_valid_vectors(
    ops: list[tuple[str, int, int, bool, int]],
) -> None:
    pic = PicPair()
    for chip_name, offset, value, read, irq in ops:
        chip = pic.master if chip_name == "m" else pic.slave
        if read:
            assert 0 <= chip.io_read(offset, 1) <= 0xFF
        else:
            chip.io_write(offset, 1, value)
        pic.set_irq(irq, value & 1 == 1)
        if pic.pending():
            vector = pic.acknowledge()
            assert 0 <= vector <= 0xFF
        for chip in (pic.master, pic.slave):
            assert 0 <= chip.irr <= 0xFF and 0 <= chip.isr <= 0xFF and 0 <= chip.imr <= 0xFF
