"""The small services: int 11h, int 15h's dispatch, int 16h, int 1Ah and the timer tick.

Models:
- int 11h: AX = the equipment word from the BDA;
- int 15h: E820h, E801h and AH=88h (``memory_map.py``); every other function CF=1, AH=86h
  ("not supported"), as a BIOS without those services answers;
- int 16h: there is no keyboard. AH=01h/11h (is a key waiting?) answers ZF=1, none; AH=02h/12h
  the shift flags (0); AH=00h/10h (wait for a key) ends the run with a clear reason instead of
  waiting for ever; other functions change nothing;
- int 1Ah: AH=00h CX:DX = the tick count (BDA 046Ch), AL = the midnight flag, which is then
  cleared; AH=01h sets the count; AH=02h the time of day in BCD derived from the tick count
  (no RTC is modelled: the day starts at 00:00:00 when the machine does); others CF=1;
- the timer tick (the Python half of int 08h): the count +1, at 1800B0h (a day) back to 0 with
  the midnight flag set; the stub then calls int 1Ch and acknowledges IRQ0 (``rom.py``).

Follows: Ralf Brown's Interrupt List (INT 11, 15, 16, 1A); SeaBIOS ``src/clock.c``
(``handle_1a00``, ``clock_update``), ``src/kbd.c`` (``handle_1601``: ZF=1 when empty).

Leaves out: a keyboard, the RTC and its date (AH=04h: CF=1), int 15h's protected-mode, APM,
A20 and wait functions.

Guest controls: the registers, and the BDA the answers come from (any values: returned masked).
"""

from __future__ import annotations

from hv_emu.firmware import bda
from hv_emu.firmware.frame import Regs, Reply, fail, ok
from hv_emu.firmware.memory_map import UNSUPPORTED, MemoryServices
from hv_emu.memory.guest import GuestMemory

#: The 8254's input clock over 65536: ticks per second of the 18.2 Hz timer.
PIT_HZ = 1_193_182
TICK_DIVISOR = 65536
NO_KEYBOARD = "int 16h waits for a key, and this machine has no keyboard"


def bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class SystemServices:
    """int 11h, 15h, 16h, 1Ah and the tick, over the BDA in ``mem``."""

    def __init__(self, mem: GuestMemory, memory: MemoryServices) -> None:
        self.mem, self.memory = mem, memory

    def int11(self, regs: Regs) -> Reply:
        regs["ax"] = bda.read(self.mem, bda.EQUIPMENT, 2)
        return Reply(regs.changed)

    def int15(self, regs: Regs) -> Reply:
        if regs["eax"] == 0xE820:
            return self.memory.e820(regs)
        if regs["ax"] == 0xE801:
            return self.memory.e801(regs)
        if regs["ah"] == 0x88:
            return self.memory.extended_kib(regs)
        return fail(regs, UNSUPPORTED)

    def int16(self, regs: Regs) -> Reply:
        ah = regs["ah"]
        if ah in (0x00, 0x10):
            return Reply(stop=NO_KEYBOARD)
        if ah in (0x01, 0x11):
            return Reply(regs.changed, zf=True)
        if ah in (0x02, 0x12):
            regs["al"] = bda.read(self.mem, bda.KBD_FLAGS, 1)
        return Reply(regs.changed)

    def int1a(self, regs: Regs) -> Reply:
        ah = regs["ah"]
        ticks = bda.read(self.mem, bda.TIMER_TICKS, 4)
        if ah == 0x00:
            regs["cx"], regs["dx"] = ticks >> 16, ticks & 0xFFFF
            regs["al"] = bda.read(self.mem, bda.TIMER_MIDNIGHT, 1)
            bda.write(self.mem, bda.TIMER_MIDNIGHT, 1, 0)
            return ok(regs)
        if ah == 0x01:
            bda.write(self.mem, bda.TIMER_TICKS, 4, (regs["cx"] << 16) | regs["dx"])
            bda.write(self.mem, bda.TIMER_MIDNIGHT, 1, 0)
            return ok(regs)
        if ah == 0x02:
            seconds = ticks * TICK_DIVISOR // PIT_HZ
            regs["ch"], regs["cl"] = bcd(seconds // 3600 % 24), bcd(seconds // 60 % 60)
            regs["dh"], regs["dl"] = bcd(seconds % 60), 0
            return ok(regs)
        return fail(regs, regs["ah"])

    def tick(self) -> None:
        """One IRQ0: the BDA's count +1, wrapping at a day with the midnight flag set."""
        ticks = bda.read(self.mem, bda.TIMER_TICKS, 4) + 1
        if ticks >= bda.TICKS_PER_DAY:
            ticks = 0
            bda.write(self.mem, bda.TIMER_MIDNIGHT, 1, 1)
        bda.write(self.mem, bda.TIMER_TICKS, 4, ticks)
