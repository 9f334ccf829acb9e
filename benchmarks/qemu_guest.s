# qemu_guest.s - one boot sector that QEMU (booted by SeaBIOS) and hv-emu (--mode 16) run unchanged.
#
# benchmarks/qemu.py assembles it in 16-bit mode at 0x7c00 with these .equ lines in front (plus
# guest_tool's generated prelude: HC_* numbers, ATA_PORT, ATA_CTRL_PORT, DEBUGCON_PORT):
#   KIND             1 out POST_PORT, al | 2 in al, dx (DX = UNASSIGNED_PORT) | 3 PIO, 1 sector per
#                    WRITE SECTORS | 4 PIO, WRITE MULTIPLE of 256 sectors in 16-sector DRQ blocks |
#                    5 WRITE DMA of 64 KiB | 6 get_vmmcall_number VMCALL (hv-emu only: TCG has none) |
#                    7 PIO, 1 sector per READ SECTORS (rep insw) of the boot sector itself, checked
#   DISK             1 for the disk kinds (3, 4, 5, 7)
#   COUNT            how many units (port accesses, disk commands, VMCALLs); 0 = start-up only
#   SECTORS          sectors per disk command (1, 256 or 128), BLOCKS DRQ blocks per command,
#   BLOCK_SHIFT      log2 of a DRQ block's bytes (BLOCK_WORDS its words); LBA_SHIFT log2 of
#                    SECTORS; LBA_MASK commands per 16 MiB window (the LBA wraps: a small disk)
#   LBA_BASE         first LBA written (past the boot sector)
#   POST_PORT, UNASSIGNED_PORT, EXIT_PORT, PCI_ADDR_PORT, PCI_DATA_PORT, PCI_IDE_BAR4,
#   PCI_IDE_COMMAND  ports and PCI configuration addresses
#
# Both machines enter at 0000:7c00 in real mode (SeaBIOS: IF = 1, its own stack; hv-emu: IF = 0,
# SP = 0x7c00); the guest makes them alike: interrupts off, its own stack, DS = ES = 0, ATA nIEN set
# so QEMU raises no IRQ 14 either. The loop counter is EBP, the command index EDI.
#
# The end is the same on both: a byte on the debug console ('K' done, 'F' failed: hv-emu prints it,
# QEMU has no debugcon unless asked), then `out EXIT_PORT, al` with AL = 0 or 1 (QEMU's
# isa-debug-exit ends QEMU with status AL * 2 + 1; hv-emu has no device there), then HLT (ends
# hv-emu's run).
#
# keystone's 16-bit call/ret are wrong (docs/UNICORN.md U26): no calls here, only macros and jumps.

.equ STATUS_BSY, 0x80
.equ STATUS_DRQ, 0x08
.equ STATUS_ERR, 0x01
.equ BUFFER_SEGMENT, 0x1000      # 64 KiB of pseudo-random data at linear 0x10000
.equ PRD_TABLE, 0x0600           # one PRD entry, dword aligned, below the boot sector

# Wait until the ATA Status register shows BSY = 0; jump to fail on ERR. Leaves Status in AL.
.macro WAIT_READY where
    mov dx, ATA_PORT + 7
\where:
    in al, dx
    test al, STATUS_BSY
    jnz \where
    test al, STATUS_ERR
    jnz fail
.endm

start:
    cli
    cld
    # The firmware (SeaBIOS on QEMU, hv-emu's own BIOS) left the PIT ticking at 18.2 Hz: stop it
    # and mask the PIC pair, so that the rows time exits and commands, not a timer (an armed
    # timer's cost has its own row, benchmarks/injection.py). Counter 0 becomes a one-shot
    # (mode 0) of one count that never reloads.
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    mov al, 0x30
    out 0x43, al
    mov al, 1
    out 0x40, al
    xor al, al
    out 0x40, al
    xor ax, ax
    mov ss, ax
    mov sp, 0x7c00
    mov ds, ax
    mov es, ax
    mov ebp, COUNT
    xor edi, edi

.if KIND == 1
    test ebp, ebp
    jz done
out_loop:
    out POST_PORT, al
    dec ebp
    jnz out_loop
    jmp done
.endif

.if KIND == 2
    mov dx, UNASSIGNED_PORT
    test ebp, ebp
    jz done
in_loop:
    in al, dx
    dec ebp
    jnz in_loop
    jmp done
.endif

.if KIND == 6
    test ebp, ebp
    jz done
vmcall_loop:
    mov eax, HC_GET_VMMCALL_NUMBER
    mov ebx, hc_name
    vmcall
    dec ebp
    jnz vmcall_loop
    cmp eax, HC_UPDATE_SIGNATURES
    jne fail
    jmp done
hc_name: .asciz "update_signatures"
.endif

.if DISK
    # The data: 64 KiB of xorshift32 at BUFFER_SEGMENT:0.
    mov ax, BUFFER_SEGMENT
    mov es, ax
    xor di, di
    mov eax, 2463534242
    mov cx, 16384
fill:
    mov ebx, eax
    shl ebx, 13
    xor eax, ebx
    mov ebx, eax
    shr ebx, 17
    xor eax, ebx
    mov ebx, eax
    shl ebx, 5
    xor eax, ebx
    stosd
    loop fill
    xor ax, ax
    mov es, ax

    mov dx, ATA_CTRL_PORT           # Device Control: nIEN, no interrupts from the drive
    mov al, 0x02
    out dx, al
    WAIT_READY ready1
.endif

.if KIND == 4
    mov dx, ATA_PORT + 6
    mov al, 0xe0
    out dx, al
    mov dx, ATA_PORT + 2            # SET MULTIPLE MODE: 16 sectors per DRQ block
    mov al, 16
    out dx, al
    mov dx, ATA_PORT + 7
    mov al, 0xc6
    out dx, al
    WAIT_READY ready2
.endif

.if KIND == 5
    # The bus master's base from the PIIX3 IDE function's BAR4 (00:01.1), kept in SI.
    mov dx, PCI_ADDR_PORT
    mov eax, PCI_IDE_BAR4
    out dx, eax
    mov dx, PCI_DATA_PORT
    in eax, dx
    and ax, 0xfffc
    mov si, ax
    mov dx, PCI_ADDR_PORT           # command register: I/O space and bus master on
    mov eax, PCI_IDE_COMMAND
    out dx, eax
    mov dx, PCI_DATA_PORT
    in ax, dx
    or ax, 0x0005
    out dx, ax
    # One PRD entry: 64 KiB (count 0) from linear 0x10000, end of table.
    mov dword ptr [PRD_TABLE], BUFFER_SEGMENT * 16
    mov dword ptr [PRD_TABLE + 4], 0x80000000
    lea dx, [si + 4]
    mov eax, PRD_TABLE
    out dx, eax
.endif

.if DISK
    test ebp, ebp
    jz done
command:
    WAIT_READY ready3
    mov ebx, edi                    # LBA = LBA_BASE + (index & LBA_MASK) * SECTORS
    and ebx, LBA_MASK
    shl ebx, LBA_SHIFT
    add ebx, LBA_BASE
    mov dx, ATA_PORT + 6
    mov al, 0xe0                    # LBA, device 0; LBA 27:24 = 0 (the window is below 8 GiB)
    out dx, al
    mov dx, ATA_PORT + 2
    mov al, SECTORS & 0xff          # 256 is written as 0
    out dx, al
    mov dx, ATA_PORT + 3
    mov al, bl
    out dx, al
    mov dx, ATA_PORT + 4
    mov al, bh
    out dx, al
    shr ebx, 16
    mov dx, ATA_PORT + 5
    mov al, bl
    out dx, al
.endif

.if KIND == 3 || KIND == 4
    mov dx, ATA_PORT + 7
  .if KIND == 3
    mov al, 0x30                    # WRITE SECTORS
  .else
    mov al, 0xc5                    # WRITE MULTIPLE
  .endif
    out dx, al
    mov bx, BLOCKS
block:
    WAIT_READY ready4
    test al, STATUS_DRQ
    jz fail
    # Source: DRQ block number (index * BLOCKS + block) mod (64 KiB / block) of the buffer.
    mov si, di
    imul si, si, BLOCKS
    add si, BLOCKS
    sub si, bx
    shl si, BLOCK_SHIFT             # wraps within the 64 KiB buffer by itself
    mov ax, BUFFER_SEGMENT
    mov ds, ax
    mov cx, BLOCK_WORDS
    mov dx, ATA_PORT
    rep outsw
    xor ax, ax
    mov ds, ax
    dec bx
    jnz block
.endif

.if KIND == 7
    mov dx, ATA_PORT + 7
    mov al, 0x20                    # READ SECTORS
    out dx, al
    WAIT_READY ready6
    test al, STATUS_DRQ
    jz fail
    mov esi, edi                    # EDI is the command index: kept in ESI meanwhile
    mov ax, BUFFER_SEGMENT
    mov es, ax
    xor di, di
    mov cx, 256
    mov dx, ATA_PORT
    rep insw                        # the sector into BUFFER_SEGMENT:0
    mov eax, dword ptr es:[508]     # its last dword: the boot signature, 55 AA, after zeros
    mov edi, esi
    xor bx, bx
    mov es, bx
    cmp eax, dword ptr [0x7c00 + 508]
    jne fail
.endif

.if KIND == 5
    mov dx, si                      # bus master: stop, direction memory -> disk
    xor al, al
    out dx, al
    add dx, 2                       # Status: clear Interrupt and Error (write 1 to clear)
    mov al, 0x06
    out dx, al
    mov dx, ATA_PORT + 7
    mov al, 0xca                    # WRITE DMA
    out dx, al
    mov dx, si                      # Start
    mov al, 0x01
    out dx, al
    add dx, 2
dma_wait:
    in al, dx
    test al, 0x02                   # Error
    jnz fail
    test al, 0x01                   # Active
    jnz dma_wait
    mov dx, si                      # Stop
    xor al, al
    out dx, al
.endif

.if DISK
    inc edi
    dec ebp
    jnz command
    WAIT_READY ready5
.endif

done:
    mov al, 'K'
    out DEBUGCON_PORT, al
    xor al, al
    jmp finish
fail:
    mov al, 'F'
    out DEBUGCON_PORT, al
    mov al, 1
finish:
    out EXIT_PORT, al
halt:
    hlt
    jmp halt
