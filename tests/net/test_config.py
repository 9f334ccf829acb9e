"""The hypervisor's network identity: defaults are sane, user values are checked in one line."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from hv_emu.errors import ConfigError
from hv_emu.net.config import (
    HV_IPV4,
    HV_MAC,
    UPDATE_UDP_PORT,
    NetConfig,
    format_mac,
    parse_ipv4,
    parse_mac,
    parse_port,
)


def test_defaults() -> None:
    cfg = NetConfig()
    assert cfg.hv_mac == HV_MAC and len(HV_MAC) == 6
    assert HV_MAC[0] & 0b11 == 0b10  # unicast, locally administered
    assert cfg.hv_ip == IPv4Address(HV_IPV4) and cfg.hv_ip.is_private
    assert cfg.update_port == UPDATE_UDP_PORT and 49152 <= UPDATE_UDP_PORT <= 65535
    assert IPv4Address("255.255.255.255") in cfg.extra_dsts


def test_mac_round_trip() -> None:
    assert parse_mac("52:54:00:C0:FF:EE") == HV_MAC
    assert parse_mac("52-54-00-c0-ff-ee") == HV_MAC
    assert format_mac(HV_MAC) == "52:54:00:c0:ff:ee"


@pytest.mark.parametrize(
    "text", ["", "52:54:00:c0:ff", "52:54:00:c0:ff:gg", "525400c0ffee", "52:54:00:c0:ff:eee"]
)
def test_bad_mac(text: str) -> None:
    with pytest.raises(ConfigError, match="bad MAC"):
        parse_mac(text)


def test_ipv4_and_port() -> None:
    assert parse_ipv4("10.0.2.15") == IPv4Address("10.0.2.15")
    assert parse_port("0", allow_zero=True) == 0 and parse_port("65535") == 65535
    for bad in ("10.0.2", "::1", "localhost", "10.0.2.256"):
        with pytest.raises(ConfigError, match="bad IPv4"):
            parse_ipv4(bad)
    for bad_port in ("0", "65536", "-1", "x", ""):
        with pytest.raises(ConfigError, match="bad port"):
            parse_port(bad_port)


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0662", "\uff11\uff12", "+80", " 80", "8_0"])
def test_a_port_is_ascii_digits_only(port: str) -> None:
    """Superscripts pass ``str.isdigit`` and then fail ``int``; other scripts' digits and
    full-width ones pass ``int``: every one of them is a bad port, in one line."""
    with pytest.raises(ConfigError, match="bad port"):
        parse_port(port)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hv_mac": b"\x01" * 6},
        {"hv_mac": b"\x02" * 5},
        {"update_port": 0},
        {"update_port": 70000},
        {"hv_ip": IPv4Address("239.1.1.1")},
        {"hv_ip": IPv4Address("0.0.0.0")},
        {"hv_ip": IPv4Address("255.255.255.255")},
    ],
)
def test_bad_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        NetConfig(**kwargs)  # type: ignore[arg-type]
