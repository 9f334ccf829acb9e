"""The network options of ``hv-emu run``: the guest NIC's backend, the capture file, and the
hypervisor's own MAC, IPv4 address and update port.

Models: the user's side of the network configuration, as QEMU's ``-netdev``/``-nic`` options are
for a VM: ``--net udp:LOCAL_HOST:PORT[,peer=HOST:PORT]`` or ``--net mcast:GROUP:PORT`` gives the
guest a NIC (none without it), ``--capture FILE.pcap`` records every frame through the hypervisor's
switch, ``--hv-mac``, ``--hv-ip`` and ``--update-port`` set the identity the switch intercepts for
(defaults in ``hv_emu/layout.py``), ``--guest-mac`` the card's address.

Follows: ``hv_emu/net/backends.py`` (the spec grammar), ``hv_emu/net/config.py`` (validation).

Leaves out: more than one NIC, IPv6.

The user controls every value; each bad one is a ``ConfigError`` naming the option (one line and
exit status 2 from the CLI).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from hv_emu.errors import ConfigError
from hv_emu.layout import GUEST_MAC, HV_IPV4, HV_MAC, UPDATE_UDP_PORT
from hv_emu.machine import MachineConfig
from hv_emu.net.backends import parse_net_spec
from hv_emu.net.config import NetConfig, format_mac, parse_ipv4, parse_mac, parse_port
from hv_emu.usage import Once


def add_arguments(run: argparse.ArgumentParser) -> None:
    """Add the network options to ``hv-emu run``'s parser (values are checked by ``apply``)."""
    group = run.add_argument_group("network (the guest gets a NIC only with --net)")
    group.add_argument("--net", metavar="SPEC",
                       help="udp:LOCAL_HOST:PORT[,peer=HOST:PORT] (QEMU -netdev dgram framing) "
                            "or mcast:GROUP:PORT (a hub shared by several hosts)")  # fmt: skip
    group.add_argument("--capture", type=Path, action=Once, metavar="FILE.pcap",
                       help="record every frame through the hypervisor's switch (pcap)")
    group.add_argument("--hv-mac", default=format_mac(HV_MAC), metavar="MAC",
                       help="the hypervisor's own MAC (default %(default)s)")
    group.add_argument("--hv-ip", default=HV_IPV4, metavar="IPV4",
                       help="the hypervisor's own IPv4 address (default %(default)s)")
    group.add_argument("--update-port", default=str(UPDATE_UDP_PORT), metavar="PORT",
                       help="the UDP port of signature updates (default %(default)s)")
    group.add_argument("--guest-mac", default=format_mac(GUEST_MAC), metavar="MAC",
                       help="the guest NIC's MAC (default %(default)s)")


def apply(args: argparse.Namespace, config: MachineConfig) -> MachineConfig:
    """``config`` with the network options of ``args``; ``ConfigError`` for a bad value."""
    if args.net is None:
        if args.capture is not None:
            raise ConfigError("--capture needs --net: without a network there is nothing to record")
        return config
    net_config = NetConfig(
        hv_mac=parse_mac(args.hv_mac),
        hv_ip=parse_ipv4(args.hv_ip, "--hv-ip"),
        update_port=parse_port(args.update_port, "--update-port"),
    )
    return replace(
        config, net=parse_net_spec(args.net), net_config=net_config,
        guest_mac=parse_mac(args.guest_mac), capture=args.capture,
    )  # fmt: skip
