"""A private pair of network namespaces joined by one veth link, created and removed by this run.

Layout of one pair (a /28 taken from ``RUN_RANGE``, a range pytrafgen owns only inside the
namespaces it creates):

* ``<name>c`` (client): veth ``ptg0`` holding ``.1``; the senders' sockets live here.
* ``<name>s`` (server): veth ``ptg1`` holding ``.2``; the target servers run here.
* ``.3``-``.14`` form the *spoof pool*: source addresses for stateless replay that no interface
  holds. The server namespace resolves them (static neighbour entries) to the client veth,
  so the target's answers travel back over the veth and die in the client namespace without
  the client kernel answering them with a RST, as with a spoofing attacker.
* The same layout in IPv6: a /124 of the unique-local ``RUN_RANGE6`` with the same index
  (``::1`` client, ``::2`` server, ``::3``-``::e`` spoof pool), for IPv6 captures. No link-local
  address is generated and duplicate address detection is off, so the pair is usable at once.

Neither namespace has a default route or any route beyond its /28 and /124 (``verify_isolated``
checks), so no packet can leave the pair. Cleanup (processes by PID, then the namespaces)
runs on context exit, on SIGINT/SIGTERM and at interpreter exit; what a SIGKILLed run left
behind (its PID is in the names) the next run removes.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from pytrafgen.errors import ReplayError

RUN_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
RUN_PREFIX = 28
RUN_RANGE6 = ipaddress.IPv6Network("fd74:7067:7266::/112")
RUN_PREFIX6 = 124
NAME_PREFIX = "ptg"
NETNS_DIR = "/var/run/netns"
_CLONE_NEWNET = 0x40000000
_LINK_LOCAL6 = ipaddress.IPv6Network("fe80::/64")
_CLIENT_IF = "ptg0"
_SERVER_IF = "ptg1"


def require_root() -> None:
    """Raise a ReplayError that says what to do when replay cannot create namespaces."""
    if os.geteuid() != 0:
        raise ReplayError(
            "pytrafgen replay needs root: it creates network namespaces, a veth link and raw "
            "sockets (run it as root, e.g. `sudo pytrafgen replay ...`)"
        )
    if shutil.which("ip") is None:
        raise ReplayError("the `ip` command is missing: apt-get install iproute2")


def raise_fd_limit(wanted: int = 16384) -> None:
    """Lift this process's open-file soft limit towards ``wanted`` (within the hard limit), so
    sessions and the targets started from here (they inherit it) are not cut off at 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_ip(*args: str) -> str:
    """Run ``ip ARGS``; a failure becomes a ReplayError carrying ip's own message."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise ReplayError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def existing_namespaces() -> set[str]:
    out = run_ip("-j", "netns", "list").strip()
    return {entry["name"] for entry in json.loads(out)} if out else set()


_PAIR_NAME = re.compile(rf"^{NAME_PREFIX}[0-9a-f]{{3}}p(?P<pid>[0-9]+)[cs]$")


def reap_stale_namespaces() -> list[str]:
    """Delete the namespaces (and kill the processes inside them) of replay runs whose process
    is gone: a SIGKILLed run cannot clean up after itself, so the next run does. Only names of
    pytrafgen's own pattern whose creator PID no longer exists are touched. Returns them."""
    reaped = []
    for ns in sorted(existing_namespaces()):
        match = _PAIR_NAME.match(ns)
        if not match or os.path.exists(f"/proc/{match['pid']}"):
            continue
        with contextlib.suppress(ReplayError, ValueError):
            for pid in run_ip("netns", "pids", ns).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        reaped.append(ns)
    if reaped:
        print(f"pytrafgen replay: removed {len(reaped)} namespaces left by a killed run: {', '.join(reaped)}",
              file=sys.stderr)
    return reaped


def _host_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks configured in the namespace this process runs in (normally the host's)."""
    nets = []
    for link in json.loads(run_ip("-j", "-4", "addr", "show") or "[]"):
        for info in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return nets


@dataclass
class NamespacePair:
    """One client/server namespace pair; use as a context manager."""

    subnet: ipaddress.IPv4Network
    name: str
    created: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def client_ns(self) -> str:
        return f"{self.name}c"

    @property
    def server_ns(self) -> str:
        return f"{self.name}s"

    @property
    def client_addr(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def server_addr(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2

    @property
    def spoof_pool(self) -> list[ipaddress.IPv4Address]:
        hosts = list(self.subnet.hosts())
        return hosts[2:]

    @property
    def subnet6(self) -> ipaddress.IPv6Network:
        """The IPv6 /124 with this pair's subnet index (so parallel runs never share one)."""
        index = (int(self.subnet.network_address) - int(RUN_RANGE.network_address)) >> (32 - RUN_PREFIX)
        base = int(RUN_RANGE6.network_address) + (index << (128 - RUN_PREFIX6))
        return ipaddress.IPv6Network((base, RUN_PREFIX6))

    def client(self, family: int = 4) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The client veth's address of IP version ``family``."""
        return self.client_addr if family == 4 else self.subnet6.network_address + 1

    def server(self, family: int = 4) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The server veth's address of IP version ``family``."""
        return self.server_addr if family == 4 else self.subnet6.network_address + 2

    def spoof(self, family: int = 4) -> list[ipaddress.IPv4Address] | list[ipaddress.IPv6Address]:
        """Spoof-pool addresses of IP version ``family`` (held by no interface)."""
        if family == 4:
            return self.spoof_pool
        base = self.subnet6.network_address
        return [base + k for k in range(3, 15)]

    @property
    def addresses(self) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Every address an interface of this pair holds (what its guard allows)."""
        return [self.server(4), self.client(4), self.server(6), self.client(6)]

    @property
    def server_if(self) -> str:
        return _SERVER_IF

    @property
    def client_if(self) -> str:
        return _CLIENT_IF

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls) -> NamespacePair:
        """Choose a free /28 and unique names, then build the pair (removed again on failure)."""
        require_root()
        reap_stale_namespaces()
        taken = existing_namespaces()
        used_subnets = _host_networks()
        candidates = list(RUN_RANGE.subnets(new_prefix=RUN_PREFIX))
        random.SystemRandom().shuffle(candidates)
        for subnet in candidates:
            index = (int(subnet.network_address) - int(RUN_RANGE.network_address)) >> (32 - RUN_PREFIX)
            # The subnet index is part of the name, so runs in parallel never share a subnet.
            tag = f"{NAME_PREFIX}{index:03x}p"
            name = f"{tag}{os.getpid()}"
            if any(n.startswith(tag) for n in taken) or any(subnet.overlaps(net) for net in used_subnets):
                continue
            pair = cls(subnet=subnet, name=name)
            _LIVE.add(pair)
            try:
                pair._build()
            except BaseException:
                pair.close()
                raise
            return pair
        raise ReplayError(f"no free /{RUN_PREFIX} left in {RUN_RANGE} for a replay run")

    def _build(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                raise ReplayError(f"network namespace {ns!r} already exists; refusing to reuse it")
            run_ip("netns", "add", ns)
            self.created.append(ns)
        subnet_tag = self.name[: self.name.index("p", len(NAME_PREFIX)) + 1]
        rivals = {n for n in existing_namespaces() if n.startswith(subnet_tag) and n not in self.created}
        if rivals:
            raise ReplayError(f"another replay run took {self.subnet} at the same moment "
                              f"({', '.join(sorted(rivals))}); refusing to share it")
        # Created inside the client namespace with its peer inside the server namespace: the
        # link never exists in the host namespace, not even for a moment.
        run_ip("-n", self.client_ns, "link", "add", _CLIENT_IF, "type", "veth",
               "peer", "name", _SERVER_IF, "netns", self.server_ns)
        prefix = self.subnet.prefixlen
        for ns, ifname, addr, addr6 in ((self.client_ns, _CLIENT_IF, self.client_addr, self.client(6)),
                                        (self.server_ns, _SERVER_IF, self.server_addr, self.server(6))):
            # IPv6 only with the pair's own addresses: no link-local address, no router or
            # address autoconfiguration, no duplicate address detection delay.
            for scope in ("all", "default", ifname):
                for key, value in (("addr_gen_mode", "1"), ("accept_dad", "0"), ("accept_ra", "0"),
                                   ("autoconf", "0"), ("forwarding", "0")):
                    self._sysctl(ns, f"net.ipv6.conf.{scope}.{key}", value)
            run_ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "dev", ifname)
            run_ip("-n", ns, "-6", "addr", "add", f"{addr6}/{RUN_PREFIX6}", "dev", ifname, "nodad")
            run_ip("-n", ns, "link", "set", "lo", "up")
            run_ip("-n", ns, "link", "set", ifname, "up")
        client_mac = json.loads(run_ip("-n", self.client_ns, "-j", "link", "show", _CLIENT_IF))[0]["address"]
        server_mac = json.loads(run_ip("-n", self.server_ns, "-j", "link", "show", _SERVER_IF))[0]["address"]
        # Static IPv6 neighbours: the pair needs no neighbour discovery (no link-local addresses).
        run_ip("-n", self.client_ns, "neigh", "replace", str(self.server(6)), "lladdr", server_mac,
               "dev", _CLIENT_IF, "nud", "permanent")
        for own_or_spoofed in [self.client(6), *self.spoof(4), *self.spoof(6)]:
            run_ip("-n", self.server_ns, "neigh", "replace", str(own_or_spoofed), "lladdr", client_mac,
                   "dev", _SERVER_IF, "nud", "permanent")
        self.verify_isolated()

    @staticmethod
    def _sysctl(ns: str, key: str, value: str) -> None:
        path = "/proc/sys/" + key.replace(".", "/")
        with inside(ns), open(path, "w") as fh:
            fh.write(value)

    def set_sysctl(self, role: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl in the ``client`` or ``server`` namespace."""
        self._sysctl(self.client_ns if role == "client" else self.server_ns, key, value)

    def verify_isolated(self) -> None:
        """Both namespaces: no default route, no route outside the run's subnet, only lo + veth."""
        for ns, ifname in ((self.client_ns, _CLIENT_IF), (self.server_ns, _SERVER_IF)):
            for family in ("-4", "-6"):
                routes = json.loads(run_ip("-n", ns, "-j", family, "route", "show", "table", "all") or "[]")
                for route in routes:
                    dst = route.get("dst", "")
                    if dst == "default":
                        raise ReplayError(f"namespace {ns} has a default route; refusing to send")
                    if route.get("type") in ("local", "broadcast", "multicast", "anycast"):
                        continue  # the namespace's own addresses, never a way out
                    net = ipaddress.ip_network(dst, strict=False)
                    inside_pair = net.subnet_of(self.subnet) if net.version == 4 else (
                        # ::1 is the namespace itself; link-local reaches only the veth's other
                        # end, which is this pair's other namespace
                        net.subnet_of(self.subnet6) or net.subnet_of(_LINK_LOCAL6)
                        or (net.network_address.is_loopback and net.prefixlen == 128))
                    if not inside_pair:
                        raise ReplayError(f"namespace {ns} has a route to {dst} outside "
                                          f"{self.subnet} and {self.subnet6}")
            links = {link["ifname"] for link in json.loads(run_ip("-n", ns, "-j", "link", "show"))}
            if links != {"lo", ifname}:
                raise ReplayError(f"namespace {ns} has unexpected interfaces {sorted(links)}")

    def popen(self, role: str, argv: list[str], **kwargs: object) -> subprocess.Popen:
        """Start ``argv`` inside a namespace; ``ip netns exec`` execs it, so the PID is the program's."""
        ns = self.client_ns if role == "client" else self.server_ns
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], start_new_session=True, **kwargs)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace_s: float = 3.0) -> None:
        """Stop one of this pair's processes by its PID: SIGTERM, then SIGKILL after ``grace_s``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace_s)
        if proc in self.processes:
            self.processes.remove(proc)

    def close(self) -> None:
        """Stop this pair's processes (by PID) and delete its namespaces; safe to call twice."""
        for proc in list(self.processes):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()
        _LIVE.discard(self)

    def __enter__(self) -> NamespacePair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __hash__(self) -> int:
        return hash(self.name)


# -- entering a namespace from this process -----------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with the calling *thread* inside namespace ``ns``; sockets created in the
    block stay bound to ``ns`` for their whole life, after the thread has switched back."""
    with open(os.path.join(NETNS_DIR, ns)) as target, open("/proc/thread-self/ns/net") as home:
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise ReplayError(f"cannot enter network namespace {ns}: {os.strerror(ctypes.get_errno())}")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                # Staying in the run's namespace would make later host work land there: stop hard.
                os._exit(70)


# -- cleanup on every exit path ----------------------------------------------------------

_LIVE: set[NamespacePair] = set()
_CLEANUP_LOCK = threading.Lock()


def cleanup_all() -> None:
    """Close every pair this process still holds (atexit and signal path)."""
    with _CLEANUP_LOCK:
        for pair in list(_LIVE):
            pair.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    cleanup_all()
    print(f"pytrafgen replay: stopped by {signal.Signals(signum).name}; its processes and "
          "namespaces are removed", file=sys.stderr)
    # SystemExit, not KeyboardInterrupt: the CLI framework turns the latter into a normal return.
    raise SystemExit(128 + signum)


def install_cleanup_handlers() -> None:
    """Route SIGINT/SIGTERM/SIGHUP through ``cleanup_all`` (main thread only) and register it atexit."""
    atexit.register(cleanup_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _on_signal)
