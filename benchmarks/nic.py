"""Guest frames out through the NIC, against the same guest on a machine without a card.

A guest transmits N full-size frames (1514 bytes, written to the data port four bytes per OUT,
then TRANSMIT): each frame is 380 port exits, the switch's egress decision and one UDP datagram on
loopback. The peer is the same guest on a machine without ``--net``: the same exits land on empty
ports, so the ratio is what the card, the switch and the socket add to the bare cost of the exits
(which dominates: a polled, port-I/O card on an emulated CPU moves a few hundred frames a second).
"""

from __future__ import annotations

import socket

from benchmarks.common import Row, median_of, seconds
from guest_tool.assemble import assemble
from hv_emu import layout
from hv_emu.devices.nic import MAX_TX_FRAME, Command, Reg
from hv_emu.machine import Machine, MachineConfig
from hv_emu.net.backends import UdpSpec

N = 300
GUEST = f"""
    mov r15d, {N}
frame:
    mov ecx, {MAX_TX_FRAME // 4}     # 378 dwords, then 2 bytes: 1514
    mov edx, {layout.PORT_NIC + Reg.DATA}
    mov eax, 0x0000ffff              # broadcast destination, then filler
dwords:
    out dx, eax
    loop dwords
    out dx, ax
    mov edx, {layout.PORT_NIC + Reg.STATUS}
    mov al, {int(Command.TRANSMIT)}
    out dx, al
    dec r15d
    jnz frame
    hlt
"""


def _guest(sink: socket.socket) -> float:
    host, port = sink.getsockname()
    machine = Machine(MachineConfig(net=UdpSpec(("127.0.0.1", 0), (host, port)), timeout=120))
    try:
        machine.load(assemble(GUEST, mode=64, address=layout.DEFAULT_LOAD))
        return N / seconds(machine.run)
    finally:
        machine.close()


def _no_card() -> float:
    machine = Machine(MachineConfig(timeout=120))
    machine.load(assemble(GUEST, mode=64, address=layout.DEFAULT_LOAD))
    return N / seconds(machine.run)


def _drain(sink: socket.socket) -> None:
    sink.setblocking(False)
    try:
        while True:
            sink.recv(65536)
    except BlockingIOError:
        pass


def run() -> list[Row]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sink.bind(("127.0.0.1", 0))

        def guest() -> float:
            rate = _guest(sink)
            _drain(sink)
            return rate

        ours = median_of(3, guest)
        floor = median_of(3, _no_card)
    return [Row("guest frames out via the NIC (1514 B)", ours, "frames/s",
                "same guest, no card (empty ports)", floor)]  # fmt: skip
