# diskwrite64.s - write a payload to the disk at an LBA through PIO or DMA, then read it back.
#
# What it does:
#   1. writes SECTORS sectors of payload from LBA on, PER_COMMAND sectors per ATA command, through
#      PIO (WRITE SECTORS) or bus-master DMA (WRITE DMA, a PRD table of PRD_BYTES-sized entries),
#      using the EXT commands when LBA48 is 1;
#   2. prints "diskwrite: LBA <n>, <s> sectors via <pio|dma> in <c> commands: ok", or
#      "...: refused at LBA <n> (error <e>)" when the device answered ERR (e.g. the hypervisor
#      blocked a write) and stops there;
#   3. if READBACK, reads the sectors back the same way and prints how many bytes differ from what
#      it wrote ("read back: 0 bytes differ", or the number the hypervisor zero-filled), and halts.
#
# guest_tool.disk_programs.build_disk_write_program() assembles it with the ports
# (guest_tool.programs.generated_prelude) and these .equ lines in front:
#   LBA, SECTORS, PER_COMMAND          where, how much, how many sectors per command
#   VIA_DMA, LBA48, READBACK           0 or 1
#   PRD_BYTES                          the largest PRD entry (even, 2..65536)
#   PRD_OFFSET, READBACK_OFFSET        the PRD table and read-back buffer, counted from `blobs`
# and appends the payload at `blobs`.

#include "hvabi.s"

start:
    cld
    movabs r12, LBA                 # R12 = the next LBA to write
    lea r13, [rip + payload]        # R13 = the next byte to write
    mov r14d, SECTORS               # R14 = sectors still to write
    xor ebp, ebp                    # RBP = commands issued
write_next:
    mov r15d, PER_COMMAND           # R15 = sectors in this command: min(PER_COMMAND, R14)
    cmp r15, r14
    jbe write_count_ok
    mov r15, r14
write_count_ok:
    mov rax, r12
    mov ecx, r15d
    mov rsi, r13
    mov r9d, LBA48
.if VIA_DMA
    lea rdi, [rip + prd_table]
    mov r11d, PRD_BYTES
    call ata_dma_write
.else
    call ata_pio_write
.endif
    inc rbp
    test al, ST_ERR
    jnz refused
    add r12, r15
    mov rax, r15
    shl rax, 9
    add r13, rax
    sub r14, r15
    jnz write_next

    call print_what                 # "diskwrite: LBA 100, 2 sectors via pio in 2 commands"
    lea rsi, [rip + msg_ok]
    call print_str

.if READBACK
    # Read it all back the same way, into the buffer after the payload.
    movabs r12, LBA
    lea r13, [rip + readback]
    mov r14d, SECTORS
read_next:
    mov r15d, PER_COMMAND
    cmp r15, r14
    jbe read_count_ok
    mov r15, r14
read_count_ok:
    mov rax, r12
    mov ecx, r15d
    mov r9d, LBA48
.if VIA_DMA
    mov rsi, r13
    lea rdi, [rip + prd_table]
    mov r11d, PRD_BYTES
    call ata_dma_read
.else
    mov rdi, r13
    call ata_pio_read
.endif
    test al, ST_ERR
    jnz read_failed
    add r12, r15
    mov rax, r15
    shl rax, 9
    add r13, rax
    sub r14, r15
    jnz read_next

    # Count the bytes that differ between what we wrote and what the disk holds.
    lea rsi, [rip + payload]
    lea rdi, [rip + readback]
    mov ecx, SECTORS * 512
    xor ebx, ebx                    # RBX = bytes that differ
compare:
    mov al, [rsi]
    cmp al, [rdi]
    je compare_same
    inc rbx
compare_same:
    inc rsi
    inc rdi
    dec rcx
    jnz compare
    lea rsi, [rip + msg_readback]
    call print_str                  # "read back: "
    mov rax, rbx
    call print_dec
    lea rsi, [rip + msg_differ]
    call print_str                  # " bytes differ\n"
.endif
halt:
    hlt
    jmp halt

refused:
    # The device ended the command with ERR: the LBA registers say which block it refused.
    call print_what
    lea rsi, [rip + msg_refused]
    call print_str                  # ": refused at LBA "
    mov edx, ATA_ERROR
    in al, dx
    movzx r15d, al                  # R15 = the Error register (0x04 = ABRT)
    mov edx, ATA_LBA_HIGH
    in al, dx
    movzx eax, al
    shl eax, 8
    mov edx, ATA_LBA_MID
    in al, dx
    shl eax, 8
    mov edx, ATA_LBA_LOW
    in al, dx                       # EAX = LBA 23:0 of the refused block
    call print_dec
    lea rsi, [rip + msg_error]
    call print_str                  # " (error "
    mov rax, r15
    call print_dec
    lea rsi, [rip + msg_close]
    call print_str                  # ")\n"
    jmp halt

read_failed:
    lea rsi, [rip + msg_read_failed]
    call print_str
    jmp halt

# print_what - "diskwrite: LBA <LBA>, <SECTORS> sectors via <pio|dma> in <RBP> commands"
print_what:
    lea rsi, [rip + msg_what]
    call print_str
    movabs rax, LBA
    call print_dec
    lea rsi, [rip + msg_comma]
    call print_str
    mov eax, SECTORS
    call print_dec
    lea rsi, [rip + msg_via]
    call print_str
    mov rax, rbp
    call print_dec
    lea rsi, [rip + msg_commands]
    call print_str
    ret

msg_what:        .asciz "diskwrite: LBA "
msg_comma:       .asciz ", "
.if VIA_DMA
msg_via:         .asciz " sectors via dma in "
.else
msg_via:         .asciz " sectors via pio in "
.endif
msg_commands:    .asciz " commands"
msg_ok:          .asciz ": ok\n"
msg_refused:     .asciz ": refused at LBA "
msg_error:       .asciz " (error "
msg_close:       .asciz ")\n"
msg_readback:    .asciz "read back: "
msg_differ:      .asciz " bytes differ\n"
msg_read_failed: .asciz "read back: the device answered ERR\n"

#include "print64.s"
#include "ata.s"

# The payload goes last: programs.py appends it here; the PRD table and the read-back buffer lie
# in the RAM after it. Nothing may follow this label.
    .p2align 4
blobs:
.equ payload, blobs
.equ prd_table, blobs + PRD_OFFSET
.equ readback, blobs + READBACK_OFFSET
