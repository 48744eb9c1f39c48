"""The destination guard: the one check every send path makes before a packet or connection.

A guard holds the addresses of the namespaces *this run* created (the client and server veth
addresses of each ``NamespacePair``) and allows nothing else but loopback, which inside a
namespace reaches only that namespace's own stack. Spoof-pool addresses, other runs'
namespaces, the host, private ranges and every IPv6 address outside ``::1`` are refused with a
``ReplayError``. The guard is deliberately a separate, dependency-free object so that tests can
prove its refusals without root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pytrafgen.errors import ReplayError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressLike = str | bytes | Address


def parse_address(addr: AddressLike) -> Address:
    """Accept text, 4/16 raw bytes (PacketTable rows are IPv4-mapped IPv6) or an address object;
    an IPv4-mapped IPv6 address is treated as the IPv4 address it carries."""
    try:
        if isinstance(addr, (bytes, bytearray, memoryview)):
            parsed: Address = ipaddress.ip_address(bytes(addr))
        elif isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            parsed = addr
        else:
            parsed = ipaddress.ip_address(str(addr).split("%", 1)[0])
    except ValueError as exc:
        raise ReplayError(f"replay refused: {addr!r} is not an IP address") from exc
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


class DestinationGuard:
    """Allows exactly the registered namespace addresses and loopback."""

    def __init__(self, allowed: Iterable[AddressLike] = ()) -> None:
        self._allowed: set[Address] = set()
        for addr in allowed:
            self.allow(addr)

    def allow(self, addr: AddressLike) -> None:
        parsed = parse_address(addr)
        if not (parsed.is_private or parsed.is_loopback):
            # A namespace address is always from pytrafgen's private run range; anything else
            # here would mean a bug is about to widen the guard to a real network.
            raise ReplayError(f"replay refused to allow {parsed}: not a private namespace address")
        self._allowed.add(parsed)

    @property
    def allowed(self) -> frozenset[Address]:
        return frozenset(self._allowed)

    def is_allowed(self, addr: AddressLike) -> bool:
        try:
            parsed = parse_address(addr)
        except ReplayError:
            return False
        return parsed.is_loopback or parsed in self._allowed

    def check(self, addr: AddressLike) -> Address:
        """Return the parsed address, or raise ReplayError naming it when it is not allowed."""
        parsed = parse_address(addr)
        if parsed.is_loopback or parsed in self._allowed:
            return parsed
        allowed = ", ".join(sorted(map(str, self._allowed))) or "none"
        raise ReplayError(
            f"replay refused destination {parsed}: only addresses of the namespaces this run "
            f"created ({allowed}) or loopback may be sent to"
        )
