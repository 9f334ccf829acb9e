"""The GDB remote serial protocol on the wire: framing, checksums, and the commands a stub gets.

Models: the bytes between ``gdb`` and a debugging stub (gdbserver, QEMU's ``-gdb``, hv-emu's
``--gdb``): packets ``$payload#cs`` with a modulo-256 checksum, ``+``/``-`` acknowledgements, a
bare 0x03 to interrupt, ``}``-escaping of the four special bytes; and the commands inside packets
parsed into values (``m addr,len`` -> ``ReadMemory``). No sockets and no clock: bytes in, frames
and commands out, in the sans-IO manner of h11, so every rule is testable without a debugger.

Follows: the GDB manual, appendix E "GDB Remote Serial Protocol" (E.1 overview, E.2 packets,
E.4 general query packets); ``PacketSize`` as advertised by ``qSupported``.

Leaves out: run-length encoding from gdb (gdb never sends it; stubs may, and this one does not),
the binary ``X`` write (gdb falls back to ``M`` when it is unsupported), ``vCont``, non-stop mode
and tracepoints: unknown commands parse as ``Unsupported`` and get the empty reply.

The debugger (a network peer on localhost) controls every byte. The reader bounds a packet at
``MAX_PACKET`` bytes before keeping more; a bad checksum or an overlong packet is a ``Corrupt``
frame (answered with ``-``), never an exception. ``parse_command`` raises only
``GdbProtocolError`` for a malformed command, which the stub answers with an ``E`` reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hv_emu.errors import GuestFault

#: The largest packet this stub accepts or sends (payload bytes, advertised as ``PacketSize``).
MAX_PACKET = 0x4000
#: The largest memory read or write in one packet: two hex digits per byte must fit.
MAX_MEMORY = MAX_PACKET // 2 - 16
_ESCAPE = 0x7D  # '}': the next byte is XORed with 0x20
_SPECIAL = frozenset(b"#$}*")
_INTERRUPT = 0x03


class GdbProtocolError(GuestFault):
    """A command that does not parse: ``payload`` as received and what is wrong with it.

    The peer is at fault (a debugger on the network, like a bad frame); the stub answers ``E01``.
    """

    def __init__(self, payload: bytes, reason: str) -> None:
        self.payload = payload
        self.reason = reason
        super().__init__(f"gdb packet {payload[:40]!r}: {reason}")


# ------------------------------------------------------------------------------ framing


@dataclass(frozen=True)
class Packet:
    """A packet whose checksum verified; ``payload`` is unescaped."""

    payload: bytes


@dataclass(frozen=True)
class Ack:
    """``+``: the peer received our last packet."""


@dataclass(frozen=True)
class Nack:
    """``-``: the peer wants our last packet again."""


@dataclass(frozen=True)
class Interrupt:
    """A bare 0x03 byte: the user pressed Ctrl-C in gdb."""


@dataclass(frozen=True)
class Corrupt:
    """A packet that failed its checksum or was too long; answer ``-`` so it is sent again."""

    reason: str


Frame = Packet | Ack | Nack | Interrupt | Corrupt


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(payload: bytes) -> bytes:
    """``}``-escape the bytes that frame packets (``#``, ``$``, ``}``, and ``*`` of RLE)."""
    out = bytearray()
    for byte in payload:
        if byte in _SPECIAL:
            out += bytes((_ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def encode_packet(payload: bytes) -> bytes:
    """``$payload#cs`` with the payload escaped and its checksum in two hex digits."""
    body = escape(payload)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


class PacketReader:
    """Turns the byte stream from gdb into frames; feed it whatever ``recv`` returned."""

    def __init__(self) -> None:
        self._body: bytearray | None = None  # inside $...#, the raw (escaped) bytes
        self._sum: bytearray | None = None  # after '#': the checksum digits so far
        self._overlong = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for byte in data:
            frame = self._byte(byte)
            if frame is not None:
                frames.append(frame)
        return frames

    def _byte(self, byte: int) -> Frame | None:
        if self._sum is not None:  # the two checksum digits
            self._sum.append(byte)
            if len(self._sum) < 2:
                return None
            return self._finish()
        if self._body is not None:
            if byte == ord("#"):
                self._sum = bytearray()
            elif byte == ord("$"):  # a new packet before the end of this one: start over
                self._body, self._overlong = bytearray(), False
            elif len(self._body) < 2 * MAX_PACKET:
                self._body.append(byte)
            else:
                self._overlong = True
            return None
        match byte:  # between packets
            case 0x2B:  # '+'
                return Ack()
            case 0x2D:  # '-'
                return Nack()
            case 0x03:
                return Interrupt()
            case 0x24:  # '$'
                self._body, self._overlong = bytearray(), False
        return None  # anything else between packets is line noise

    def _finish(self) -> Frame:
        assert self._body is not None and self._sum is not None
        body, digits, overlong = bytes(self._body), bytes(self._sum), self._overlong
        self._body = self._sum = None
        if overlong:
            return Corrupt(f"packet longer than {2 * MAX_PACKET} bytes")
        if not _HEX.fullmatch(digits):
            return Corrupt(f"checksum {digits!r} is not two hex digits")
        if int(digits, 16) != checksum(body):
            return Corrupt(f"checksum {digits!r}, computed {checksum(body):02x}")
        payload = _unescape(body)
        if len(payload) > MAX_PACKET:
            return Corrupt(f"packet longer than {MAX_PACKET} bytes")
        return Packet(payload)


def _unescape(body: bytes) -> bytes:
    out = bytearray()
    escaped = False
    for byte in body:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)


# ------------------------------------------------------------------------------ commands


@dataclass(frozen=True)
class QueryHalt:
    """``?``: why did the target stop?"""


@dataclass(frozen=True)
class ReadRegisters:
    """``g``: all registers in the architecture's order."""


@dataclass(frozen=True)
class WriteRegisters:
    """``G XX...``: all registers, the same layout as ``g``'s reply."""

    data: bytes


@dataclass(frozen=True)
class ReadRegister:
    """``p n``: one register by its number in the layout."""

    number: int


@dataclass(frozen=True)
class WriteRegister:
    """``P n=XX...``: one register, target byte order."""

    number: int
    data: bytes


@dataclass(frozen=True)
class ReadMemory:
    """``m addr,length``: bytes at a (guest-virtual) address."""

    address: int
    length: int


@dataclass(frozen=True)
class WriteMemory:
    """``M addr,length:XX...``."""

    address: int
    data: bytes


@dataclass(frozen=True)
class Breakpoint:
    """``Z type,addr,kind`` (insert) or ``z type,addr,kind`` (remove); type 0 = software,
    1 = hardware execution breakpoint, 2-4 = watchpoints."""

    insert: bool
    type: int
    address: int


@dataclass(frozen=True)
class Step:
    """``s [addr]``: execute one instruction (at ``addr`` if given)."""

    address: int | None


@dataclass(frozen=True)
class Continue:
    """``c [addr]``: run until something stops the guest."""

    address: int | None


@dataclass(frozen=True)
class Kill:
    """``k``: end the target."""


@dataclass(frozen=True)
class Detach:
    """``D`` or ``D;pid``: the debugger leaves; the target runs on."""


@dataclass(frozen=True)
class Query:
    """A general query or set packet (``qSupported:...``, ``qC``, ``Hg0``, ``T1``...):
    ``name`` up to the first ``:`` (or the thread letter's end), ``argument`` after it."""

    name: str
    argument: str


@dataclass(frozen=True)
class Unsupported:
    """A command this stub does not implement: the reply is empty, as the protocol asks."""

    payload: bytes


Command = (
    QueryHalt | ReadRegisters | WriteRegisters | ReadRegister | WriteRegister | ReadMemory
    | WriteMemory | Breakpoint | Step | Continue | Kill | Detach | Query | Unsupported
)

_HEX = re.compile(rb"[0-9a-fA-F]+")


def _hex_int(payload: bytes, text: bytes, what: str) -> int:
    if not _HEX.fullmatch(text) or len(text) > 16:
        raise GdbProtocolError(payload, f"{what} {text[:20]!r} is not a hex number of 64 bits")
    return int(text, 16)


def _hex_bytes(payload: bytes, text: bytes, what: str) -> bytes:
    if len(text) % 2 or (text and not _HEX.fullmatch(text)):
        raise GdbProtocolError(payload, f"{what} is not an even number of hex digits")
    return bytes.fromhex(text.decode("ascii"))


def _split(payload: bytes, text: bytes, sep: bytes, count: int, what: str) -> list[bytes]:
    parts = text.split(sep)
    if len(parts) != count:
        raise GdbProtocolError(payload, f"expected {what}")
    return parts


def parse_command(payload: bytes) -> Command:
    """The command in a packet's payload; ``GdbProtocolError`` if it is malformed."""
    if not payload:
        return Unsupported(payload)
    head, rest = payload[:1], payload[1:]
    match head:
        case b"?":
            return QueryHalt()
        case b"g":
            return ReadRegisters()
        case b"G":
            return WriteRegisters(_hex_bytes(payload, rest, "register data"))
        case b"p":
            return ReadRegister(_hex_int(payload, rest, "register number"))
        case b"P":
            number, value = _split(payload, rest, b"=", 2, "P n=value")
            return WriteRegister(_hex_int(payload, number, "register number"),
                                 _hex_bytes(payload, value, "register value"))  # fmt: skip
        case b"m":
            address, length = _split(payload, rest, b",", 2, "m addr,length")
            return ReadMemory(_hex_int(payload, address, "address"),
                              _length(payload, length))  # fmt: skip
        case b"M":
            where, data = _split(payload, rest, b":", 2, "M addr,length:data")
            address, length = _split(payload, where, b",", 2, "M addr,length:data")
            written = _hex_bytes(payload, data, "memory data")
            if len(written) != _length(payload, length):
                raise GdbProtocolError(payload, "the data is not as long as the length says")
            return WriteMemory(_hex_int(payload, address, "address"), written)
        case b"Z" | b"z":
            kind, address, _size = _split(payload, rest.split(b";")[0], b",", 3, "Z type,addr,kind")
            return Breakpoint(head == b"Z", _hex_int(payload, kind, "breakpoint type"),
                              _hex_int(payload, address, "address"))  # fmt: skip
        case b"s" | b"c":
            resume_at = _hex_int(payload, rest, "address") if rest else None
            return Step(resume_at) if head == b"s" else Continue(resume_at)
        case b"k":
            return Kill()
        case b"D":
            return Detach()
        case b"q" | b"Q" | b"H" | b"T":
            try:
                text = payload.decode("ascii")
            except UnicodeDecodeError:
                raise GdbProtocolError(payload, "a query must be ASCII") from None
            if head in (b"H", b"T"):  # Hg0, Hc-1, T1: a letter (two for H) and a thread id
                cut = 2 if head == b"H" else 1
                return Query(text[:cut], text[cut:])
            name, _, argument = text.partition(":")
            return Query(name, argument)
    return Unsupported(payload)


def _length(payload: bytes, text: bytes) -> int:
    length = _hex_int(payload, text, "length")
    if length > MAX_MEMORY:
        raise GdbProtocolError(payload, f"length {length:#x} is above {MAX_MEMORY:#x}")
    return length
