"""Type stubs of pytrafgen._core (the C++ extension). Each area appends its own section."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

import numpy as np

sanitized: bool
abi_version: int

# --- columns (csrc/columns.hpp): (name, numpy dtype name, row width) of each table's columns --

PACKET_COLUMNS: tuple[tuple[str, str, int], ...]
FLOW_PACKET_COLUMNS: tuple[tuple[str, str, int], ...]
FLOW_COLUMNS: tuple[tuple[str, str, int], ...]
RECORD_PACKET_COLUMNS: tuple[tuple[str, str, int], ...]
RECORD_FLOW_COLUMNS: tuple[tuple[str, str, int], ...]

# --- capture: pcap/pcapng reader and L2–L4 dissector (csrc/pcap.hpp, dissect.hpp) ---------

STATUS_NAMES: list[str]

class CaptureFile:
    def __init__(self, path: str) -> None: ...
    @staticmethod
    def from_bytes(data: bytes, name: str = "<bytes>") -> CaptureFile: ...
    def read(self, max_packets: int = 0) -> tuple[dict[str, np.ndarray], dict[str, int]]: ...
    def walk(self) -> tuple[int, int, dict[str, int]]: ...
    def comments(self) -> tuple[np.ndarray, list[bytes]]: ...
    def close(self) -> None: ...
    @property
    def offset(self) -> int: ...
    @property
    def done(self) -> bool: ...
    @property
    def format(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...

def gather_frames(
    data: np.ndarray, frame_off: np.ndarray, caplen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]: ...
def pack_pcap_records(
    data: np.ndarray,
    frame_off: np.ndarray,
    caplen: np.ndarray,
    wirelen: np.ndarray,
    ts_ns: np.ndarray,
    nanosecond: bool,
) -> bytes: ...
def walk_records(path: str) -> tuple[int, int, dict[str, int]]: ...

# --- flows (csrc/flows.hpp) ------------------------------------------------------------------

def assemble_flows(
    status: np.ndarray,
    l3: np.ndarray,
    proto: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    sport: np.ndarray,
    dport: np.ndarray,
    tcp_flags: np.ndarray,
    ts_ns: np.ndarray,
    wirelen: np.ndarray,
    idle_timeout_ns: int,
    max_flow_packets: int,
) -> dict[str, np.ndarray]: ...

# --- builder: checksums and packet building (csrc/checksum.hpp, build.hpp) -------------------

BUILD_STATUS_NAMES: list[str]

def internet_checksum(data: bytes | bytearray | memoryview | np.ndarray) -> int: ...
def l4_checksum(
    src: bytes, dst: bytes, proto: int, segment: bytes | bytearray | memoryview | np.ndarray
) -> int: ...
def build_frames(
    packets: dict[str, np.ndarray],
    flows: dict[str, np.ndarray],
    client_addr: np.ndarray,
    server_addr: np.ndarray,
    client_mac: np.ndarray,
    server_mac: np.ndarray,
    isn: np.ndarray,
    blob: np.ndarray,
    linktype: int,
    repair: bool,
    raw_derived: dict[str, np.ndarray],
    order: np.ndarray | None = None,
) -> dict[str, np.ndarray]: ...
def distinct_client_ports(
    proto: np.ndarray,
    client_addr: np.ndarray,
    client_port: np.ndarray,
    server_addr: np.ndarray,
    server_port: np.ndarray,
    draw: Callable[[int], np.ndarray],
) -> np.ndarray | None: ...
def flow_first_ts(
    flow: np.ndarray, ts_ns: np.ndarray, label: np.ndarray, want_piled: bool
) -> tuple[np.ndarray, bool] | None: ...

# --- tokenizer: protocol-field encoder and decoder (csrc/tokenize.hpp) -------------------------

def tokenizer_range_names() -> list[str]: ...
def encode_flows(
    packets: dict[str, np.ndarray],
    data: np.ndarray,
    flows: dict[str, np.ndarray],
    labels: np.ndarray,
    spec: dict[str, object],
    app_packet: np.ndarray,
    app_offsets: np.ndarray,
    app_tokens: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int, dict[str, int]]: ...
class DecodedTokens(TypedDict):
    packets: dict[str, np.ndarray]
    flows: dict[str, np.ndarray]
    blob: np.ndarray
    source_flow: np.ndarray
    errors: dict[str, int]  # decode error name -> flows that hit it
    decoded: int
    first_error: str | None
    error_flow: int
    error_pos: int

def decode_tokens(
    tokens: np.ndarray,
    offsets: np.ndarray,
    spec: dict[str, object],
    strict: bool,
    app_decode: Callable[[int, list[int], int], bytes | None] | None,
    app_grammars: list[tuple[dict[str, object], int] | None] | None = None,
) -> DecodedTokens: ...
def attend_rows(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def attend_rows_half(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def attend_qkv(
    qkv: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def attend_qkv_half(
    qkv: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def half_cache_supported(dim: int) -> bool: ...
def attend_rows_int8(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def attend_qkv_int8(
    qkv: np.ndarray, k: np.ndarray, v: np.ndarray, lengths: np.ndarray, scale: float, out: np.ndarray,
    threads: int = 1,
) -> None: ...
def int8_cache_supported(dim: int) -> bool: ...

# --- fused decoding step and head draw (csrc/decode_step.hpp, csrc/head_draw.hpp) ---------------

def decode_step_supported(embd: int, heads: int) -> bool: ...
def pack_index(o: int, i: int, in_features: int) -> int: ...

class DecodeStep:
    def __init__(self, wte: np.ndarray, wpe: np.ndarray, class_proj: np.ndarray | None, norms: np.ndarray,
                 linears: np.ndarray, heads: int, bos: int) -> None: ...
    def run(self, tokens: np.ndarray, positions: np.ndarray, classes: np.ndarray | None, k: np.ndarray,
            v: np.ndarray, hidden: np.ndarray, threads: int = 1) -> None: ...

class HeadDraw:
    def __init__(self, offsets: np.ndarray, ids: np.ndarray, weight: np.ndarray, set_of_state: np.ndarray,
                 next_state: np.ndarray, eos_ok: np.ndarray) -> None: ...
    def draw(self, hidden: np.ndarray, states: np.ndarray, uniforms: np.ndarray | None, temperature: float,
             out: np.ndarray) -> None: ...
    def draw_advance(self, hidden: np.ndarray, rows: int, uniforms: np.ndarray | None, temperature: float,
                     state: np.ndarray, pos: np.ndarray, feed: np.ndarray, last_eos_ok: np.ndarray, out: np.ndarray,
                     eos: int) -> int: ...

# --- app-protocol grammars (csrc/app_grammar.hpp) -----------------------------------------------

def app_grammar_encode(
    grammar: dict[str, object], data: np.ndarray, off: np.ndarray, len: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def payload_digests(data: np.ndarray, off: np.ndarray, len: np.ndarray) -> np.ndarray: ...
def count_bytes(
    data: np.ndarray, offsets: np.ndarray, group: np.ndarray, first_group: int, n_groups: int
) -> tuple[np.ndarray, np.ndarray]: ...
def app_grammar_decode(
    grammar: dict[str, object], n_local: int, tokens: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
