"""The hypervisor's own network identity and the update port: defaults and their validation.

Models: what BitVisor takes from ``config.ip`` and compiles in for its network services: the
hypervisor's MAC and IPv4 address (the guest never owns them), the UDP port of signature updates,
and the extra destinations (broadcast, a multicast group) on which the update carousel may arrive.

Follows: IEEE 802 (48-bit MACs; the locally administered bit, QEMU's 52:54:00 prefix), RFC 1918
(private addresses), RFC 6335 (a port from the dynamic range, 49152-65535, so it clashes with no
IANA-assigned service).

Leaves out: DHCP (the address is static), IPv6, netmasks and subnet broadcast (add the subnet
broadcast to ``extra_dsts`` when the carousel uses it).

Network controls: nothing here; the user controls the values through the CLI (``ConfigError`` on a
bad one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address

from hv_emu.errors import ConfigError
from hv_emu.layout import BROADCAST_IPV4, HV_IPV4, HV_MAC, UPDATE_UDP_PORT


def parse_mac(text: str) -> bytes:
    """``aa:bb:cc:dd:ee:ff`` (or with ``-``) to 6 bytes; ``ConfigError`` otherwise."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ConfigError(f"bad MAC address {text!r}: expected six hex pairs as 52:54:00:12:34:56")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ConfigError(f"bad MAC address {text!r}: not hexadecimal") from None


def format_mac(mac: bytes) -> str:
    """6 bytes to ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in mac)


def parse_ipv4(text: str, what: str = "IPv4 address") -> IPv4Address:
    """A dotted-quad IPv4 address; ``ConfigError`` naming ``what`` otherwise."""
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise ConfigError(f"bad {what} {text!r}: expected a dotted quad like 10.0.2.15") from None


def parse_port(text: str, what: str = "port", *, allow_zero: bool = False) -> int:
    """A decimal UDP port (1-65535, or 0 = any when ``allow_zero``); ``ConfigError`` otherwise.
    ASCII digits only: ``str.isdigit`` takes superscripts (which ``int`` refuses) and ``int``
    takes other scripts' digits."""
    low = 0 if allow_zero else 1
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= 0xFFFF:
        raise ConfigError(f"bad {what} {text!r}: expected a number from {low} to 65535")
    return int(text)


@dataclass(frozen=True)
class NetConfig:
    """The hypervisor's identity on the network, as the switch and the update receiver use it."""

    hv_mac: bytes = HV_MAC
    hv_ip: IPv4Address = IPv4Address(HV_IPV4)  # noqa: RUF009 - immutable value
    update_port: int = UPDATE_UDP_PORT
    #: Other destinations whose update-port datagrams are the hypervisor's (broadcast, multicast).
    extra_dsts: frozenset[IPv4Address] = field(
        default_factory=lambda: frozenset({IPv4Address(BROADCAST_IPV4)})
    )
    #: Answer ARP who-has for ``hv_ip`` (RFC 826), so ordinary IP stacks can reach the hypervisor.
    answer_arp: bool = True

    def __post_init__(self) -> None:
        if len(self.hv_mac) != 6 or self.hv_mac[0] & 1:
            raise ConfigError(f"hypervisor MAC {self.hv_mac.hex()} is not a unicast 6-byte MAC")
        if not 1 <= self.update_port <= 0xFFFF:
            raise ConfigError(f"update port {self.update_port} is not in 1..65535")
        ip = self.hv_ip
        if ip.is_multicast or ip.is_unspecified or ip == IPv4Address(BROADCAST_IPV4):
            raise ConfigError(f"hypervisor IPv4 {self.hv_ip} must be a unicast address")
