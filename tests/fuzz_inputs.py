"""Turns a fuzz harness input (csrc/fuzz/fuzz_*.cpp) into the arguments of the matching
Python-facing call, reading the bytes exactly as the harness does, so that
tests/test_fuzz_regressions.py can replay every saved crash through the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS
from pytrafgen.tokenizer.vocab import AppProtocol, Vocabulary


@dataclass
class ByteReader:
    """The harnesses' `Bytes`: little-endian reads that yield zeros past the end."""

    data: bytes
    pos: int = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.u8() | self.u8() << 8

    def u32(self) -> int:
        return self.u16() | self.u16() << 16

    def u64(self) -> int:
        return sum(self.u8() << (8 * k) for k in range(8))

    def span(self, sel: int) -> int:
        return (self.u32() << 16 | self.u16()) if sel & 0xF0 == 0xF0 else self.u8()


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def flows_args(data: bytes) -> dict[str, Any]:
    """fuzz_flows input → keyword arguments of _core.assemble_flows."""
    r = ByteReader(data)
    mode = r.u8()
    idle = _signed64(r.u64()) if mode & 1 else r.u16() * 1000
    max_packets = r.u8() if mode & 2 else 0
    n = r.left // 8
    cols: dict[str, Any] = {k: np.zeros(n, t) for k, t in (
        ("status", np.uint8), ("l3", np.uint8), ("proto", np.uint8), ("sport", np.uint16),
        ("dport", np.uint16), ("tcp_flags", np.uint16), ("ts_ns", np.int64), ("wirelen", np.uint32))}
    cols["src"] = np.zeros((n, 16), np.uint8)
    cols["dst"] = np.zeros((n, 16), np.uint8)
    t = 0
    for i in range(n):
        a, b, c = r.u8(), r.u8(), r.u8()
        cols["status"][i] = a & 3 if a & 0xF0 == 0xF0 else 0
        cols["l3"][i] = (0, 4, 6, 6)[a & 3]
        cols["proto"][i] = (6, 17, 1, 58)[(a >> 2) & 3]
        cols["src"][i, 15], cols["dst"][i, 15] = b & 3, (b >> 2) & 3
        cols["sport"][i], cols["dport"][i] = (b >> 4) & 3, (b >> 6) & 3
        cols["tcp_flags"][i] = c
        # the harness adds in int64 and wraps; Python ints do not, so wrap explicitly
        t = _signed64(r.u64()) if a & 0x80 else _signed64((t + r.u16() * 1_000_000) % (1 << 64))
        cols["ts_ns"][i] = t
        cols["wirelen"][i] = (r.u16() << (16 if c & 8 else 0)) & 0xFFFFFFFF
    return {**cols, "idle_timeout_ns": idle, "max_flow_packets": max_packets}


def fuzz_vocabulary() -> Vocabulary:
    """The vocabulary csrc/fuzz/fuzz_layout.hpp rebuilds in C++."""
    return Vocabulary(classes=["a", "b", "c"], payload_cap=16,
                      app_protocols=[AppProtocol("fuzz", "", tuple(f"t{i}" for i in range(16)))])


def decode_args(data: bytes) -> tuple[np.ndarray, np.ndarray, bool]:
    """fuzz_decode input → (tokens, offsets, strict) for pytrafgen.tokenizer.decode."""
    if not data:
        return np.zeros(0, np.uint16), np.zeros(1, np.int64), False
    strict, one_span = bool(data[0] & 1), bool(data[0] & 2)
    body = data[1 : 1 + (len(data) - 1) // 2 * 2]
    tokens = np.frombuffer(body, "<u2").astype(np.uint16)
    bos = fuzz_vocabulary().special("BOS")
    starts = [0] if one_span else [0, *(k for k in range(1, len(tokens)) if tokens[k] == bos)]
    return tokens, np.array([*starts, len(tokens)], np.int64), strict


_RAW_FIELDS = ("ip_hdr_len", "ip_total_len", "l4_hdr_len", "udp_len", "ip_csum", "l4_csum")


def build_args(data: bytes) -> dict[str, Any]:
    """fuzz_build input → keyword arguments of _core.build_frames."""
    r = ByteReader(data)
    opts = r.u8()
    n, nf = r.u8() % 33, 1 + r.u8() % 4
    flows = {name: np.zeros(nf, dt) for name, dt in FLOW_COLUMNS.items()}
    caddr, saddr = np.zeros((nf, 16), np.uint8), np.zeros((nf, 16), np.uint8)
    isn = np.zeros((nf, 2), np.uint32)
    for f in range(nf):
        a = r.u8()
        flows["ip_version"][f] = r.u8() if a & 7 == 7 else (6 if a & 1 else 4)
        flows["proto"][f] = r.u8() if a & 0x80 else (6, 17, 1, 58)[(a >> 1) & 3]
        if flows["ip_version"][f] == 4:
            caddr[f, 10:12] = saddr[f, 10:12] = 0xFF
        caddr[f, 15], saddr[f, 15] = 1, 2
        flows["client_port"][f], flows["server_port"][f] = r.u16(), r.u16()
        isn[f, 0] = r.u32()
    p: dict[str, np.ndarray] = {name: np.zeros(n, dt) for name, dt in PACKET_COLUMNS.items()}
    raw = {name: np.zeros(n, np.uint16) for name in _RAW_FIELDS}
    for i in range(n):
        sel, sel2 = r.u8(), r.u8()
        p["flow"][i] = np.uint32(r.u32()).view(np.int32) if sel & 0x0F == 0x0F else sel % nf
        p["direction"][i] = r.u8() if sel2 & 0x1F == 0x1F else sel2 & 1
        p["ttl"][i], p["tos"][i], p["ip_id"][i] = r.u8(), r.u8(), r.u16()
        p["ip_flags"][i] = r.u8() if sel2 & 0x40 else 0
        p["frag_offset"][i] = r.u16() if sel2 & 0x40 else 0
        p["flow_label"][i] = r.u32()
        p["ip_opt_off"][i] = r.span(sel)
        p["ip_opt_len"][i] = (r.span(sel2) & 0xFFFFFFFF) if sel2 & 2 else 0
        p["tcp_flags"][i], p["seq"][i], p["ack"][i] = r.u16(), r.u32(), r.u32()
        p["window"][i], p["urgent"][i] = r.u16(), r.u16()
        p["icmp_type"][i], p["icmp_code"][i], p["icmp_rest"][i] = r.u8(), r.u8(), r.u32()
        p["l4_opt_off"][i] = r.span(sel)
        p["l4_opt_len"][i] = (r.span(sel2) & 0xFFFFFFFF) if sel2 & 4 else 0
        p["payload_off"][i] = r.span(sel)
        p["payload_len"][i] = r.u16() if sel2 & 8 else r.u8()
        p["payload_stored"][i] = (r.span(sel) & 0xFFFFFFFF) if sel2 & 0x80 else p["payload_len"][i] // 2
        raw["ip_hdr_len"][i], raw["ip_total_len"][i], raw["l4_hdr_len"][i] = r.u8(), r.u16(), r.u8()
        raw["udp_len"][i], raw["ip_csum"][i], raw["l4_csum"][i] = r.u16(), r.u16(), r.u16()
    blob = np.frombuffer(data[r.pos :], np.uint8).copy()
    order = np.array([(k * 7 + opts) % max(n, 1) for k in range(n)], np.int64) if opts & 4 else None
    return {
        "packets": p, "flows": flows, "client_addr": caddr, "server_addr": saddr,
        "client_mac": np.full((nf, 6), 2, np.uint8), "server_mac": np.full((nf, 6), 4, np.uint8), "isn": isn,
        "blob": blob, "linktype": 101 if opts & 1 else 1, "repair": not opts & 2,
        "raw_derived": raw if opts & 8 else {}, "order": order,
    }
