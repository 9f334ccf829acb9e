# nicregs.s - hv-emu's guest NIC ("hvnic") as assembler constants.
#
# The same numbers as hv_emu/devices/nic.py (Reg, Status, Command, NIC_ID);
# tests/devices/test_nic_guest.py checks that they agree, and docs/DEVICES.md describes the card.
# Only .equ lines: include it at the top of a program.
#
# NIC_PORT, the card's port base, is not here: guest_tool.programs generates it in front of every
# program from hv_emu/layout.py (PORT_NIC), the one home of port numbers.

# Register offsets from NIC_PORT.
.equ NIC_REG_ID, 0x00           # R 4: NIC_ID_VALUE when the card is there
.equ NIC_REG_STATUS, 0x04       # R: status bits / W: a command
.equ NIC_REG_RX_LEN, 0x06       # R 2: length of the frame at the head of the queue, 0 if none
.equ NIC_REG_DATA, 0x08         # R: next bytes of the head frame / W: append to the TX buffer
.equ NIC_REG_TX_LEN, 0x0c       # R 2: bytes in the TX buffer
.equ NIC_REG_MAC, 0x10          # R 6: the card's MAC address
.equ NIC_REG_RX_DROPS, 0x18     # R 4: frames dropped because the receive queue was full

.equ NIC_ID_VALUE, 0x43494e68   # "hNIC"

# Status bits.
.equ NIC_RX_READY, 0x01
.equ NIC_LINK_UP, 0x02
.equ NIC_TX_ERROR, 0x04

# Commands (written to NIC_REG_STATUS).
.equ NIC_CMD_TRANSMIT, 0x01
.equ NIC_CMD_RX_NEXT, 0x02
.equ NIC_CMD_RESET, 0x04
