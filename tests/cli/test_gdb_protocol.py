"""The GDB remote protocol codec: framing, checksums, escaping, and command parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hv_emu.debug.gdb_protocol import (
    MAX_MEMORY,
    MAX_PACKET,
    Ack,
    Breakpoint,
    Continue,
    Corrupt,
    Detach,
    GdbProtocolError,
    Interrupt,
    Kill,
    Nack,
    Packet,
    PacketReader,
    Query,
    QueryHalt,
    ReadMemory,
    ReadRegister,
    ReadRegisters,
    Step,
    Unsupported,
    WriteMemory,
    WriteRegister,
    WriteRegisters,
    encode_packet,
    parse_command,
)


def test_encode_matches_the_manuals_examples() -> None:
    # The GDB manual's E.1: "$packet-data#checksum", the sum of the data's bytes modulo 256.
    assert encode_packet(b"OK") == b"$OK#9a"
    assert encode_packet(b"") == b"$#00"
    # '#', '$', '}' and '*' are escaped as '}' followed by the byte XOR 0x20.
    assert encode_packet(b"a#b") == b"$a}\x03b#" + b"%02x" % ((0x61 + 0x7D + 0x03 + 0x62) & 0xFF)


def test_reader_splits_acks_interrupts_noise_and_packets() -> None:
    reader = PacketReader()
    frames = reader.feed(b"+noise\x03$g#67-$m10,4#")  # m10,4 sums to 0x2e
    assert frames == [Ack(), Interrupt(), Packet(b"g"), Nack()]
    assert reader.feed(b"2") == []  # the checksum may arrive a byte at a time
    assert reader.feed(b"e") == [Packet(b"m10,4")]


def test_a_bad_checksum_or_an_overlong_packet_is_corrupt_not_an_error() -> None:
    reader = PacketReader()
    assert reader.feed(b"$g#00") == [Corrupt("checksum b'00', computed 67")]
    assert isinstance(reader.feed(b"$g#zz")[0], Corrupt)
    assert isinstance(reader.feed(b"$g#+7")[0], Corrupt)
    body = b"x" * (2 * MAX_PACKET + 10)
    assert isinstance(reader.feed(b"$" + body + b"#00")[0], Corrupt)
    assert reader.feed(b"$?#3f") == [Packet(b"?")]  # and the reader goes on


@pytest.mark.parametrize(
    ("payload", "command"),
    [
        (b"?", QueryHalt()),
        (b"g", ReadRegisters()),
        (b"G0102", WriteRegisters(b"\x01\x02")),
        (b"p10", ReadRegister(16)),
        (b"P10=0810000000000000", WriteRegister(16, (0x1008).to_bytes(8, "little"))),
        (b"m100000,10", ReadMemory(0x100000, 16)),
        (b"M200000,2:abcd", WriteMemory(0x200000, b"\xab\xcd")),
        (b"Z0,100009,1", Breakpoint(True, 0, 0x100009)),
        (b"z1,100009,1", Breakpoint(False, 1, 0x100009)),
        (b"s", Step(None)),
        (b"c100000", Continue(0x100000)),
        (b"k", Kill()),
        (b"D;1", Detach()),
        (b"qSupported:multiprocess+;swbreak+", Query("qSupported", "multiprocess+;swbreak+")),
        (b"Hg0", Query("Hg", "0")),
        (b"T1", Query("T", "1")),
        (b"vMustReplyEmpty", Unsupported(b"vMustReplyEmpty")),
        (b"", Unsupported(b"")),
    ],
)
def test_commands_parse_into_values(payload: bytes, command: object) -> None:
    assert parse_command(payload) == command


@pytest.mark.parametrize(
    "payload",
    [b"pxyz", b"P10", b"P10=abc", b"m100000", b"m1,zz", b"M1,2:ab", b"Z0,1", b"G0", b"cZZ",
     b"m0,%x" % (MAX_MEMORY + 1), b"m" + b"f" * 17 + b",1", b"q\xff"],
)
def test_malformed_commands_raise_the_documented_error(payload: bytes) -> None:
    with pytest.raises(GdbProtocolError) as err:
        parse_command(payload)
    assert err.value.payload == payload and err.value.reason


@given(st.binary(max_size=300))
def test_any_bytes_fed_to_the_reader_give_frames_never_an_exception(data: bytes) -> None:
    frames = PacketReader().feed(data)
    assert all(isinstance(f, Packet | Ack | Nack | Interrupt | Corrupt) for f in frames)


@given(st.binary(max_size=MAX_PACKET), st.integers(min_value=1, max_value=64))
def test_every_payload_survives_encoding_in_any_chunking(payload: bytes, chunk: int) -> None:
    wire = encode_packet(payload)
    reader = PacketReader()
    frames = []
    for i in range(0, len(wire), chunk):
        frames += reader.feed(wire[i : i + chunk])
    assert frames == [Packet(payload)]


@given(st.binary(max_size=200))
def test_parse_command_raises_only_gdb_protocol_error(payload: bytes) -> None:
    with contextlib.suppress(GdbProtocolError):
        parse_command(payload)


@given(st.sampled_from(b"gGpPmMZzsckDqQHT?"), st.binary(max_size=60))
def test_parse_command_of_known_letters_raises_only_gdb_protocol_error(head: int,
                                                                       rest: bytes) -> None:
    with contextlib.suppress(GdbProtocolError):
        parse_command(bytes((head,)) + rest)
