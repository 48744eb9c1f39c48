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


# -- IPv6 and the UDP / request-response senders ---------------------------------------------

def test_ipv6_pair_addresses_come_from_the_owned_ula_range() -> None:
    pair = netns.NamespacePair(subnet=RUN, name="ptgtest")
    assert pair.subnet6.subnet_of(netns.RUN_RANGE6) and pair.subnet6.prefixlen == netns.RUN_PREFIX6
    assert pair.client(6) == pair.subnet6.network_address + 1 and pair.server(6) == pair.subnet6.network_address + 2
    assert all(a in pair.subnet6 for a in pair.spoof(6)) and pair.client(6) not in pair.spoof(6)
    other = netns.NamespacePair(subnet=ipaddress.IPv4Network("10.213.9.32/28"), name="ptgother")
    assert not other.subnet6.overlaps(pair.subnet6)  # another subnet index, another /124


def test_guard_allows_the_pairs_ipv6_addresses_and_nothing_else() -> None:
    pair = netns.NamespacePair(subnet=RUN, name="ptgtest")
    other = netns.NamespacePair(subnet=ipaddress.IPv4Network("10.213.9.32/28"), name="ptgother")
    guard = DestinationGuard(pair.addresses)
    assert guard.check(str(pair.server(6))) == pair.server(6)
    for outside in (pair.spoof(6)[0], other.server(6), pair.subnet6.broadcast_address, "fd74:7067:7266::1:2",
                    "2001:db8::1", "ff02::1"):
        with pytest.raises(ReplayError, match="refused destination"):
            guard.check(outside)


def _unbuilt_pair() -> netns.NamespacePair:
    # Never created: a send path that did not consult the guard first would fail differently
    # (no such namespace), so a "refused destination" proves the guard ran before anything else.
    return netns.NamespacePair(subnet=RUN, name="ptgunbuilt")


@pytest.mark.parametrize("family", [4, 6])
def test_udp_and_ipv6_send_paths_check_the_guard_first(family: int) -> None:
    from pytrafgen.replay.clients import HttpProbe, MqttSubscriber, coap_probe
    from pytrafgen.replay.senders import Bounds, Exchange, exchange_datagrams, replay_sessions, send_stateless

    pair, empty, bounds = _unbuilt_pair(), DestinationGuard(), Bounds()
    calls = [
        lambda: send_stateless(pair, empty, [], bounds, family=family, loop=True),
        lambda: replay_sessions(pair, empty, [], None, bounds, family),
        lambda: exchange_datagrams(pair, empty, [Exchange(0.0, [(0.0, b"x")])], 5683, bounds, family),
        lambda: coap_probe(pair, empty, 5683, 0.1, family),
        lambda: HttpProbe(pair, empty, 80, family),
        lambda: MqttSubscriber(pair, empty, 1883, family),
    ]
    for call in calls:
        with pytest.raises(ReplayError, match="refused destination"):
            call()
