# macros32.s - raw-byte forms of the 32-bit instructions keystone 0.9.2 mis-encodes.
#
# In 32-bit Intel syntax keystone gives `lgdt`, `lidt` and `ljmp` an operand-size prefix
# (0x66): the CPU then loads only a 24-bit table base, and a far jump keeps only the low 16 bits
# of its offset (`ljmp 0x08:0x12345` lands at 0x2345). These macros spell the instructions out
# byte by byte, as the Intel SDM encodes them for a 32-bit code segment (docs/UNICORN.md U27).
# guest_tool/assemble.py refuses 0x66-prefixed lgdt/lidt/sgdt/sidt/ljmp in 32-bit code, so use
# these.

# LGDT32 address: lgdt [address] = 0F 01 /2 with ModRM 0x15 (mod 00, reg 010, rm 101 = disp32).
# The operand at `address` is 6 bytes: a 16-bit limit, then a 32-bit base.
.macro LGDT32 address
    .byte 0x0f, 0x01, 0x15
    .long \address
.endm

# LIDT32 address: lidt [address] = 0F 01 /3 with ModRM 0x1d (reg 011, rm 101 = disp32).
.macro LIDT32 address
    .byte 0x0f, 0x01, 0x1d
    .long \address
.endm

# LJMP32 selector, offset: far jump EA, a 32-bit offset, then the 16-bit selector.
.macro LJMP32 selector, offset
    .byte 0xea
    .long \offset
    .word \selector
.endm
