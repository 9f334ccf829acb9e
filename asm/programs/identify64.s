# identify64.s - ask the disk who it is: IDENTIFY DEVICE, then print model, capacity and features.
#
# Prints "identify: <model>, <n> sectors (LBA48 <yes|no>, DMA <yes|no>)" from the 512-byte
# IDENTIFY block (ATA8-ACS 7.16): the model is words 27-46, 40 ASCII characters with the first
# character of each pair in the word's high byte; the capacity is words 100-103 (48-bit) or
# 60-61 (28-bit); word 83 bit 10 = LBA48 supported, word 49 bit 8 = DMA supported.
# Without a disk the channel's ports read all ones: it prints "identify: no disk ..." instead.
# guest_tool.programs.build_program("identify") puts the ports (ATA_PORT, BM_PORT...) in front.

#include "hvabi.s"

start:
    cld
    # No drive: nothing answers on the channel's ports, which read all ones (a floating bus).
    mov edx, ATA_STATUS
    in al, dx
    cmp al, 0xff
    je no_disk
    lea rdi, [rip + block]
    call ata_identify
    test al, ST_ERR
    jnz failed

    # The model: swap the bytes of each word into a string, then cut the trailing spaces.
    lea rsi, [rip + block + 54]     # word 27
    lea rdi, [rip + model]
    mov ecx, 20
swap:
    lodsw
    xchg al, ah
    stosw
    loop swap
trim:
    cmp byte ptr [rdi - 1], ' '
    jne trimmed
    dec rdi
    jmp trim
trimmed:
    mov byte ptr [rdi], 0

    lea rsi, [rip + msg_identify]
    call print_str                  # "identify: "
    lea rsi, [rip + model]
    call print_str                  # "HV-EMU HARDDISK"
    lea rsi, [rip + msg_comma]
    call print_str
    mov rax, [rip + block + 200]    # words 100-103: the 48-bit capacity
    test word ptr [rip + block + 166], 0x400
    jnz have_capacity
    mov eax, [rip + block + 120]    # words 60-61: the 28-bit capacity
have_capacity:
    call print_dec
    lea rsi, [rip + msg_lba48]
    call print_str                  # " sectors (LBA48 "
    test word ptr [rip + block + 166], 0x400
    call print_yes_no
    lea rsi, [rip + msg_dma]
    call print_str                  # ", DMA "
    test word ptr [rip + block + 98], 0x100
    call print_yes_no
    lea rsi, [rip + msg_close]
    call print_str                  # ")\n"
halt:
    hlt
    jmp halt

failed:
    lea rsi, [rip + msg_failed]
    call print_str
    jmp halt

no_disk:
    lea rsi, [rip + msg_no_disk]
    call print_str
    jmp halt

# print_yes_no - "yes" if ZF is clear (a TEST found the bit), else "no".
print_yes_no:
    lea rsi, [rip + msg_yes]
    jnz print_str
    lea rsi, [rip + msg_no]
    jmp print_str

msg_identify:   .asciz "identify: "
msg_comma:      .asciz ", "
msg_lba48:      .asciz " sectors (LBA48 "
msg_dma:        .asciz ", DMA "
msg_close:      .asciz ")\n"
msg_yes:        .asciz "yes"
msg_no:         .asciz "no"
msg_failed:     .asciz "identify: the device answered ERR\n"
msg_no_disk:    .asciz "identify: no disk on the primary channel (Status reads 0xff; hv-emu run --disk)\n"

#include "print64.s"
#include "ata.s"

    .p2align 4
block:  .fill 512, 1, 0            # the IDENTIFY block
model:  .fill 48, 1, 0             # the model as a NUL-terminated string
