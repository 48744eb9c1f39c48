"""The static vocabulary: every protocol field owns one contiguous token range.

*Static*: generated from the field table below, the class names and the registered
application protocols' local vocabularies, never learned from data. A token id therefore says
which field it belongs to, and at each position of a flow only a few fields are legal (see
``grammar.py``). Wide fields are split into digits that each own a range (``seq.b3`` is the
most significant byte of the relative sequence number); rarely varying wide fields are split
into nibbles to keep the vocabulary small. docs/tokenizer.md describes every field.

Layout of the ids: the core fields first (their ids do not depend on the dataset, so a model
pre-trained on one dataset keeps its embeddings when fine-tuned on another), then one range
per application protocol (``app.<name>``: its begin token, then its local tokens), then one
token per class.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import DatasetError
from pytrafgen.tokenizer.layout import (
    DEFAULT_PAYLOAD_CAP,
    IAT_BUCKETS,
    TRANSPORT_NUMBERS,
    AppRange,
    CodecLayout,
)

if TYPE_CHECKING:
    from pytrafgen.app_grammar import TokenAutomaton
    from pytrafgen.protocol_spec import ProtocolSpec
    from pytrafgen.tokenizer.grammar import Grammar

VOCAB_FORMAT = "pytrafgen-vocab"
VOCAB_VERSION = 1
IAT_MIN_NS = 1_000  # bucket 0 holds gaps below 1 µs (including 0)
IAT_MAX_NS = 1_000_000_000_000  # the last bucket holds gaps of 1000 s and more

SPECIAL_TOKENS = ("PAD", "BOS", "EOS", "PKT", "DIR_C2S", "DIR_S2C", "APP_END")
PROTO_NUMBERS = (6, 17, 1, 58)  # the values of the ``proto`` range, in order
MAX_IP4_OPT_WORDS = 10  # 40 bytes of IPv4 options
MAX_IP6_EXT_WORDS = 16  # 64 bytes of IPv6 extension headers, in 4-byte words
MAX_TCP_OPT_WORDS = 10  # 40 bytes of TCP options


@dataclass(frozen=True)
class FieldRange:
    """One field's token range: ids ``start .. start + size - 1``."""

    name: str
    start: int
    size: int
    width_bits: int | None  # bits of the value a token carries; None for markers
    encoding: str
    description: str

    @property
    def stop(self) -> int:
        return self.start + self.size


def _digits(name: str, bits: Sequence[int], description: str) -> list[tuple[str, int, int, str, str]]:
    """Ranges for a value split into digits, most significant first (``name.n3`` … ``name.n0``)."""
    unit = "b" if bits[-1] == 8 else "n"
    n = len(bits)
    return [
        (f"{name}.{unit}{n - 1 - k}", 1 << w, w, "digit", f"{description} (digit {k + 1}/{n}, most significant first)")
        for k, w in enumerate(bits)
    ]


# (name, size, width_bits, encoding, description). The order is also the C++ layout order:
# csrc/tokenize.hpp's Range enum lists the same names (checked at import in encode.py).
CORE_FIELDS: list[tuple[str, int, int | None, str, str]] = [
    ("special", len(SPECIAL_TOKENS), None, "marker", "PAD BOS EOS PKT DIR_C2S DIR_S2C APP_END"),
    ("ip_version", 2, 4, "enum", "flow header: IPv4, IPv6"),
    ("proto", len(PROTO_NUMBERS), 8, "enum", "flow header: TCP, UDP, ICMP, ICMPv6"),
    *_digits("client_port", (8, 8), "flow header: client (initiator) port"),
    *_digits("server_port", (8, 8), "flow header: server (responder) port"),
    ("iat", IAT_BUCKETS, None, "bucket", "gap to the flow's previous packet, log-spaced buckets 1 µs .. 1000 s"),
    ("ttl", 256, 8, "uint", "IPv4 TTL / IPv6 hop limit"),
    ("tos", 256, 8, "enum", "IPv4 TOS / IPv6 traffic class"),
    ("ip_id.delta", 128, 7, "delta", "IPv4 id = the sender's previous id + value (mod 2^16)"),
    *_digits("ip_id", (4, 4, 4, 4), "IPv4 id given explicitly"),
    ("ip_flags", 32, 5, "enum", "IPv4 flags (bit0 MF, bit1 DF, bit2 reserved) + bit3 fragment offset follows + bit4 options follow"),
    *_digits("frag_offset", (1, 4, 4, 4), "IPv4 fragment offset (8-byte units)"),
    ("ip_opt.words", MAX_IP4_OPT_WORDS, 4, "length", "IPv4 options length, value+1 words of 4 bytes"),
    ("ip6_ext.words", MAX_IP6_EXT_WORDS + 1, 5, "length", "IPv6 extension headers length in 4-byte words (0: none)"),
    ("ip_opt.byte", 256, 8, "bytes", "IPv4 option / IPv6 extension header bytes (each header's next-header byte holds its own type)"),
    ("flow_label.same", 1, None, "marker", "IPv6 flow label = the sender's previous one (0 before any)"),
    *_digits("flow_label", (4, 4, 4, 4, 4), "IPv6 flow label given explicitly"),
    ("tcp_flags", 256, 8, "enum", "TCP flags FIN..CWR"),
    ("tcp_misc", (MAX_TCP_OPT_WORDS + 1) * 4, 6, "enum", "TCP options words (value % 11) + urgent pointer follows (bit 0 of value // 11) + high flag bits follow (bit 1)"),
    ("tcp_flags.hi", 15, 4, "enum", "TCP NS + reserved bits (value+1), only when nonzero"),
    *_digits("urgent", (4, 4, 4, 4), "TCP urgent pointer, only when nonzero"),
    ("tcp_opt.byte", 256, 8, "bytes", "TCP option bytes"),
    ("seq.next", 1, None, "marker", "relative seq = the sender's previous seq + its payload length + SYN + FIN (0 before any)"),
    *_digits("seq", (8, 8, 8, 8), "TCP seq relative to the sender's initial seq"),
    ("ack.next", 1, None, "marker", "ACK set and relative ack = the peer's next seq (0 before any)"),
    ("ack.same", 1, None, "marker", "ack = the sender's previous ack field value (0 before any)"),
    *_digits("ack", (8, 8, 8, 8), "TCP ack relative to the peer's initial seq (with ACK; raw without)"),
    *_digits("window", (8, 8), "TCP window"),
    ("icmp_type", 256, 8, "enum", "ICMP / ICMPv6 type"),
    *_digits("icmp_code", (4, 4), "ICMP / ICMPv6 code"),
    *_digits("icmp_rest", (4, 4, 4, 4, 4, 4, 4, 4), "ICMP rest of header (4 bytes after the checksum)"),
    *_digits("payload_len", (8, 8), "L4 payload length by the IP header"),
    ("payload.byte", 256, 8, "bytes", "payload bytes, the first min(length, cap)"),
]
CORE_RANGE_NAMES: tuple[str, ...] = tuple(f[0] for f in CORE_FIELDS)


@dataclass(frozen=True)
class AppProtocol:
    """An application protocol's local vocabulary as the vocabulary stores it."""

    name: str
    transport: str  # "tcp", "udp" or "" (both)
    token_names: tuple[str, ...]


# token ids are uint16 and 0xFFFF is kept free (the decoder maps any id it cannot read there)
MAX_VOCAB_SIZE = 65535


class Vocabulary:
    """The versioned token vocabulary of one dataset / checkpoint."""

    def __init__(
        self,
        classes: Sequence[str] = (),
        app_protocols: Iterable[AppProtocol] = (),
        payload_cap: int = DEFAULT_PAYLOAD_CAP,
    ) -> None:
        if len(set(classes)) != len(classes):
            raise DatasetError(f"duplicate class names in {list(classes)}")
        self.classes: list[str] = list(classes)
        self.app_protocols: list[AppProtocol] = sorted(app_protocols, key=lambda p: p.name)
        ranges: list[FieldRange] = []
        start = 0
        for name, size, width, encoding, description in CORE_FIELDS:
            ranges.append(FieldRange(name, start, size, width, encoding, description))
            start += size
        for proto in self.app_protocols:
            size = 1 + len(proto.token_names)
            ranges.append(FieldRange(f"app.{proto.name}", start, size, None, "app",
                                     f"{proto.name}: begin token, then its {len(proto.token_names)} local tokens"))
            start += size
            if start > MAX_VOCAB_SIZE:  # name the protocol whose range crosses the limit
                raise DatasetError(
                    f"app protocol {proto.name!r} ({len(proto.token_names)} local tokens) does not fit the vocabulary: "
                    f"with it the vocabulary holds {start} tokens, token ids must fit uint16 (at most "
                    f"{MAX_VOCAB_SIZE}); keep a protocol's local vocabulary small (≲ 600) or leave the plugin out")
        ranges.append(FieldRange("class", start, len(self.classes), None, "enum", "flow class label"))
        start += len(self.classes)
        if start > MAX_VOCAB_SIZE:
            raise DatasetError(f"vocabulary of {start} tokens does not fit uint16 ({len(self.classes)} classes)")
        self.ranges: dict[str, FieldRange] = {r.name: r for r in ranges}
        self.size = start
        self.codec_layout = CodecLayout(
            range_starts=tuple(self.ranges[n].start for n in CORE_RANGE_NAMES),
            class_start=self.ranges["class"].start, n_classes=len(self.classes), vocab_size=self.size,
            iat_edges_ns=tuple(self.iat_edges_ns.tolist()), iat_values_ns=tuple(self.iat_values_ns.tolist()),
            apps=tuple(AppRange(self.app_begin(p.name), len(p.token_names), TRANSPORT_NUMBERS[p.transport])
                       for p in self.app_protocols),
            payload_cap=int(payload_cap))

    @property
    def payload_cap(self) -> int:
        """Bytes of each packet's payload kept as tokens (``codec_layout.payload_cap``)."""
        return self.codec_layout.payload_cap

    # --- lookups -------------------------------------------------------------------------
    def id(self, range_name: str, value: int = 0) -> int:
        """Token id of ``value`` in range ``range_name``."""
        r = self.ranges[range_name]
        if not 0 <= value < r.size:
            raise ValueError(f"value {value} out of range {range_name} (size {r.size})")
        return r.start + value

    def special(self, name: str) -> int:
        return self.id("special", SPECIAL_TOKENS.index(name))

    def class_token(self, class_name: str) -> int:
        return self.id("class", self.classes.index(class_name))

    def app_begin(self, protocol: str) -> int:
        return self.ranges[f"app.{protocol}"].start

    def range_of(self, token: int) -> FieldRange:
        for r in self.ranges.values():
            if r.start <= token < r.stop:
                return r
        raise ValueError(f"token {token} outside the vocabulary of {self.size}")

    def token_name(self, token: int) -> str:
        """Readable name of one token, e.g. ``ttl=64`` or ``BOS``."""
        r = self.range_of(token)
        value = token - r.start
        if r.name == "special":
            return SPECIAL_TOKENS[value]
        if r.name == "class":
            return f"class={self.classes[value]}"
        if r.name.startswith("app."):
            proto = self.app_protocols[[p.name for p in self.app_protocols].index(r.name[4:])]
            return f"{r.name}.begin" if value == 0 else f"{r.name}:{proto.token_names[value - 1]}"
        return f"{r.name}={value}"

    def core_layout(self) -> np.ndarray:
        """Start id of each core range, in ``CORE_RANGE_NAMES`` order (what the C++ codec takes)."""
        return np.array(self.codec_layout.range_starts, dtype=np.int32)

    # --- inter-arrival buckets -----------------------------------------------------------
    @cached_property
    def iat_edges_ns(self) -> np.ndarray:
        """Lower edges of buckets 1..63 (int64 ns): bucket k holds edges[k-1] <= gap < edges[k]."""
        exps = np.linspace(np.log10(IAT_MIN_NS), np.log10(IAT_MAX_NS), IAT_BUCKETS - 1)
        return np.round(10.0**exps).astype(np.int64)

    @cached_property
    def iat_values_ns(self) -> np.ndarray:
        """The gap a decoded bucket stands for: 0, then the geometric middle of each bucket."""
        edges = self.iat_edges_ns.astype(np.float64)
        mids = np.sqrt(edges[:-1] * edges[1:])
        return np.concatenate([[0.0], mids, [edges[-1]]]).round().astype(np.int64)

    # --- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "size": self.size,
            "payload_cap": self.payload_cap,
            "iat": {"buckets": IAT_BUCKETS, "min_ns": IAT_MIN_NS, "max_ns": IAT_MAX_NS},
            "classes": self.classes,
            "app_protocols": [
                {"name": p.name, "transport": p.transport, "token_names": list(p.token_names)}
                for p in self.app_protocols
            ],
            "ranges": [
                {"name": r.name, "start": r.start, "size": r.size, "width_bits": r.width_bits,
                 "encoding": r.encoding, "description": r.description}
                for r in self.ranges.values()
            ],
        }
        body["hash"] = self._hash_of(body)
        return body

    @staticmethod
    def _hash_of(body: dict[str, Any]) -> str:
        canonical = json.dumps({k: v for k, v in body.items() if k != "hash"}, sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @cached_property
    def hash(self) -> str:
        return self.to_json()["hash"]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Vocabulary:
        if body.get("format") != VOCAB_FORMAT:
            raise DatasetError("not a pytrafgen vocabulary (format field missing or wrong)")
        if body.get("version") != VOCAB_VERSION:
            raise DatasetError(f"vocabulary version {body.get('version')} is not supported (this is {VOCAB_VERSION})")
        iat = body.get("iat", {})
        if (iat.get("buckets"), iat.get("min_ns"), iat.get("max_ns")) != (IAT_BUCKETS, IAT_MIN_NS, IAT_MAX_NS):
            raise DatasetError(f"vocabulary IAT buckets {iat} differ from this version's")
        vocab = cls(
            classes=body["classes"],
            app_protocols=[AppProtocol(p["name"], p["transport"], tuple(p["token_names"]))
                           for p in body["app_protocols"]],
            payload_cap=body["payload_cap"],
        )
        if "hash" in body and body["hash"] != vocab.hash:
            raise DatasetError(f"vocabulary hash {body['hash']} does not match its content ({vocab.hash})")
        return vocab

    def save(self, path: str | Path) -> None:
        with atomic_file(path, "w") as fh:
            json.dump(self.to_json(), fh, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            body = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DatasetError(f"{path}: vocabulary file not found") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_json(body)

    @classmethod
    def for_protocols(cls, protocols: Iterable[ProtocolSpec], classes: Sequence[str] = (),
                      payload_cap: int = DEFAULT_PAYLOAD_CAP) -> Vocabulary:
        """The vocabulary with every application protocol among ``protocols`` that has tokens
        (pass ``registry.protocols.values()`` for the loaded plugins' ones)."""
        apps = [
            AppProtocol(spec.name, spec.transport, tuple(spec.token_names))
            for spec in protocols
            if spec.layer == "app" and spec.token_names
        ]
        return cls(classes, apps, payload_cap)

    # --- presentation --------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """One row per range: field, width, encoding, first and last token id, description."""
        return [
            {"field": r.name, "width_bits": r.width_bits, "encoding": r.encoding, "size": r.size,
             "first": r.start, "last": r.stop - 1, "description": r.description}
            for r in self.ranges.values()
        ]

    def grammar(self, automata: Mapping[str, TokenAutomaton] | None = None) -> Grammar:
        """The token grammar (built once per set of app ``automata``; see ``Grammar``)."""
        from pytrafgen.tokenizer.grammar import Grammar

        key = tuple(sorted((automata or {}).items()))
        cache = self.__dict__.setdefault("_grammars", {})
        if key not in cache:
            cache[key] = Grammar(self, automata)
        return cache[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self.hash)

    def __repr__(self) -> str:
        return (f"Vocabulary(v{VOCAB_VERSION}, {self.size} tokens, {len(self.classes)} classes, "
                f"apps={[p.name for p in self.app_protocols]}, payload_cap={self.payload_cap}, hash={self.hash})")
