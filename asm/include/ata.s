# ata.s - a polling driver for the primary ATA channel and its bus master, 64-bit.
#
# The routines a small OS needs to use hv-emu's disk: IDENTIFY DEVICE, PIO read and write
# (WRITE SECTORS / READ SECTORS and their EXT forms, data through the 16-bit data port with
# `rep outsw` / `rep insw`), and bus-master DMA read and write with a PRD table built from a
# buffer (one entry per PRD_BYTES, never crossing a 64 KiB boundary, as SFF-8038i requires).
# There is no interrupt controller, so every routine polls Status (ATA) or Status (bus master).
#
# guest_tool.programs puts these .equ lines in front of every program (generated from
# hv_emu/layout.py, the one home of port numbers):
#   ATA_PORT       command block base (0x1f0)
#   ATA_CTRL_PORT  control block: Alternate Status / Device Control (0x3f6)
#   BM_PORT        bus-master registers, BAR4 of the IDE function (0xc000)
#
# Calling convention: arguments in registers as each routine says; every routine may clobber
# RAX, RBX, RCX, RDX, R8, R10 and R11 and preserves RBP and R12-R15 (as the SysV ABI does).
# Include it after the program's code: it emits bytes.

# The task file (ATA8-APT): offsets from ATA_PORT.
.equ ATA_DATA, ATA_PORT + 0
.equ ATA_ERROR, ATA_PORT + 1
.equ ATA_COUNT, ATA_PORT + 2
.equ ATA_LBA_LOW, ATA_PORT + 3
.equ ATA_LBA_MID, ATA_PORT + 4
.equ ATA_LBA_HIGH, ATA_PORT + 5
.equ ATA_DEVICE, ATA_PORT + 6
.equ ATA_STATUS, ATA_PORT + 7       # read: Status (acknowledges the interrupt)
.equ ATA_COMMAND, ATA_PORT + 7      # write: Command

# Status bits.
.equ ST_BSY, 0x80
.equ ST_DRQ, 0x08
.equ ST_ERR, 0x01

# Device register: bit 6 = LBA addressing, bit 4 = device 1 (we always talk to device 0), and
# bits 7 and 5 set as old drives expect.
.equ DEV_LBA, 0xe0
.equ DEV_LBA48, 0x40

# Commands (ATA8-ACS).
.equ CMD_READ_SECTORS, 0x20
.equ CMD_READ_SECTORS_EXT, 0x24
.equ CMD_WRITE_SECTORS, 0x30
.equ CMD_WRITE_SECTORS_EXT, 0x34
.equ CMD_READ_DMA, 0xc8
.equ CMD_READ_DMA_EXT, 0x25
.equ CMD_WRITE_DMA, 0xca
.equ CMD_WRITE_DMA_EXT, 0x35
.equ CMD_IDENTIFY, 0xec

# Bus master (SFF-8038i): registers and bits.
.equ BM_COMMAND, BM_PORT + 0
.equ BM_STATUS, BM_PORT + 2
.equ BM_PRD, BM_PORT + 4
.equ BM_START, 0x01
.equ BM_TO_MEMORY, 0x08             # direction: the device writes memory (a disk read)
.equ BM_ACTIVE, 0x01
.equ BM_ERROR_BIT, 0x02
.equ BM_INTERRUPT, 0x04
.equ PRD_END, 0x8000                # flags word of the last PRD entry

# ata_wait - poll Status until BSY is clear.
#   out: AL = Status
#   clobbers: RDX
ata_wait:
    mov edx, ATA_STATUS
ata_wait.poll:
    in al, dx
    test al, ST_BSY
    jnz ata_wait.poll
    ret

# ata_command - load the task file with an LBA and a count, and issue a command.
#   in:  RAX = LBA, ECX = sector count, BL = command opcode, R9 = 1 for a 48-bit (EXT) command
#   clobbers: RAX, RDX, R8
# LBA48: the registers are two deep; the high halves (count 15:8, LBA 47:24) go in first, then the
# low halves. LBA28: LBA 27:24 rides in the Device register.
ata_command:
    mov r8, rax                     # keep the LBA: AL is our output register
    call ata_wait
    test r9, r9
    jz ata_command.lba28
    mov edx, ATA_DEVICE
    mov al, DEV_LBA48
    out dx, al
    mov edx, ATA_COUNT
    mov al, ch                      # count 15:8
    out dx, al
    mov rax, r8
    shr rax, 24
    mov edx, ATA_LBA_LOW
    out dx, al                      # LBA 31:24
    shr rax, 8
    mov edx, ATA_LBA_MID
    out dx, al                      # LBA 39:32
    shr rax, 8
    mov edx, ATA_LBA_HIGH
    out dx, al                      # LBA 47:40
    jmp ata_command.low
ata_command.lba28:
    mov rax, r8
    shr rax, 24
    and al, 0x0f
    or al, DEV_LBA
    mov edx, ATA_DEVICE
    out dx, al                      # LBA 27:24 and "LBA mode, device 0"
ata_command.low:
    mov edx, ATA_COUNT
    mov al, cl                      # count 7:0 (0 means 256, or 65536 for EXT)
    out dx, al
    mov rax, r8
    mov edx, ATA_LBA_LOW
    out dx, al                      # LBA 7:0
    shr rax, 8
    mov edx, ATA_LBA_MID
    out dx, al                      # LBA 15:8
    shr rax, 8
    mov edx, ATA_LBA_HIGH
    out dx, al                      # LBA 23:16
    mov edx, ATA_COMMAND
    mov al, bl
    out dx, al                      # the command starts now
    ret

# ata_pio_write - WRITE SECTORS (EXT): one command, one 512-byte DRQ block per sector.
#   in:  RSI = data, RAX = LBA, ECX = sectors (1..256, or 1..65536 with R9 = 1), R9 = LBA48
#   out: AL = final Status (ST_ERR set: refused; the Error register says why), RSI past the data
#        the device accepted
ata_pio_write:
    mov r10d, ecx                   # sectors still to send
    mov bl, CMD_WRITE_SECTORS
    test r9, r9
    jz ata_pio_write.issue
    mov bl, CMD_WRITE_SECTORS_EXT
ata_pio_write.issue:
    call ata_command
ata_pio_write.block:
    call ata_wait                   # the device is ready for a block (DRQ) or has ended (ERR)
    test al, ST_ERR
    jnz ata_pio_write.done
    test al, ST_DRQ
    jz ata_pio_write.done
    mov ecx, 256                    # 256 words = one sector
    mov edx, ATA_DATA
    rep outsw
    dec r10d
    jnz ata_pio_write.block
    call ata_wait                   # the status after the last block: ERR if it was refused
ata_pio_write.done:
    ret

# ata_pio_read - READ SECTORS (EXT) into a buffer.
#   in:  RDI = buffer, RAX = LBA, ECX = sectors, R9 = LBA48
#   out: AL = final Status, RDI past the data read
ata_pio_read:
    mov r10d, ecx
    mov bl, CMD_READ_SECTORS
    test r9, r9
    jz ata_pio_read.issue
    mov bl, CMD_READ_SECTORS_EXT
ata_pio_read.issue:
    call ata_command
ata_pio_read.block:
    call ata_wait
    test al, ST_ERR
    jnz ata_pio_read.done
    test al, ST_DRQ
    jz ata_pio_read.done
    mov ecx, 256
    mov edx, ATA_DATA
    rep insw
    dec r10d
    jnz ata_pio_read.block
    call ata_wait
ata_pio_read.done:
    ret

# ata_identify - IDENTIFY DEVICE: 512 bytes of device description into a buffer.
#   in:  RDI = buffer
#   out: AL = final Status
ata_identify:
    xor eax, eax
    xor ecx, ecx
    xor r9d, r9d
    mov bl, CMD_IDENTIFY
    call ata_command
    call ata_wait
    test al, ST_DRQ
    jz ata_identify.done
    mov ecx, 256
    mov edx, ATA_DATA
    rep insw
    call ata_wait
ata_identify.done:
    ret

# ata_dma_write / ata_dma_read - WRITE DMA / READ DMA (EXT) through the bus master.
#   in:  RSI = buffer (even address), RAX = LBA, ECX = sectors, R9 = LBA48,
#        RDI = room for the PRD table (4-byte aligned, 8 bytes per entry),
#        R11 = largest PRD entry in bytes (even, 2..65536)
#   out: AL = final ATA Status, AH = bus-master Status
ata_dma_write:
    mov bl, CMD_WRITE_DMA
    test r9, r9
    jz ata_dma_write.go
    mov bl, CMD_WRITE_DMA_EXT
ata_dma_write.go:
    xor r10d, r10d                  # direction: memory -> disk
    jmp ata_dma

ata_dma_read:
    mov bl, CMD_READ_DMA
    test r9, r9
    jz ata_dma_read.go
    mov bl, CMD_READ_DMA_EXT
ata_dma_read.go:
    mov r10d, BM_TO_MEMORY

# The common part: build the PRD table, program the bus master, issue the command, Start, poll.
ata_dma:
    push r12
    push r13
    push r14
    push rax                        # the LBA, for ata_command
    push rcx                        # the sector count, for ata_command

    # 1. The PRD table: {u32 address, u16 byte count (0 = 64 KiB), u16 flags} per region.
    mov r12, rdi                    # R12 = the entry being written
    mov r13, rcx
    shl r13, 9                      # R13 = bytes still to describe
    mov r14, rsi                    # R14 = where they are
ata_dma.entry:
    mov r8, r11                     # this entry: at most R11 bytes,
    cmp r8, r13
    jbe ata_dma.fits
    mov r8, r13                     # ... at most what is left,
ata_dma.fits:
    mov eax, r14d
    and eax, 0xffff
    neg rax
    add rax, 0x10000                # ... and not across a 64 KiB boundary.
    cmp r8, rax
    jbe ata_dma.write_entry
    mov r8, rax
ata_dma.write_entry:
    mov dword ptr [r12], r14d
    mov word ptr [r12 + 4], r8w     # 65536 is written as 0, as the format wants
    mov word ptr [r12 + 6], 0
    add r14, r8
    add r12, 8
    sub r13, r8
    jnz ata_dma.entry
    mov word ptr [r12 - 2], PRD_END # the last entry ends the table

    # 2. The bus master: stopped, Error and Interrupt cleared (write 1 to clear), table address.
    mov edx, BM_COMMAND
    mov eax, r10d
    out dx, al                      # Start clear, direction set
    mov edx, BM_STATUS
    in al, dx
    or al, BM_ERROR_BIT | BM_INTERRUPT
    out dx, al
    mov edx, BM_PRD
    mov eax, edi
    out dx, eax

    # 3. The ATA command, then Start: the transfer runs.
    pop rcx
    pop rax
    call ata_command
    mov edx, BM_COMMAND
    mov eax, r10d
    or al, BM_START
    out dx, al

    # 4. Poll the bus master until it is no longer active, or raised Interrupt or Error.
    mov edx, BM_STATUS
ata_dma.poll:
    in al, dx
    test al, BM_INTERRUPT | BM_ERROR_BIT
    jnz ata_dma.stop
    test al, BM_ACTIVE
    jnz ata_dma.poll
ata_dma.stop:
    mov bl, al                      # the bus-master status, for the caller
    mov edx, BM_COMMAND
    mov eax, r10d
    out dx, al                      # clear Start
    call ata_wait                   # AL = ATA Status (reading it acknowledges the interrupt)
    mov ah, bl
    pop r14
    pop r13
    pop r12
    ret
