"""Classic libpcap capture files: the writer behind ``--capture FILE.pcap`` and a checking reader.

Models: the capture tap of the hypervisor's switch. Every frame the hypervisor sees (from the wire,
from the guest, its own) is appended as one record, so Wireshark/tshark can show what the guest
and the update receiver were offered.

Follows: the libpcap file format (draft-ietf-opsawg-pcap; tcpdump.org/manpages/pcap-savefile.5):
a 24-byte global header (magic 0xa1b2c3d4 = microsecond timestamps, version 2.4, snaplen, link
type 1 = LINKTYPE_ETHERNET / DLT_EN10MB) and a 16-byte record header per frame (seconds,
microseconds, captured length, original length). Written little-endian, as libpcap does on x86.

No dependency: the format is two ``struct.Struct``s; dpkt's ``pcap.Writer`` does the same in more
code, and owning it lets the reader check every length before allocating.

Leaves out: pcapng (per-packet comments), other link types, FCS. The reader also accepts
big-endian files and nanosecond magic (0xa1b23c4d), reporting microseconds.

Who controls the input: the writer's frames come from the network and the guest (any bytes; only
their length is used, clipped to ``snaplen``). The reader's file is the user's (tests, tooling).
Threat table (reader):

| Threat                                    | Mitigation                                         |
|-------------------------------------------|----------------------------------------------------|
| Truncated header or record                | ``PcapError`` naming the offset, nothing yielded   |
| Record length larger than the snaplen/cap | checked before ``read`` allocates                  |
| Unknown magic, version or link type       | ``PcapError``                                      |
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from hv_emu.errors import ConfigError

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_VERSION = (2, 4)
LINKTYPE_ETHERNET = 1
#: Largest frame kept whole (an IPv4 datagram of 65535 bytes plus Ethernet and a VLAN tag).
DEFAULT_SNAPLEN = 65535 + 18
#: The reader refuses records above this, whatever the file's snaplen says (libpcap: 256 KiB).
MAX_RECORD = 262144

_GLOBAL = struct.Struct("IHHiIII")  # magic, major, minor, thiszone, sigfigs, snaplen, linktype
_RECORD = struct.Struct("IIII")  # ts_sec, ts_usec, incl_len, orig_len


class PcapError(ConfigError):
    """A capture file that does not parse; carries the byte offset and the bad field."""

    def __init__(self, offset: int, fld: str, expected: str, got: str) -> None:
        self.offset = offset
        self.field = fld
        self.expected = expected
        self.got = got
        super().__init__(f"pcap at byte {offset}: {fld}: expected {expected}, got {got}")


@dataclass(frozen=True)
class PcapRecord:
    """One captured frame: timestamp in microseconds since the epoch, and its bytes."""

    ts_us: int
    data: bytes
    orig_len: int


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


class PcapWriter:
    """Appends Ethernet frames to ``stream`` as a classic pcap file (header written at once)."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        clock_us: Callable[[], int] = _wall_clock_us,
    ) -> None:
        if not 0 < snaplen <= MAX_RECORD:
            raise ValueError(f"snaplen {snaplen} not in 1..{MAX_RECORD}")
        self._stream = stream
        self._snaplen = snaplen
        self._clock_us = clock_us
        self.frames_written = 0
        major, minor = PCAP_VERSION
        stream.write(
            struct.pack("<" + _GLOBAL.format, PCAP_MAGIC_US, major, minor, 0, 0, snaplen, 1)
        )

    @classmethod
    def create(
        cls,
        path: str,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        clock_us: Callable[[], int] = _wall_clock_us,
    ) -> PcapWriter:
        """Open ``path`` for writing (truncating it); ``ConfigError`` if it cannot be opened."""
        try:
            stream = open(path, "wb")  # noqa: SIM115 - owned by the writer, closed by close()
        except OSError as err:
            raise ConfigError(f"cannot write capture file {path}: {err.strerror}") from None
        return cls(stream, snaplen=snaplen, clock_us=clock_us)

    def write(self, frame: bytes, ts_us: int | None = None) -> None:
        """Append one frame (clipped to the snaplen), stamped now unless ``ts_us`` is given."""
        ts = self._clock_us() if ts_us is None else ts_us
        kept = frame[: self._snaplen]
        sec, usec = divmod(max(ts, 0), 1_000_000)
        header = struct.pack("<" + _RECORD.format, sec & 0xFFFFFFFF, usec, len(kept), len(frame))
        self._stream.write(header + bytes(kept))
        self.frames_written += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_exact(stream: BinaryIO, n: int, offset: int, what: str) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise PcapError(offset, what, f"{n} bytes", f"{len(data)} bytes (truncated file)")
    return data


def read_pcap(stream: BinaryIO) -> Iterator[PcapRecord]:
    """Yield the records of a classic pcap file of Ethernet frames, checking every length."""
    head = _read_exact(stream, _GLOBAL.size, 0, "global header")
    for order in ("<", ">"):
        magic = struct.unpack(order + "I", head[:4])[0]
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            break
    else:
        raise PcapError(0, "magic", f"{PCAP_MAGIC_US:#x}", f"{head[:4].hex()}")
    glob = struct.Struct(order + _GLOBAL.format)
    rec = struct.Struct(order + _RECORD.format)
    _, major, minor, _, _, snaplen, linktype = glob.unpack(head)
    if (major, minor) != PCAP_VERSION:
        raise PcapError(4, "version", "2.4", f"{major}.{minor}")
    if linktype & 0x0FFFFFFF != LINKTYPE_ETHERNET:
        raise PcapError(20, "linktype", str(LINKTYPE_ETHERNET), str(linktype))
    limit = min(max(snaplen, 1), MAX_RECORD)
    per_sec = 1_000 if magic == PCAP_MAGIC_NS else 1
    offset = _GLOBAL.size
    while True:
        raw = stream.read(rec.size)
        if not raw:
            return
        if len(raw) != rec.size:
            raise PcapError(offset, "record header", f"{rec.size} bytes", f"{len(raw)} bytes")
        sec, frac, incl, orig = rec.unpack(raw)
        if incl > limit:
            raise PcapError(offset + 8, "incl_len", f"<= {limit}", str(incl))
        data = _read_exact(stream, incl, offset + rec.size, "record data")
        yield PcapRecord(sec * 1_000_000 + frac // per_sec, data, orig)
        offset += rec.size + incl
