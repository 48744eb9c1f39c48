"""Address plans: map each flow's roles (client, server) to IP and MAC addresses at build time.

Records carry roles, not addresses (a model learns "the client", not 10.99.0.7). The plan
decides the addresses, per class, so that what characterises a class survives: one client
hammering one server, or a flood from thousands of spoofed sources.

A pool (per class, role and IP version) is a list of *listed* addresses with flow counts
(hosts that carry several flows, or all hosts when there are few) plus a *fresh* share: the
fraction of flows whose address was seen only once among many, re-drawn uniformly from
``fresh_cidrs``. Learned from data, ``fresh_cidrs`` is the smallest prefix covering those
addresses; from user CIDRs, it is the user's. MACs: the most common client/server pair per
class (only Ethernet output uses them).

Classes missing from the plan use the ``"*"`` entry (learned over all classes). Assignment is
deterministic for a given seed. JSON: ``save``/``load``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import PytrafgenError

PLAN_FORMAT = 1
ALL_CLASSES = "*"
DEFAULT_MAX_LISTED = 64
DEFAULT_CLIENT_MAC = "02:00:00:00:00:01"
DEFAULT_SERVER_MAC = "02:00:00:00:00:02"
_V4_MAPPED = bytes(10) + b"\xff\xff"
ROLES = ("client", "server")


class AddressPlanError(PytrafgenError):
    """An address plan cannot serve a request (no pool for a class/IP version, bad CIDR, bad file)."""


def addr_to_bytes(text: str) -> bytes:
    """16 bytes for an address; IPv4 as IPv4-mapped IPv6."""
    try:
        a = ipaddress.ip_address(text)
    except ValueError as exc:
        raise AddressPlanError(f"bad address {text!r}: {exc}") from None
    return _V4_MAPPED + a.packed if a.version == 4 else a.packed


def bytes_to_addr(b: bytes) -> str:
    b = bytes(b)
    if b[:12] == _V4_MAPPED:
        return str(ipaddress.IPv4Address(b[12:]))
    return str(ipaddress.IPv6Address(b))


def _mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise AddressPlanError(f"bad MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


def _mac_text(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in bytes(b))


def _parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise AddressPlanError(f"bad CIDR {text!r}: {exc}") from None


def _covering_cidr(addresses: np.ndarray, version: int) -> str:
    """Smallest prefix containing every (N,16) address (all of one IP version)."""
    width = 4 if version == 4 else 16
    bits = width * 8
    ints = [int.from_bytes(a[16 - width:].tobytes(), "big") for a in addresses]
    lo, hi = min(ints), max(ints)
    prefix = bits - (lo ^ hi).bit_length()
    network = lo >> (bits - prefix) << (bits - prefix)
    return str(ipaddress.ip_network((network, prefix)) if version == 4
               else ipaddress.IPv6Network((network, prefix)))


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows in sorted order, how often each occurs) of a (N,W) uint8 array; sorts
    rows as 64-bit words (numpy's unique(axis=0) compares byte strings, ~100x slower)."""
    n, width = rows.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :width] = rows
    keys = padded.view(">u8")  # big-endian words sort like the bytes
    order = np.lexsort(keys.T[::-1])
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)]) if n else np.zeros(0, np.int64)
    counts = np.diff(np.r_[starts, n])
    return rows[order[starts]], counts


def _random_in(cidrs: Sequence[str], n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,16) addresses drawn uniformly from the union of ``cidrs`` (a CIDR chosen by its size);
    in IPv4 prefixes up to /30 the network and broadcast addresses are avoided."""
    out = np.zeros((n, 16), np.uint8)
    nets = [_parse_cidr(c) for c in cidrs]
    sizes = np.array([float(net.num_addresses) for net in nets])
    which = rng.choice(len(nets), size=n, p=sizes / sizes.sum())
    for k, net in enumerate(nets):
        idx = np.flatnonzero(which == k)
        if not len(idx):
            continue
        host_bits = net.max_prefixlen - net.prefixlen
        base = np.frombuffer(addr_to_bytes(str(net.network_address)), np.uint8)
        if net.version == 4:
            lo, hi = (1, (1 << host_bits) - 1) if host_bits >= 2 else (0, 1 << host_bits)
            host = rng.integers(lo, hi, size=len(idx), dtype=np.uint64).astype(">u4")
            addrs = np.tile(base, (len(idx), 1))
            addrs[:, 12:] |= host.view(np.uint8).reshape(-1, 4)
        else:
            mask = np.frombuffer(((1 << host_bits) - 1).to_bytes(16, "big"), np.uint8)
            addrs = base | (rng.integers(0, 256, size=(len(idx), 16), dtype=np.uint8) & mask)
        out[idx] = addrs
    return out


@dataclass
class AddressPool:
    """Addresses of one role in one class and IP version (see the module docstring)."""

    listed: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    fresh_count: int = 0
    fresh_cidrs: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.listed and not (self.fresh_count and self.fresh_cidrs)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,16) addresses (possibly a read-only view): listed ones by their counts, fresh ones
        from the CIDRs."""
        listed_total = float(sum(self.counts))
        fresh_total = float(self.fresh_count) if self.fresh_cidrs else 0.0
        if not listed_total:
            return _random_in(self.fresh_cidrs, n, rng)
        table = np.stack([np.frombuffer(addr_to_bytes(a), np.uint8) for a in self.listed])
        p = np.asarray(self.counts, float) / listed_total
        if not fresh_total:
            if len(self.listed) == 1:
                return np.broadcast_to(table[0], (n, 16))
            return table[rng.choice(len(self.listed), size=n, p=p)]
        fresh = rng.random(n) < fresh_total / (fresh_total + listed_total)
        out = np.empty((n, 16), np.uint8)
        out[fresh] = _random_in(self.fresh_cidrs, int(fresh.sum()), rng)
        out[~fresh] = table[rng.choice(len(self.listed), size=int((~fresh).sum()), p=p)]
        return out

    @classmethod
    def learn(cls, addresses: np.ndarray, version: int, max_listed: int) -> AddressPool:
        """Pool of the (N,16) per-flow addresses of one role."""
        if not len(addresses):
            return cls()
        uniq, counts = _unique_rows(addresses)
        order = np.lexsort((np.arange(len(uniq)), -counts))  # most flows first, ties by address
        uniq, counts = uniq[order], counts[order]
        # few hosts: list them all; many: list those carrying several flows, the single-flow
        # hosts (e.g. spoofed sources) become fresh draws
        keep = len(uniq) if len(uniq) <= max_listed else int(min(max_listed, (counts >= 2).sum()))
        pool = cls(listed=[bytes_to_addr(a) for a in uniq[:keep]], counts=[int(c) for c in counts[:keep]])
        if keep < len(uniq):
            pool.fresh_count = int(counts[keep:].sum())
            pool.fresh_cidrs = [_covering_cidr(uniq[keep:], version)]
        return pool

    def to_json(self) -> dict[str, Any]:
        return {"listed": self.listed, "counts": self.counts, "fresh_count": self.fresh_count,
                "fresh_cidrs": self.fresh_cidrs}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AddressPool:
        pool = cls(list(d.get("listed", [])), [int(c) for c in d.get("counts", [])],
                   int(d.get("fresh_count", 0)), list(d.get("fresh_cidrs", [])))
        if len(pool.listed) != len(pool.counts):
            raise AddressPlanError("address pool: 'listed' and 'counts' differ in length")
        for a in pool.listed:
            addr_to_bytes(a)
        for c in pool.fresh_cidrs:
            _parse_cidr(c)
        return pool


@dataclass
class ClassAddresses:
    """Pools per role and IP version for one class, plus its MAC pair."""

    pools: dict[str, dict[int, AddressPool]] = field(default_factory=lambda: {r: {} for r in ROLES})
    client_mac: str = DEFAULT_CLIENT_MAC
    server_mac: str = DEFAULT_SERVER_MAC
    # Median gap between the starts of consecutive flows of this class in the real data: the
    # builder places generated flows as arrivals at this rate (a flood's flows overlap, a
    # benign client's follow each other), since generators model flows one at a time.
    flow_interval_s: float | None = None

    def pool(self, role: str, version: int) -> AddressPool | None:
        p = self.pools.get(role, {}).get(version)
        return None if p is None or p.empty else p


@dataclass
class AddressPlan:
    """Per-class address pools and MACs; see the module docstring."""

    classes: dict[str, ClassAddresses] = field(default_factory=dict)
    max_listed: int = DEFAULT_MAX_LISTED

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def learn(cls, table: Any, flows: Any, flow_labels: Any, classes: Sequence[str],
              max_listed: int = DEFAULT_MAX_LISTED) -> AddressPlan:
        """Learn from a PacketTable + FlowTable; ``flow_labels``: class index per flow."""
        labels = np.asarray(flow_labels)
        version = np.asarray(flows.l3)
        client = np.asarray(flows.client_addr, np.uint8)
        server = np.asarray(flows.server_addr, np.uint8)
        client_mac, server_mac, has_mac = _flow_macs(table, flows)
        plan = cls(max_listed=max_listed)
        groups: list[tuple[str, np.ndarray]] = [(name, labels == k) for k, name in enumerate(classes)]
        groups.append((ALL_CLASSES, np.ones(len(labels), bool)))
        for name, mask in groups:
            if not mask.any():
                continue
            entry = ClassAddresses()
            for v in (4, 6):
                sel = mask & (version == v)
                if sel.any():
                    entry.pools["client"][v] = AddressPool.learn(client[sel], v, max_listed)
                    entry.pools["server"][v] = AddressPool.learn(server[sel], v, max_listed)
            _separate_roles(entry)
            entry.flow_interval_s = _median_flow_interval(table, flows, mask)
            with_mac = mask & has_mac
            if with_mac.any():
                pairs = np.concatenate([client_mac[with_mac], server_mac[with_mac]], axis=1)
                uniq, counts = _unique_rows(pairs)
                top = uniq[int(np.argmax(counts))]
                entry.client_mac, entry.server_mac = _mac_text(top[:6]), _mac_text(top[6:])
            plan.classes[name] = entry
        return plan

    @classmethod
    def from_cidrs(cls, client_cidrs: Iterable[str], server_cidrs: Iterable[str]) -> AddressPlan:
        """A plan that draws every flow's client and server uniformly from the CIDRs."""
        entry = ClassAddresses()
        for role, cidrs in (("client", list(client_cidrs)), ("server", list(server_cidrs))):
            if not cidrs:
                raise AddressPlanError(f"no {role} CIDR given")
            for v in (4, 6):
                mine = [str(_parse_cidr(c)) for c in cidrs if _parse_cidr(c).version == v]
                if mine:
                    entry.pools[role][v] = AddressPool(fresh_count=1, fresh_cidrs=mine)
        return cls(classes={ALL_CLASSES: entry})

    def within(self, client_cidrs: Iterable[str], server_cidrs: Iterable[str], seed: int = 0) -> AddressPlan:
        """This plan moved into the user's CIDRs, keeping its structure: each listed address is
        replaced by a distinct address of the CIDRs (same counts), fresh draws use the CIDRs. An
        IP version without a user CIDR is dropped (so no real address leaks into the output)."""
        rng = np.random.default_rng(seed)
        user = {"client": [_parse_cidr(c) for c in client_cidrs], "server": [_parse_cidr(c) for c in server_cidrs]}
        out = AddressPlan(max_listed=self.max_listed)
        for name, entry in self.classes.items():
            moved = ClassAddresses(client_mac=entry.client_mac, server_mac=entry.server_mac)
            for role in ROLES:
                for v, pool in entry.pools[role].items():
                    cidrs = [str(c) for c in user[role] if c.version == v]
                    if not cidrs or pool.empty:
                        continue
                    listed = _distinct_in(cidrs, len(pool.listed), rng)
                    moved.pools[role][v] = AddressPool(listed, list(pool.counts), pool.fresh_count,
                                                       cidrs if pool.fresh_count else [])
            out.classes[name] = moved
        return out

    # ---- use ----------------------------------------------------------------------------------
    def entry(self, class_name: str) -> ClassAddresses:
        e = self.classes.get(class_name) or self.classes.get(ALL_CLASSES)
        if e is None:
            raise AddressPlanError(f"address plan has no entry for class {class_name!r} and no '*' entry")
        return e

    def assign(self, records: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Addresses and MACs for every flow of ``records``: client_addr, server_addr (F,16),
        client_mac, server_mac (F,6), all uint8."""
        labels = np.asarray(records.flows["label"], np.int64)
        versions = np.asarray(records.flows["ip_version"], np.int64)
        n = len(labels)
        out = {"client_addr": np.empty((n, 16), np.uint8), "server_addr": np.empty((n, 16), np.uint8)}
        entries = [self.entry(name) if (labels == k).any() else None for k, name in enumerate(records.classes)]
        for role in ROLES:
            macs = np.zeros((len(entries), 6), np.uint8)
            for k, e in enumerate(entries):
                if e is not None:
                    macs[k] = np.frombuffer(_mac_bytes(getattr(e, f"{role}_mac")), np.uint8)
            out[f"{role}_mac"] = macs[labels]
        # flows grouped by (class, IP version); each group draws from its pools
        key = labels * 8 + versions
        order = np.argsort(key, kind="stable")
        groups, starts = np.unique(key[order], return_index=True)
        for g, group in enumerate(groups):
            idx = order[starts[g] : starts[g + 1] if g + 1 < len(starts) else n]
            k, v = divmod(int(group), 8)
            entry = entries[k]
            assert entry is not None  # class k has flows in this group, so its entry was looked up
            used: dict[str, AddressPool] = {}
            for role in ROLES:
                pool = entry.pool(role, v)
                if pool is None:
                    fallback = self.classes.get(ALL_CLASSES)
                    pool = fallback.pool(role, v) if fallback else None
                if pool is None:
                    raise AddressPlanError(
                        f"address plan has no IPv{v} {role} addresses for class {records.classes[k]!r}")
                out[f"{role}_addr"][idx] = pool.draw(len(idx), rng)
                used[role] = pool
            _make_distinct(out["client_addr"], out["server_addr"], idx, used["client"], rng)
        return out

    # ---- persistence --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "max_listed": self.max_listed,
            "classes": {
                name: {
                    "client_mac": e.client_mac,
                    "server_mac": e.server_mac,
                    "flow_interval_s": e.flow_interval_s,
                    **{role: {str(v): p.to_json() for v, p in e.pools[role].items()} for role in ROLES},
                }
                for name, e in self.classes.items()
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AddressPlan:
        if d.get("format") != PLAN_FORMAT:
            raise AddressPlanError(f"address plan format {d.get('format')!r} is not {PLAN_FORMAT}")
        plan = cls(max_listed=int(d.get("max_listed", DEFAULT_MAX_LISTED)))
        for name, e in d.get("classes", {}).items():
            interval = e.get("flow_interval_s")
            entry = ClassAddresses(client_mac=e.get("client_mac", DEFAULT_CLIENT_MAC),
                                   server_mac=e.get("server_mac", DEFAULT_SERVER_MAC),
                                   flow_interval_s=None if interval is None else float(interval))
            _mac_bytes(entry.client_mac)
            _mac_bytes(entry.server_mac)
            for role in ROLES:
                entry.pools[role] = {int(v): AddressPool.from_json(p) for v, p in e.get(role, {}).items()}
            _separate_roles(entry)  # plans saved before roles were kept apart
            plan.classes[name] = entry
        return plan

    def save(self, path: str | Path) -> None:
        with atomic_file(path, "w") as fh:
            json.dump(self.to_json(), fh, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> AddressPlan:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise AddressPlanError(f"{path}: cannot read address plan: {exc}") from None
        return cls.from_json(d)


def _separate_roles(entry: ClassAddresses) -> None:
    """Make the listed client and server addresses of each IP version disjoint (in place): a
    host listed in both keeps the role in which it carried more flows (ties: server). A host
    is one role within a class (the side holding the service port is the server), so a flow
    can never be drawn from one host to itself; both roles keep at least one host."""
    for v in set(entry.pools["client"]) & set(entry.pools["server"]):
        client, server = entry.pools["client"][v], entry.pools["server"][v]
        c_count = dict(zip(client.listed, client.counts, strict=True))
        s_count = dict(zip(server.listed, server.counts, strict=True))
        shared = sorted(set(c_count) & set(s_count), key=lambda a: (s_count[a] - c_count[a], a))
        if not shared:
            continue
        to_client = {a for a in shared if c_count[a] > s_count[a]}
        other_clients = len(c_count) - len(shared) + bool(client.fresh_count and client.fresh_cidrs)
        other_servers = len(s_count) - len(shared) + bool(server.fresh_count and server.fresh_cidrs)
        if not other_clients and not to_client:  # the least server-like shared host stays a client
            to_client.add(shared[0])
        if not other_servers and to_client == set(shared):  # the most server-like stays a server
            to_client.discard(shared[-1])
        if (not to_client and not other_clients) or (to_client == set(shared) and not other_servers):
            continue  # one host in both roles and no other: nothing to separate
        for pool, counts, drop in ((client, c_count, set(shared) - to_client), (server, s_count, to_client)):
            keep = [a for a in pool.listed if a not in drop]
            pool.listed, pool.counts = keep, [counts[a] for a in keep]


def _make_distinct(client: np.ndarray, server: np.ndarray, idx: np.ndarray, client_pool: AddressPool,
                   rng: np.random.Generator, tries: int = 8) -> None:
    """Redraw the client address of flows in ``idx`` whose client equals their server (fresh
    draws from overlapping CIDRs, a '*' fallback pool); where the pool offers nothing else,
    the client's lowest address bit is flipped. In place."""
    same = idx[np.all(client[idx] == server[idx], axis=1)]
    for _ in range(tries):
        if not len(same):
            return
        client[same] = client_pool.draw(len(same), rng)
        same = same[np.all(client[same] == server[same], axis=1)]
    if len(same):
        client[same, 15] ^= 1
        # keep clear of .0 and .255 (network and broadcast in an IPv4 /24)
        edge = same[(client[same, 15] == 0) | (client[same, 15] == 255)]
        client[edge, 15] ^= 3


def _median_flow_interval(table: Any, flows: Any, mask: np.ndarray) -> float | None:
    """Median gap (s) between consecutive flow starts among the flows in ``mask``, or None
    when there are fewer than two flows or no timestamps."""
    ts = getattr(table, "ts_ns", None)
    first = getattr(flows, "first_packet", None)
    if ts is None or first is None or int(mask.sum()) < 2:
        return None
    starts = np.sort(np.asarray(ts, np.int64)[np.asarray(first)[mask]])
    return float(np.median(np.diff(starts))) / 1e9


def _distinct_in(cidrs: Sequence[str], n: int, rng: np.random.Generator, rounds: int = 64) -> list[str]:
    """n addresses from the CIDRs, distinct while the CIDRs hold enough (then reused in turn)."""
    seen: dict[bytes, None] = {}
    for _ in range(rounds):
        if len(seen) >= n:
            break
        for a in _random_in(cidrs, n - len(seen), rng):
            seen.setdefault(a.tobytes(), None)
    distinct = list(seen)[:n]
    return [bytes_to_addr(distinct[k % len(distinct)]) for k in range(n)] if distinct else []


def _flow_macs(table: Any, flows: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Client/server MAC per flow from its first packet's Ethernet header (if any)."""
    first = np.asarray(flows.first_packet, np.int64)
    n = len(first)
    has = (np.asarray(table.linktype)[first] == 1) & (np.asarray(table.l3_off)[first] >= 14)
    frame = np.asarray(table.frame_off, np.int64)[first]
    data = np.asarray(table.data)
    client, server = np.zeros((n, 6), np.uint8), np.zeros((n, 6), np.uint8)
    idx = np.flatnonzero(has)
    if len(idx):
        dst = data[frame[idx, None] + np.arange(6)]
        src = data[frame[idx, None] + 6 + np.arange(6)]
        c2s = (np.asarray(flows.direction)[first[idx]] == 0)[:, None]
        client[idx] = np.where(c2s, src, dst)
        server[idx] = np.where(c2s, dst, src)
    return client, server, has


__all__ = ["ALL_CLASSES", "AddressPlan", "AddressPlanError", "AddressPool", "ClassAddresses",
           "addr_to_bytes", "bytes_to_addr"]
