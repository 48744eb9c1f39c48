"""Client ports that no reader takes for a service's."""

from __future__ import annotations

import numpy as np

# Ports above 1023 that dissectors (Wireshark's among them) read as a service whichever side
# holds them: DNS-SD/mDNS, LLMNR, SSDP, MQTT, CoAP, the HTTP alternates, STUN, IPsec NAT-T, ...
SERVICE_PORTS = frozenset((1194, 1701, 1812, 1813, 1883, 1900, 3478, 4500, 5060, 5353, 5355, 5683, 8000,
                           8008, 8080, 8883, 8888))
EPHEMERAL_PORTS = (32768, 61000)  # Linux's default ip_local_port_range (as the builder draws)


def conform_client_ports(flows: dict[str, np.ndarray], counts: dict[str, int]) -> np.ndarray:
    """The client-port column with every TCP/UDP client port that is a service's (a system port,
    below 1024, or one of ``SERVICE_PORTS``) other than the flow's own server port moved into
    the ephemeral range: a reader picks the dissector by port and would read such a flow as
    that service (a CoAP request from port 5353 reads as mDNS). The new port is a function of
    the old one and the flow, so the same sample builds the same capture."""
    port = flows["client_port"].copy()
    transport = np.isin(flows["proto"], (6, 17))
    service = (port < 1024) | np.isin(port, np.fromiter(SERVICE_PORTS, np.int64, len(SERVICE_PORTS)))
    moved = np.flatnonzero(transport & service & (port != flows["server_port"]))
    low, high = EPHEMERAL_PORTS
    port[moved] = (low + (port[moved].astype(np.int64) * 7919 + moved) % (high - low)).astype(port.dtype)
    if len(moved):
        counts["client_ports_moved"] = counts.get("client_ports_moved", 0) + len(moved)
    return port
