# nic64.s - a 64-bit guest driver for hv-emu's NIC: send one frame, then receive and print frames.
#
# The card is polled (no interrupts): the driver checks the ID register, reads its MAC, builds an
# Ethernet II frame (broadcast destination, EtherType 0x88b5 "local experimental", payload
# "hello from the guest"), copies it byte by byte into the transmit buffer and says TRANSMIT.
# Then it waits for RX_FRAMES frames (default 1) and prints each one's length, source MAC and
# payload (up to the first NUL; bytes outside printable ASCII as '.'). If the link goes down
# while it waits (the hypervisor cut the network) it says so once and keeps waiting, as a real
# driver waits for the link to come back; the watchdog (--timeout) ends such a run.
# Output lines: "nic: mac ...", "nic: sent N bytes" (or "nic: transmit refused"),
# "nic: received N bytes from MAC: PAYLOAD", "nic: link down", "nic: done".

#include "hvabi.s"
#include "nicregs.s"

.ifndef RX_FRAMES
.equ RX_FRAMES, 1
.endif

.equ ETH_HEADER, 14

start:
    cld
    # Is the card there? Its ID register reads "hNIC"; an empty port reads all ones.
    mov edx, NIC_PORT + NIC_REG_ID
    in eax, dx
    cmp eax, NIC_ID_VALUE
    jne no_card

    # Our MAC, one byte at a time from the MAC register, into the frame's source field.
    lea rdi, [rip + tx_src]
    mov edx, NIC_PORT + NIC_REG_MAC
    mov ecx, 6
read_mac:
    in al, dx
    stosb
    inc edx
    loop read_mac
    lea rsi, [rip + msg_mac]
    call print_str
    lea rsi, [rip + tx_src]
    call print_mac
    call print_newline

    # Transmit: copy the frame into the TX buffer through the data port, then TRANSMIT.
    lea rsi, [rip + tx_frame]
    mov ecx, tx_end - tx_frame
    mov edx, NIC_PORT + NIC_REG_DATA
copy_tx:
    lodsb
    out dx, al
    loop copy_tx
    mov edx, NIC_PORT + NIC_REG_STATUS
    mov al, NIC_CMD_TRANSMIT
    out dx, al
    in al, dx
    test al, NIC_TX_ERROR
    jnz tx_refused
    lea rsi, [rip + msg_sent]
    call print_str
    mov eax, tx_end - tx_frame
    call print_dec
    lea rsi, [rip + msg_bytes]
    call print_str
    jmp receive_frames
tx_refused:
    lea rsi, [rip + msg_refused]
    call print_str

receive_frames:
    mov r12d, RX_FRAMES             # frames still to receive
    xor r13d, r13d                  # 1 once "link down" has been printed
next_frame:
    test r12d, r12d
    jz done
wait:
    mov edx, NIC_PORT + NIC_REG_STATUS
    in al, dx
    test al, NIC_RX_READY
    jnz got_frame
    test al, NIC_LINK_UP
    jnz wait
    test r13d, r13d                 # the link is down: say so once, keep polling
    jnz wait
    mov r13d, 1
    lea rsi, [rip + msg_link_down]
    call print_str
    jmp wait

got_frame:
    mov edx, NIC_PORT + NIC_REG_RX_LEN
    in ax, dx
    movzx r14d, ax                  # R14 = the frame's length
    # The Ethernet header: 14 bytes through the data port into rx_header.
    lea rdi, [rip + rx_header]
    mov edx, NIC_PORT + NIC_REG_DATA
    mov ecx, ETH_HEADER
read_header:
    in al, dx
    stosb
    loop read_header
    lea rsi, [rip + msg_received]
    call print_str
    mov eax, r14d
    call print_dec
    lea rsi, [rip + msg_from]
    call print_str
    lea rsi, [rip + rx_header + 6]  # the source MAC
    call print_mac
    lea rsi, [rip + msg_colon]
    call print_str
    # The payload: print it up to the first NUL (frames are padded with zeros).
    sub r14d, ETH_HEADER
    jbe payload_done
print_payload:
    mov edx, NIC_PORT + NIC_REG_DATA
    in al, dx
    test al, al
    jz payload_done
    cmp al, 0x20
    jb unprintable
    cmp al, 0x7e
    jbe printable
unprintable:
    mov al, '.'
printable:
    mov edx, DEBUGCON_PORT
    out dx, al
    dec r14d
    jnz print_payload
payload_done:
    call print_newline
    mov edx, NIC_PORT + NIC_REG_STATUS  # done with this frame: the card drops it
    mov al, NIC_CMD_RX_NEXT
    out dx, al
    dec r12d
    jmp next_frame

done:
    lea rsi, [rip + msg_done]
    call print_str
halt:
    hlt
    jmp halt

no_card:
    lea rsi, [rip + msg_no_card]
    call print_str
    jmp halt

# print_mac - write the 6 bytes at RSI as aa:bb:cc:dd:ee:ff.
#   clobbers: RAX, RCX, RDX, RSI, R8
print_mac:
    mov r8d, 6
print_mac.byte:
    lodsb
    call print_hex8
    dec r8d
    jz print_mac.done
    mov al, ':'
    mov edx, DEBUGCON_PORT
    out dx, al
    jmp print_mac.byte
print_mac.done:
    ret

# print_hex8 - write AL as two lowercase hex digits.
#   clobbers: RAX, RCX, RDX
print_hex8:
    mov edx, DEBUGCON_PORT
    mov ecx, eax
    shr al, 4
    call print_hex8.digit
    mov eax, ecx
    and al, 0x0f
print_hex8.digit:
    add al, '0'
    cmp al, '9'
    jbe print_hex8.out
    add al, 'a' - '0' - 10
print_hex8.out:
    out dx, al
    ret

print_newline:
    mov edx, DEBUGCON_PORT
    mov al, 10
    out dx, al
    ret

msg_mac:        .asciz "nic: mac "
msg_sent:       .asciz "nic: sent "
msg_bytes:      .asciz " bytes\n"
msg_refused:    .asciz "nic: transmit refused\n"
msg_received:   .asciz "nic: received "
msg_from:       .asciz " bytes from "
msg_colon:      .asciz ": "
msg_link_down:  .asciz "nic: link down\n"
msg_done:       .asciz "nic: done\n"
msg_no_card:    .asciz "nic: no card\n"

# The frame the driver sends: broadcast, from our MAC (filled in), EtherType 0x88b5.
tx_frame:
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
tx_src:
    .byte 0, 0, 0, 0, 0, 0
    .byte 0x88, 0xb5
    .ascii "hello from the guest"
tx_end:

rx_header:
    .space ETH_HEADER

#include "print64.s"
