"""The pcap writer: read back by our reader, by scapy and by tshark (each skipped when absent)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hv_emu.errors import ConfigError
from hv_emu.net.frames import build_udp_frame
from hv_emu.net.pcap import (
    LINKTYPE_ETHERNET,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PcapError,
    PcapRecord,
    PcapWriter,
    read_pcap,
)

T0 = 1_700_000_000_123_456


def frame(port: int, payload: bytes) -> bytes:
    return build_udp_frame(
        src_mac=bytes.fromhex("525400123456"),
        dst_mac=bytes.fromhex("525400c0ffee"),
        src_ip="10.0.2.2",
        dst_ip="10.0.2.250",
        src_port=40000,
        dst_port=port,
        payload=payload,
    )


FRAMES = [frame(0xDB00, b"HVDB" + bytes(60)), frame(53, b"x"), frame(9, bytes(1400))]


def capture(frames: list[bytes], **kw: int) -> bytes:
    buf = io.BytesIO()
    ticks = iter(range(T0, T0 + 10_000_000, 1_000_001))
    writer = PcapWriter(buf, clock_us=lambda: next(ticks), **kw)
    for f in frames:
        writer.write(f)
    assert writer.frames_written == len(frames)
    return buf.getvalue()


def test_header_layout() -> None:
    data = capture([])
    assert len(data) == 24
    magic, major, minor, zone, sigfigs, snaplen, link = struct.unpack("<IHHiIII", data)
    assert (magic, major, minor, zone, sigfigs, link) == (PCAP_MAGIC_US, 2, 4, 0, 0, 1)
    assert snaplen >= 65535
    assert LINKTYPE_ETHERNET == 1


def test_read_back() -> None:
    records = list(read_pcap(io.BytesIO(capture(FRAMES))))
    assert [r.data for r in records] == FRAMES
    assert [r.ts_us for r in records] == [T0, T0 + 1_000_001, T0 + 2_000_002]
    assert all(r.orig_len == len(r.data) for r in records)


def test_explicit_timestamp_and_snaplen() -> None:
    buf = io.BytesIO()
    writer = PcapWriter(buf, snaplen=64, clock_us=lambda: 0)
    writer.write(FRAMES[2], ts_us=5)
    (rec,) = read_pcap(io.BytesIO(buf.getvalue()))
    assert rec == PcapRecord(5, FRAMES[2][:64], len(FRAMES[2]))


def test_big_endian_and_nanosecond_files() -> None:
    head = struct.pack(">IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, 65535, 1)
    rec = struct.pack(">IIII", 10, 2_500, 3, 3) + b"abc"
    (got,) = read_pcap(io.BytesIO(head + rec))
    assert got == PcapRecord(10_000_002, b"abc", 3)


GOOD = capture(FRAMES[:1])
BAD: list[tuple[str, bytes, str]] = [
    ("empty", b"", "global header"),
    ("short header", GOOD[:20], "global header"),
    ("magic", b"\0" * 4 + GOOD[4:], "magic"),
    ("version", GOOD[:4] + struct.pack("<HH", 2, 3) + GOOD[8:], "version"),
    ("linktype", GOOD[:20] + struct.pack("<I", 101) + GOOD[24:], "linktype"),
    ("short record header", GOOD[:30], "record header"),
    ("short record", GOOD[:-1], "record data"),
    ("record over snaplen", GOOD[:32] + struct.pack("<I", 10**9) + GOOD[36:], "incl_len"),
]


@pytest.mark.parametrize(("data", "fld"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_reader_errors(data: bytes, fld: str) -> None:
    with pytest.raises(PcapError) as err:
        list(read_pcap(io.BytesIO(data)))
    assert err.value.field == fld
    assert isinstance(err.value, ConfigError)


def test_create_file_and_bad_path(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    with PcapWriter.create(str(path), clock_us=lambda: T0) as writer:
        writer.write(FRAMES[0])
    with path.open("rb") as stream:
        assert [r.data for r in read_pcap(stream)] == FRAMES[:1]
    with pytest.raises(ConfigError):
        PcapWriter.create(str(tmp_path / "missing" / "cap.pcap"))


def test_scapy_reads_capture(tmp_path: Path) -> None:
    scapy_all = pytest.importorskip("scapy.all")
    path = tmp_path / "cap.pcap"
    path.write_bytes(capture(FRAMES))
    packets = scapy_all.rdpcap(str(path))
    assert [bytes(p) for p in packets] == FRAMES
    assert [p[scapy_all.UDP].dport for p in packets] == [0xDB00, 53, 9]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_capture(tmp_path: Path) -> None:
    path = tmp_path / "cap.pcap"
    path.write_bytes(capture(FRAMES))
    fields = [
        "frame.time_epoch",
        "frame.len",
        "ip.src",
        "ip.dst",
        "udp.dstport",
        "udp.length",
        "ip.checksum.status",
        "udp.checksum.status",
    ]
    cmd = [
        "tshark",
        "-n",
        "-r",
        str(path),
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=,",
    ]
    for name in fields:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split(",") for line in out.splitlines()]
    assert len(rows) == len(FRAMES)
    for i, (row, f) in enumerate(zip(rows, FRAMES, strict=True)):
        ts, flen, src, dst, dport, ulen, ip_ok, udp_ok = row
        assert ts.startswith(f"{(T0 + i * 1_000_001) // 1_000_000}.")
        assert int(ts.split(".")[1][:6]) == (T0 + i * 1_000_001) % 1_000_000
        assert int(flen) == len(f)
        assert (src, dst) == ("10.0.2.2", "10.0.2.250")
        assert int(dport) == [0xDB00, 53, 9][i]
        assert int(ulen) == 8 + [64, 1, 1400][i]
        assert (ip_ok, udp_ok) == ("1", "1")  # 1 = "Good" in Wireshark's checksum status


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_reader_raises_only_pcap_error(tail: bytes) -> None:
    for data in (tail, GOOD[:24] + tail, GOOD + tail):
        try:
            for rec in read_pcap(io.BytesIO(data)):
                assert len(rec.data) <= len(data)
        except PcapError:
            pass
