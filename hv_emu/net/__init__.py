"""The hypervisor's network path, below the update protocol.

Models: the wire side of a BitVisor-style thin hypervisor: ``frames`` parses and builds Ethernet II
/ IPv4 / UDP frames (with ``headers``: each header and the checksum), ``intercept`` decides where
each frame goes (``classify``); ``switch`` is the netapi-style module between the host backend and
the guest NIC (interception, egress filter, cut-off, capture tap);
``backends`` carries raw frames over UDP sockets as QEMU ``-netdev dgram`` / ``socket,mcast=`` do;
``pcap`` writes the ``--capture`` file; ``config`` holds the hypervisor's MAC, IPv4 and update port;
``attachment`` puts it together for a machine (NIC, switch, backend, receiver and the I/O thread);
``recvmmsg`` reads a batch of datagrams with one system call and ``triage`` judges it by array
operations (the update port's drops), handing the rest on in order.

Follows: IEEE 802.3, IEEE 802.1Q, RFC 791, RFC 768, RFC 1071, the libpcap file format, QEMU
net/dgram.c framing (see each module).

Leaves out: IPv6, TCP, IPv4 reassembly, an ARP cache. Network controls: every frame; see each
module's threat table. No names are re-exported: import from the submodules.
"""
