"""The replay destination guard refuses everything outside the run's own namespaces (no root needed)."""

from __future__ import annotations

import ipaddress

import pytest

from pytrafgen.errors import ReplayError
from pytrafgen.replay import netns
from pytrafgen.replay.guard import DestinationGuard, parse_address

# A run's /28 as NamespacePair lays it out: .1 client, .2 server, .3-.14 spoof pool.
RUN = ipaddress.IPv4Network("10.213.7.16/28")
CLIENT, SERVER, SPOOFED = RUN.network_address + 1, RUN.network_address + 2, RUN.network_address + 5
OTHER_RUN_SERVER = ipaddress.IPv4Address("10.213.9.34")  # another run's namespace


@pytest.fixture
def guard() -> DestinationGuard:
    return DestinationGuard([SERVER, CLIENT])


@pytest.mark.parametrize("outside", [
    "8.8.8.8",  # public
    "1.1.1.1",
    "192.168.1.1",  # private ranges the host may route to
    "172.16.0.1",
    "10.0.0.1",
    str(OTHER_RUN_SERVER),  # another namespace's address
    str(SPOOFED),  # inside the run's subnet but held by no interface
    str(RUN.broadcast_address),
    "2001:4860:4860::8888",  # IPv6 public
    "fe80::1",  # IPv6 link-local
    "fd00::2",  # IPv6 unique-local
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "0.0.0.0",
])
def test_guard_refuses_outside_destinations(guard: DestinationGuard, outside: str) -> None:
    with pytest.raises(ReplayError, match="refused destination"):
        guard.check(outside)
    assert not guard.is_allowed(outside)


def test_guard_refuses_raw_address_bytes_from_a_capture(guard: DestinationGuard) -> None:
    # PacketTable rows hold addresses as 16 bytes, IPv4 mapped into IPv6.
    mapped = ipaddress.IPv6Address("::ffff:10.99.0.1").packed
    with pytest.raises(ReplayError):
        guard.check(mapped)
    assert guard.check(ipaddress.IPv6Address(f"::ffff:{SERVER}").packed) == SERVER


def test_guard_allows_only_the_run_addresses_and_loopback(guard: DestinationGuard) -> None:
    assert guard.check(str(SERVER)) == SERVER
    assert guard.check(CLIENT.packed) == CLIENT
    assert guard.check("127.0.0.1").is_loopback
    assert guard.check("::1").is_loopback
    assert guard.allowed == frozenset({SERVER, CLIENT})


def test_guard_refuses_garbage_and_an_empty_guard_refuses_everything() -> None:
    empty = DestinationGuard()
    with pytest.raises(ReplayError, match="only addresses of the namespaces"):
        empty.check(str(SERVER))
    with pytest.raises(ReplayError, match="not an IP address"):
        empty.check("example.com")
    with pytest.raises(ReplayError):
        empty.check(b"\x01\x02\x03")


def test_guard_cannot_be_widened_to_a_public_address() -> None:
    with pytest.raises(ReplayError, match="not a private namespace address"):
        DestinationGuard(["8.8.8.8"])


def test_parse_address_unwraps_ipv4_mapped() -> None:
    assert parse_address("::ffff:10.213.7.18") == ipaddress.IPv4Address("10.213.7.18")
    assert parse_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")


def test_replay_says_it_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(ReplayError, match="needs root"):
        netns.require_root()
    with pytest.raises(ReplayError, match="needs root"):
        netns.NamespacePair.create()


def test_run_subnets_come_from_the_owned_range() -> None:
    pair = netns.NamespacePair(subnet=RUN, name="ptgtest")
    assert pair.client_addr == CLIENT and pair.server_addr == SERVER
    assert pair.spoof_pool[0] == RUN.network_address + 3 and pair.spoof_pool[-1] == RUN.network_address + 14
    assert all(a in RUN for a in pair.spoof_pool) and CLIENT not in pair.spoof_pool
    assert RUN.subnet_of(netns.RUN_RANGE)
