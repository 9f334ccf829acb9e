# macros16.s - raw-byte forms of the 16-bit instructions keystone 0.9.2 mis-encodes.
#
# In 16-bit (real-mode) Intel syntax keystone gives `ret`, `retf`, `call` and `push imm` an
# operand-size prefix (0x66), so they move 4 bytes of stack instead of 2: a `call` pushes a
# 32-bit return address that a real-mode `ret` would not pop, `[bp+4]` no longer finds the first
# argument, and hand-built IVT/iret frames come out wrong. These macros spell the instructions
# out byte by byte, exactly as the Intel SDM encodes them for a 16-bit code segment
# (docs/UNICORN.md U26).
# guest_tool/assemble.py refuses 0x66-prefixed ret/call/push in 16-bit code, so use these.

# CALL16 target: near call, E8 rel16. The displacement counts from the end of the 3-byte
# instruction: target - (address of E8 + 3) = target - . - 2 once the E8 byte is emitted.
.macro CALL16 target
    .byte 0xe8
    .word \target - . - 2
.endm

# RET16: near return, C3 - pops a 2-byte IP.
.macro RET16
    .byte 0xc3
.endm

# RETF16: far return, CB - pops IP then CS, 2 bytes each.
.macro RETF16
    .byte 0xcb
.endm

# PUSH16 value: push a 16-bit immediate, 68 iw - SP goes down by 2.
.macro PUSH16 value
    .byte 0x68
    .word \value
.endm

# LJMP_TO32 selector, offset: the far jump from 16-bit code into a 32-bit code segment
# (after setting CR0.PE). It needs the 0x66 prefix on purpose: a 32-bit offset, then the selector.
.macro LJMP_TO32 selector, offset
    .byte 0x66, 0xea
    .long \offset
    .word \selector
.endm
