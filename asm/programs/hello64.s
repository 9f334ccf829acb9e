# hello64.s - tutorial step 1: a 64-bit guest that says hello and halts.
#
# The loader (hv-emu run --mode 64, the default) puts this image at 0x100000 in long mode with
# identity-mapped RAM and jumps to its first byte. The guest talks to the outside world through
# one I/O port: every byte written with OUT to port 0xe9 (the Bochs/QEMU debug console) appears
# on hv-emu's standard output. HLT stops the CPU, and hv-emu ends the run.
#
# Built by guest_tool.programs.build_program("hello", mode=64), which resolves the #include.

#include "hvabi.s"

start:
    cld                         # string instructions walk upwards
    lea rsi, [rip + message]    # RSI = address of the text (RIP-relative: no absolute address)
    mov edx, DEBUGCON_PORT      # DX = the port OUT writes to
next:
    lodsb                       # AL = next byte of the text, RSI += 1
    test al, al
    jz done                     # the NUL ends the text
    out dx, al                  # one byte to the debug console
    jmp next
done:
    hlt                         # stop: hv-emu ends the run here
    jmp done                    # (should anything wake the CPU, halt again)

message:
    .asciz "hello from the guest\n"
