# ahci32.s - a polling AHCI driver for learners: find the controller, bring port 0 up, IDENTIFY,
# write with a multi-entry PRDT, write with NCQ, read back, flush; print each step.
#
# Runs the same bytes on hv-emu (`hv-emu run --mode 32 --disk D --disk-controller ahci`: a flat
# 32-bit image at 0x100000, entered at its first byte) and on QEMU q35 (`-kernel`: its Multiboot
# loader reads the header below, loads the file at 0x100000 and jumps to `start`). It talks to
# the ICH9 AHCI at PCI 00:1f.2 and reads the ABAR from BAR5, as an OS does after firmware.
# Everything it prints is what both machines must agree on (docs/STORAGE.md, AHCI); at the end it
# writes 0 to port 0xF4 (QEMU's isa-debug-exit; nothing there on hv-emu) and halts.
#
# Memory it uses (guest-physical, identity: paging is off): the command list at CLB, the
# received-FIS area at FB, one command table per slot at TABLES + slot * 0x100, the IDENTIFY
# block at IDBUF, the data written at WBUF and read back at RBUF.

#include "hvabi.s"

.equ CLB, 0x200000
.equ FB, 0x201000
.equ TABLES, 0x202000
.equ IDBUF, 0x204000
.equ WBUF, 0x210000
.equ RBUF, 0x220000
.equ PCI_ADDR, 0xcf8
.equ PCI_DATA, 0xcfc
.equ AHCI_CFG, 0x8000fa00            # enable | bus 0 | device 0x1f | function 2
.equ P0, 0x100                       # port 0's registers in the ABAR
.equ POLL, 2000000                   # iterations before a wait gives up

start0:
    jmp start
.p2align 2
multiboot:                           # Multiboot v1 header with the a.out kludge (flags bit 16)
    .long 0x1badb002, 0x00010000, 0xe4514ffe   # magic, flags, checksum (sum 0)
    .long multiboot, 0x100000, 0, 0, start

start:
    mov esp, 0x9f000
    cld
    # ---------------------------------------------------------------- find the HBA, read ABAR
    mov eax, AHCI_CFG
    call pci_read
    cmp eax, 0x29228086
    jne no_ahci
    mov eax, AHCI_CFG + 0x04
    call pci_read
    or eax, 0x6                      # Memory Space and Bus Master Enable
    mov ebx, eax
    mov eax, AHCI_CFG + 0x04
    call pci_write
    mov eax, AHCI_CFG + 0x24         # BAR5 = ABAR
    call pci_read
    and eax, 0xfffff000
    mov ebp, eax

    mov esi, msg_cap
    call print_str
    mov eax, [ebp + 0x00]
    call print_hex                   # CAP
    mov esi, msg_pi
    call print_str
    mov eax, [ebp + 0x0c]
    call print_hex                   # PI
    mov esi, msg_vs
    call print_str
    mov eax, [ebp + 0x10]
    call print_hex                   # VS
    call newline

    # ---------------------------------------------------------------- HBA reset, AHCI enable
    mov dword ptr [ebp + 0x04], 0x80000001   # AE | HR
    mov ecx, POLL
hr_wait:
    test dword ptr [ebp + 0x04], 1
    jz hr_done
    loop hr_wait
    jmp timeout
hr_done:
    mov dword ptr [ebp + 0x04], 0x80000000   # AE, interrupts off: this driver polls

    # ---------------------------------------------------------------- port 0: stop, set up, start
    and dword ptr [ebp + P0 + 0x18], 0xffffffee   # clear ST and FRE
    mov ecx, POLL
stop_wait:
    test dword ptr [ebp + P0 + 0x18], 0xc000      # CR | FR
    jz stopped
    loop stop_wait
    jmp timeout
stopped:
    mov dword ptr [ebp + P0 + 0x00], CLB
    mov dword ptr [ebp + P0 + 0x04], 0
    mov dword ptr [ebp + P0 + 0x08], FB
    mov dword ptr [ebp + P0 + 0x0c], 0
    mov dword ptr [ebp + P0 + 0x30], 0xffffffff   # clear PxSERR
    mov dword ptr [ebp + P0 + 0x10], 0xffffffff   # clear PxIS
    or dword ptr [ebp + P0 + 0x18], 0x10          # FRE: the disk's signature FIS arrives
    mov ecx, POLL
sig_wait:
    test dword ptr [ebp + P0 + 0x20], 0x88        # PxTFD: BSY or DRQ
    jz sig_done
    loop sig_wait
    jmp timeout
sig_done:
    mov esi, msg_ssts
    call print_str
    mov eax, [ebp + P0 + 0x28]
    call print_hex                   # PxSSTS
    mov esi, msg_sig
    call print_str
    mov eax, [ebp + P0 + 0x24]
    call print_hex                   # PxSIG
    mov esi, msg_tfd
    call print_str
    mov eax, [ebp + P0 + 0x20]
    call print_hex                   # PxTFD
    call newline
    mov dword ptr [ebp + P0 + 0x10], 0xffffffff
    or dword ptr [ebp + P0 + 0x18], 0x01          # ST: the command engine runs

    # ---------------------------------------------------------------- IDENTIFY DEVICE (slot 0)
    mov eax, 0                       # slot
    mov ebx, 0xec                    # command
    xor ecx, ecx                     # LBA
    xor edx, edx                     # count
    call make_command
    mov dword ptr [TABLES + 0x80], IDBUF
    mov dword ptr [TABLES + 0x84], 0
    mov dword ptr [TABLES + 0x8c], 0x800001ff     # 512 bytes, I bit
    mov word ptr [CLB + 2], 1                     # PRDTL
    mov eax, 1
    call issue
    mov esi, msg_identify
    call print_str
    mov eax, [IDBUF + 200]           # words 100-101: capacity (low 32 bits)
    call print_dec
    mov esi, msg_ncq
    call print_str
    movzx eax, word ptr [IDBUF + 150]   # word 75: queue depth - 1
    and eax, 0x1f
    inc eax
    call print_dec
    mov esi, msg_lba48
    call print_str
    movzx eax, word ptr [IDBUF + 166]   # word 83 bit 10: LBA48
    shr eax, 10
    and eax, 1
    call print_dec
    xor eax, eax
    call print_status                # slot 0: PRDBC, PxTFD, PxIS
    call newline

    # ---------------------------------------------------------------- the data to write
    mov edi, WBUF
    xor ecx, ecx
fill:
    mov eax, ecx
    imul eax, eax, 0x9e3779b1
    shr eax, 13
    xor eax, ecx
    mov [edi + ecx * 4], eax
    inc ecx
    cmp ecx, 0x4000                  # 64 KiB
    jb fill

    # ---------------------------------------------------------------- WRITE DMA EXT, 3 PRD entries
    # LBA 8, 24 sectors = 12 KiB from WBUF in three pieces of 5, 3 and 4 KiB (slot 2).
    mov eax, 2
    mov ebx, 0x35
    mov ecx, 8
    mov edx, 24
    call make_command
    mov edi, TABLES + 0x200 + 0x80
    mov dword ptr [edi + 0x00], WBUF
    mov dword ptr [edi + 0x0c], 5120 - 1
    mov dword ptr [edi + 0x10], WBUF + 5120
    mov dword ptr [edi + 0x1c], 3072 - 1
    mov dword ptr [edi + 0x20], WBUF + 8192
    mov dword ptr [edi + 0x2c], 0x80000000 + 4096 - 1
    mov word ptr [CLB + 0x40 + 2], 3
    or word ptr [CLB + 0x40], 0x40   # W: host to device
    mov eax, 4
    call issue
    mov esi, msg_write
    call print_str
    mov eax, 2
    call print_status
    call newline

    # ---------------------------------------------------------------- NCQ: two WRITE FPDMA QUEUED
    # tag 3: LBA 64, 8 sectors from WBUF + 12 KiB in two PRD entries; tag 1: LBA 40, 4 sectors.
    mov eax, 3
    mov ebx, 0x61
    mov ecx, 64
    mov edx, 8
    call make_command
    mov edi, TABLES + 0x300 + 0x80
    mov dword ptr [edi + 0x00], WBUF + 12288
    mov dword ptr [edi + 0x0c], 1024 - 1
    mov dword ptr [edi + 0x10], WBUF + 12288 + 1024
    mov dword ptr [edi + 0x1c], 3072 - 1
    mov word ptr [CLB + 0x60 + 2], 2
    or word ptr [CLB + 0x60], 0x40
    mov eax, 1
    mov ebx, 0x61
    mov ecx, 40
    mov edx, 4
    call make_command
    mov edi, TABLES + 0x100 + 0x80
    mov dword ptr [edi + 0x00], WBUF + 16384
    mov dword ptr [edi + 0x0c], 2048 - 1
    mov word ptr [CLB + 0x20 + 2], 1
    or word ptr [CLB + 0x20], 0x40
    mov dword ptr [ebp + P0 + 0x10], 0xffffffff
    mov dword ptr [ebp + P0 + 0x34], 0x0a         # PxSACT: tags 1 and 3
    mov dword ptr [ebp + P0 + 0x38], 0x0a         # PxCI: slots 1 and 3
    mov ecx, POLL
ncq_wait:
    cmp dword ptr [ebp + P0 + 0x34], 0
    je ncq_done
    loop ncq_wait
    jmp timeout
ncq_done:
    mov ecx, POLL
ncq_ci:
    cmp dword ptr [ebp + P0 + 0x38], 0
    je ncq_ci_done
    loop ncq_ci
    jmp timeout
ncq_ci_done:
    mov esi, msg_ncq_write
    call print_str
    mov eax, [CLB + 0x64]            # PRDBC of slot 3
    call print_dec
    mov esi, msg_plus
    call print_str
    mov eax, [CLB + 0x24]            # PRDBC of slot 1
    call print_dec
    mov esi, msg_tfd
    call print_str
    mov eax, [ebp + P0 + 0x20]
    call print_hex
    mov esi, msg_sdbs
    call print_str
    mov eax, [ebp + P0 + 0x10]
    shr eax, 3                       # PxIS.SDBS
    and eax, 1
    call print_dec
    mov esi, msg_fis
    call print_str
    movzx eax, byte ptr [FB + 0x58]  # the SDB FIS's type
    call print_hex
    call newline

    # ---------------------------------------------------------------- read back: READ DMA EXT
    # LBA 8..75 (68 sectors) into RBUF with one PRD entry, compare with what was written.
    mov edi, RBUF
    mov ecx, 68 * 128
    xor eax, eax
    rep stosd
    mov eax, 4
    mov ebx, 0x25
    mov ecx, 8
    mov edx, 68
    call make_command
    mov dword ptr [TABLES + 0x400 + 0x80], RBUF
    mov dword ptr [TABLES + 0x400 + 0x8c], 68 * 512 - 1
    mov word ptr [CLB + 0x80 + 2], 1
    mov eax, 0x10
    call issue
    mov esi, msg_read
    call print_str
    mov eax, 4
    call print_status
    mov esi, msg_compare
    call print_str
    mov esi, WBUF                    # LBA 8..31 <- WBUF[0, 12K)
    mov edi, RBUF
    mov ecx, 12288
    call count_diff
    mov ebx, eax
    mov esi, WBUF + 16384            # LBA 40..43 <- WBUF[16K, 18K)
    mov edi, RBUF + 32 * 512
    mov ecx, 2048
    call count_diff
    add ebx, eax
    mov esi, WBUF + 12288            # LBA 64..71 <- WBUF[12K, 16K)
    mov edi, RBUF + 56 * 512
    mov ecx, 4096
    call count_diff
    add ebx, eax
    mov edi, RBUF + 24 * 512         # LBA 32..39, 44..63, 72..75: never written, zero
    mov ecx, 8 * 512
    call count_nonzero
    add ebx, eax
    mov edi, RBUF + 36 * 512
    mov ecx, 20 * 512
    call count_nonzero
    add ebx, eax
    mov edi, RBUF + 64 * 512
    mov ecx, 4 * 512
    call count_nonzero
    add ebx, eax
    mov eax, ebx
    call print_dec
    mov esi, msg_differ
    call print_str

    # ---------------------------------------------------------------- NCQ read: READ FPDMA QUEUED
    mov eax, 5
    mov ebx, 0x60
    mov ecx, 64
    mov edx, 8
    call make_command
    mov dword ptr [TABLES + 0x500 + 0x80], RBUF + 0x10000
    mov dword ptr [TABLES + 0x500 + 0x8c], 4096 - 1
    mov word ptr [CLB + 0xa0 + 2], 1
    mov dword ptr [ebp + P0 + 0x34], 0x20
    mov dword ptr [ebp + P0 + 0x38], 0x20
    mov ecx, POLL
ncq_read_wait:
    mov eax, [ebp + P0 + 0x34]
    or eax, [ebp + P0 + 0x38]
    jz ncq_read_done
    loop ncq_read_wait
    jmp timeout
ncq_read_done:
    mov esi, msg_ncq_read
    call print_str
    mov esi, WBUF + 12288
    mov edi, RBUF + 0x10000
    mov ecx, 4096
    call count_diff
    call print_dec
    mov esi, msg_differ
    call print_str

    # ---------------------------------------------------------------- FLUSH CACHE EXT, then a bad one
    mov eax, 6
    mov ebx, 0xea
    xor ecx, ecx
    xor edx, edx
    call make_command
    mov eax, 0x40
    call issue
    mov esi, msg_flush
    call print_str
    mov eax, 6
    call print_status
    call newline
    # READ DMA EXT beyond the end of the disk: ERR, IDNF|ABRT, PxIS.TFES.
    mov eax, 7
    mov ebx, 0x25
    mov ecx, 0x7ffffff0
    mov edx, 1
    call make_command
    mov dword ptr [TABLES + 0x700 + 0x80], RBUF
    mov dword ptr [TABLES + 0x700 + 0x8c], 511
    mov word ptr [CLB + 0xe0 + 2], 1
    mov eax, 0x80
    call issue
    mov esi, msg_beyond
    call print_str
    mov eax, [ebp + P0 + 0x20]
    and eax, 0x0401                  # ERR and ABRT (QEMU omits IDNF and DSC here; hv-emu not)
    call print_hex
    mov esi, msg_tfes
    call print_str
    mov eax, [ebp + P0 + 0x10]
    shr eax, 30
    and eax, 1
    call print_dec
    mov esi, msg_ci
    call print_str
    mov eax, [ebp + P0 + 0x38]
    call print_hex                   # the failed slot is still issued: the engine has halted
    # Recover as libahci does: stop the engine (PxCI clears), clear the errors, start again.
    and dword ptr [ebp + P0 + 0x18], 0xfffffffe
    mov ecx, POLL
recover_wait:
    test dword ptr [ebp + P0 + 0x18], 0x8000      # CR
    jz recovered
    loop recover_wait
    jmp timeout
recovered:
    mov esi, msg_ci
    call print_str
    mov eax, [ebp + P0 + 0x38]
    call print_hex
    call newline
    mov dword ptr [ebp + P0 + 0x30], 0xffffffff
    mov dword ptr [ebp + P0 + 0x10], 0xffffffff
    or dword ptr [ebp + P0 + 0x18], 0x01
    # and the port works again: FLUSH CACHE EXT.
    mov eax, 6
    mov ebx, 0xea
    xor ecx, ecx
    xor edx, edx
    call make_command
    mov eax, 0x40
    call issue
    mov esi, msg_after
    call print_str
    mov eax, 6
    call print_status
    call newline
    mov esi, msg_done
    call print_str
    jmp finish

no_ahci:
    mov esi, msg_no_ahci
    call print_str
    jmp finish
timeout:
    mov esi, msg_timeout
    call print_str
finish:
    xor eax, eax
    out 0xf4, al                     # QEMU: isa-debug-exit ends the run
    hlt

# ---------------------------------------------------------------- helpers
# make_command - slot EAX: header (CFL 5, PRDTL 0) and a Register H2D FIS in its table.
#   in: EAX = slot, EBX = ATA command, ECX = LBA, EDX = sector count (NCQ: tag = slot)
#   clobbers: EDI, ESI
make_command:
    push eax
    push ecx
    mov edi, eax
    shl edi, 5
    add edi, CLB
    mov dword ptr [edi + 0x00], 5    # CFL 5 dwords, PRDTL 0 (the caller sets W and PRDTL)
    mov dword ptr [edi + 0x04], 0    # PRDBC
    mov esi, eax
    shl esi, 8
    add esi, TABLES
    mov [edi + 0x08], esi            # CTBA
    mov dword ptr [edi + 0x0c], 0
    push eax
    mov edi, esi                     # clear the CFIS and the first PRD entries
    xor eax, eax
    push ecx
    mov ecx, 0x40
    rep stosd
    pop ecx
    pop eax
    mov byte ptr [esi + 0], 0x27     # Register H2D
    mov byte ptr [esi + 1], 0x80     # C: a command
    mov [esi + 2], bl
    mov [esi + 4], cl                # LBA 7:0
    mov [esi + 5], ch                # LBA 15:8
    shr ecx, 16
    mov [esi + 6], cl                # LBA 23:16
    mov [esi + 8], ch                # LBA 31:24
    mov byte ptr [esi + 7], 0x40     # device: LBA
    cmp bl, 0x60
    je ncq_fis
    cmp bl, 0x61
    je ncq_fis
    mov [esi + 12], dl               # count 7:0
    mov [esi + 13], dh               # count 15:8
    jmp fis_done
ncq_fis:
    mov [esi + 3], dl                # NCQ: count in FEATURES
    mov [esi + 11], dh
    shl al, 3
    mov [esi + 12], al               # tag in COUNT 7:3
fis_done:
    pop ecx
    pop eax
    ret

# issue - set PxCI = EAX and wait until the HBA clears it, or reports a task-file error.
issue:
    mov dword ptr [ebp + P0 + 0x10], 0xffffffff
    mov [ebp + P0 + 0x38], eax
    mov ecx, POLL
issue.wait:
    test [ebp + P0 + 0x38], eax
    jz issue.done
    test dword ptr [ebp + P0 + 0x10], 0x40000000  # PxIS.TFES: failed, the slot stays issued
    jnz issue.done
    loop issue.wait
    jmp timeout
issue.done:
    ret

# print_status - " PRDBC=<n> TFD=<hex> IS=<hex>" for slot EAX.
print_status:
    shl eax, 5
    mov eax, [CLB + eax + 4]
    push eax
    mov esi, msg_prdbc
    call print_str
    pop eax
    call print_dec
    mov esi, msg_tfd
    call print_str
    mov eax, [ebp + P0 + 0x20]
    call print_hex
    mov esi, msg_is
    call print_str
    mov eax, [ebp + P0 + 0x10]
    and eax, 0xffffffdf              # not DPS: QEMU ignores the PRD I bit
    call print_hex
    ret

# count_diff - bytes that differ between [ESI] and [EDI], ECX bytes; result in EAX.
count_diff:
    xor eax, eax
count_diff.next:
    mov dl, [esi]
    cmp dl, [edi]
    je count_diff.same
    inc eax
count_diff.same:
    inc esi
    inc edi
    loop count_diff.next
    ret

# count_nonzero - non-zero bytes in [EDI], ECX bytes; result in EAX.
count_nonzero:
    xor eax, eax
count_nonzero.next:
    cmp byte ptr [edi], 0
    je count_nonzero.zero
    inc eax
count_nonzero.zero:
    inc edi
    loop count_nonzero.next
    ret

# pci_read - EAX = configuration dword at address EAX.  pci_write - write EBX there.
pci_read:
    mov edx, PCI_ADDR
    out dx, eax
    mov edx, PCI_DATA
    in eax, dx
    ret
pci_write:
    mov edx, PCI_ADDR
    out dx, eax
    mov edx, PCI_DATA
    mov eax, ebx
    out dx, eax
    ret

# print_hex - EAX as 8 hex digits.  clobbers: ECX, EDX
print_hex:
    push eax
    mov ecx, 8
print_hex.next:
    rol eax, 4
    push eax
    and al, 0xf
    add al, '0'
    cmp al, '9'
    jbe print_hex.digit
    add al, 'a' - '9' - 1
print_hex.digit:
    mov edx, DEBUGCON_PORT
    out dx, al
    pop eax
    loop print_hex.next
    pop eax
    ret

newline:
    mov esi, msg_newline
    jmp print_str

#include "print32.s"

msg_cap: .asciz "ahci: CAP="
msg_pi: .asciz " PI="
msg_vs: .asciz " VS="
msg_ssts: .asciz "port0: SSTS="
msg_sig: .asciz " SIG="
msg_tfd: .asciz " TFD="
msg_is: .asciz " IS="
msg_prdbc: .asciz " PRDBC="
msg_identify: .asciz "identify: sectors="
msg_ncq: .asciz " ncq-depth="
msg_lba48: .asciz " lba48="
msg_write: .asciz "write dma ext (3 PRD entries):"
msg_ncq_write: .asciz "ncq write (tags 3, 1): PRDBC="
msg_plus: .asciz "+"
msg_sdbs: .asciz " SDBS="
msg_fis: .asciz " FIS="
msg_read: .asciz "read dma ext:"
msg_compare: .asciz "; readback: "
msg_differ: .asciz " bytes differ\n"
msg_ncq_read: .asciz "ncq read (tag 5): "
msg_flush: .asciz "flush cache ext:"
msg_beyond: .asciz "read beyond the disk: TFD="
msg_tfes: .asciz " TFES="
msg_ci: .asciz " CI="
msg_after: .asciz "flush after recovery:"
msg_done: .asciz "ahci: done\n"
msg_no_ahci: .asciz "ahci: no ICH9 AHCI at 00:1f.2\n"
msg_timeout: .asciz "ahci: timeout\n"
msg_newline: .asciz "\n"
