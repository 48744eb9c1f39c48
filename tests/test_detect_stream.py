"""A streamed `detect run` (flows emitted as they end, chunk by chunk) finds the flows of the
whole capture read at once: the same flows, with the same client and server, and the same
verdicts, whatever the chunk size, including connections cut into segments (length limit,
idle timeout) and 5-tuples reused while earlier flows on them are still open."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ALL_SHARED, needs_full_captures, shared_ids
from typer.testing import CliRunner

import pytrafgen
from pytrafgen.cli.main import build_app
from pytrafgen.demo.default import corpus_dir
from pytrafgen.detect.data import FlowSettings
from pytrafgen.detect.model import load_detector
from pytrafgen.detect.run import iter_finished_flows, iter_verdicts
from pytrafgen.detect.stream import FlowBatch

CORPUS = corpus_dir()
CAPTURES = sorted(CORPUS.glob("*.pcap"))
CHUNKS = (3, 7, 23, 500)

_SIDES = ("proto", "client_addr", "client_port", "server_addr", "server_port", "packets_c2s", "packets_s2c",
          "bytes_c2s", "bytes_s2c", "start_ns", "end_ns")


def _flow_rows(flows: Any, select: np.ndarray) -> list[tuple[Any, ...]]:
    columns = [np.asarray(getattr(flows, name))[select] for name in _SIDES]
    return [tuple(c[i].tolist() if c.ndim > 1 else c[i].item() for c in columns) for i in range(len(select))]


def _whole(path: Path, settings: FlowSettings) -> dict[int, tuple[Any, ...]]:
    flows = settings.assemble(pytrafgen.read_pcap(path))
    rows = _flow_rows(flows, np.arange(len(flows)))
    return dict(zip(np.asarray(flows.first_packet).tolist(), rows, strict=True))


def _streamed(path: Path, settings: FlowSettings, chunk: int) -> dict[int, tuple[Any, ...]]:
    def take(batch: FlowBatch, done: np.ndarray) -> dict[str, np.ndarray]:
        rows = np.empty(len(done), dtype=object)
        for i, row in enumerate(_flow_rows(batch.flows, done)):
            rows[i] = row
        return {"flow": rows}

    found: dict[int, tuple[Any, ...]] = {}
    for first_row, _context, columns in iter_finished_flows(path, settings, take, chunk_packets=chunk):
        for row, flow in zip(first_row.tolist(), columns["flow"], strict=True):
            assert row not in found, (path.name, chunk, row)  # each flow emitted once
            found[row] = tuple(flow)
    return found


def _assert_same_flows(path: Path, settings: FlowSettings, chunks: tuple[int, ...] = CHUNKS) -> None:
    whole = _whole(path, settings)
    for chunk in chunks:
        streamed = _streamed(path, settings, chunk)
        lost = sorted(whole.keys() - streamed.keys())
        extra = sorted(streamed.keys() - whole.keys())
        assert not lost and not extra, (path.name, chunk, "lost", lost[:5], "extra", extra[:5])
        differ = [row for row in whole if whole[row] != streamed[row]]
        assert not differ, (path.name, chunk, [(whole[r][:5], streamed[r][:5]) for r in differ[:3]])


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.stem)
def test_corpus_streamed_flows_equal_the_whole_capture(capture: Path) -> None:
    _assert_same_flows(capture, FlowSettings(max_flow_packets=10))


def test_corpus_with_default_settings_and_idle_splits() -> None:
    for name in ("benign_coap", "benign_mqtt", "slowloris"):
        _assert_same_flows(CORPUS / f"{name}.pcap", FlowSettings())
        _assert_same_flows(CORPUS / f"{name}.pcap", FlowSettings(idle_timeout_s=0.5, max_flow_packets=7))


@pytest.mark.slow
@needs_full_captures
@pytest.mark.parametrize("capture", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_shared_captures_streamed_flows_equal_the_whole_capture(capture: Path) -> None:
    _assert_same_flows(capture, FlowSettings(max_flow_packets=10), (97, 4096))
    ts = np.asarray(pytrafgen.read_pcap(capture).ts_ns, np.int64)
    if len(ts) and (np.maximum.accumulate(ts) - ts).max() <= 1e9:
        _assert_same_flows(capture, FlowSettings(idle_timeout_s=1.0), (97,))
    else:  # timestamps go back past the idle timeout: no promise of the same flows, but each once
        _streamed(capture, FlowSettings(idle_timeout_s=1.0), 97)


# --- crafted captures ---------------------------------------------------------------------

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def _write(path: Path, packets: list[Any]) -> Path:
    from scapy.utils import wrpcap

    wrpcap(str(path), packets)
    return path


def _udp(sender_is_client: bool, t: float, sport: int = 40000, dport: int = 5683) -> Any:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    packet: Any
    if sender_is_client:
        packet = Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=sport, dport=dport) / b"req"
    else:
        packet = Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=dport, dport=sport) / b"response"
    packet.time = t
    return packet


def _tcp(sender_is_client: bool, flags: str, t: float, cport: int, sport: int, payload: bytes = b"") -> Any:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    packet: Any
    if sender_is_client:
        packet = Ether() / IP(src=CLIENT, dst=SERVER) / TCP(sport=cport, dport=sport, flags=flags) / payload
    else:
        packet = Ether() / IP(src=SERVER, dst=CLIENT) / TCP(sport=sport, dport=cport, flags=flags) / payload
    packet.time = t
    return packet


def test_udp_segments_started_by_the_server_keep_the_client(tmp_path: Path) -> None:
    """A CoAP-like exchange cut into 10-packet segments (and by a 1 s idle timeout) where later
    segments open with the server's packet: each keeps the client of the connection."""
    rng = np.random.default_rng(3)
    t = 1_700_000_000.0
    packets = [_udp(True, t)]
    for i in range(300):
        t += 2.0 if i % 97 == 50 else 0.01  # a few idle gaps
        packets.append(_udp(bool(rng.integers(0, 2)) if i % 10 != 8 else False, t))
    path = _write(tmp_path / "coap.pcap", packets)
    settings = FlowSettings(idle_timeout_s=1.0, max_flow_packets=10)
    flows = settings.assemble(pytrafgen.read_pcap(path))
    assert len(flows) > 20 and (np.asarray(flows.client_port) == 40000).all()  # the whole-capture roles
    _assert_same_flows(path, settings, (1, 2, 5, 10, 23, 64))


def test_tcp_segments_keep_the_syn_sender_as_client(tmp_path: Path) -> None:
    """A connection opened from port 443 to port 40000 (the SYN's sender is the client, although
    it holds the well-known port): its later segments, which start without a SYN, keep it."""
    t = 1_700_000_000.0
    packets = [_tcp(True, "S", t, 443, 40000), _tcp(False, "SA", t + 0.01, 443, 40000),
               _tcp(True, "A", t + 0.02, 443, 40000)]
    for i in range(60):
        packets.append(_tcp(i % 3 == 0, "PA", t + 0.03 + i * 0.01, 443, 40000, b"x" * (i % 7)))
    path = _write(tmp_path / "reverse.pcap", packets)
    settings = FlowSettings(max_flow_packets=10)
    flows = settings.assemble(pytrafgen.read_pcap(path))
    assert len(flows) == 7 and (np.asarray(flows.client_port) == 443).all()
    _assert_same_flows(path, settings, (1, 3, 10, 11, 23))


def test_reused_five_tuple_while_earlier_flows_are_open(tmp_path: Path) -> None:
    """The same addresses and ports reopened again and again: a short connection closed by FIN
    (still open: its idle timeout has not passed), then a SYN on the same 5-tuple whose long
    connection is cut into segments. No segment is lost or merged into the closed flow."""
    t = 1_700_000_000.0
    packets: list[Any] = []
    for round_ in range(4):
        for cport in (50000, 50001):
            base = t + round_ * 3.0 + (cport - 50000) * 0.001
            step = iter(np.arange(0, 2.0, 0.004))
            packets += [_tcp(True, "S", base + next(step), cport, 1883), _tcp(False, "SA", base + next(step), cport, 1883),
                        _tcp(True, "A", base + next(step), cport, 1883), _tcp(True, "FA", base + next(step), cport, 1883),
                        _tcp(False, "FA", base + next(step), cport, 1883), _tcp(True, "A", base + next(step), cport, 1883)]
            packets += [_tcp(True, "S", base + next(step), cport, 1883), _tcp(False, "SA", base + next(step), cport, 1883)]
            for i in range(17 + round_):
                packets.append(_tcp(i % 2 == 1, "PA", base + next(step), cport, 1883, b"m" * (1 + i)))
    packets.sort(key=lambda p: float(p.time))
    path = _write(tmp_path / "reused.pcap", packets)
    settings = FlowSettings(max_flow_packets=10)
    flows = settings.assemble(pytrafgen.read_pcap(path))
    assert len(flows) > 20
    _assert_same_flows(path, settings, (1, 2, 3, 5, 7, 11, 23, 64))


def test_replayed_exchange_going_back_in_time_emits_each_flow_once(tmp_path: Path) -> None:
    """FTP logins, other traffic 2 s later, then the same logins again with their old
    timestamps (a capture replayed into itself; seen in a public capture): time goes back past
    the 1 s idle timeout, so the flows need not be the whole capture's, but none is emitted twice."""
    t = 1_700_000_000.0
    packets: list[Any] = []
    for k in range(3):
        start, cport = t + 0.9 * k, 40000 + k
        packets += [_tcp(True, "S", start, cport, 21), _tcp(False, "SA", start + 0.01, cport, 21),
                    _tcp(True, "A", start + 0.02, cport, 21)]
        packets += [_tcp(i % 2 == 0, "PA", start + 0.1 + 0.05 * i, cport, 21, b"USER x\r\n") for i in range(8)]
        packets += [_tcp(True, "FA", start + 0.6, cport, 21), _tcp(False, "FA", start + 0.7, cport, 21),
                    _tcp(True, "A", start + 0.78, cport, 21)]
    later = [_udp(True, t + 2.0 + 0.1 * i, sport=50000 + i) for i in range(10)]
    replayed = []
    for packet in packets:
        copy = packet.copy()
        copy.time = packet.time
        replayed.append(copy)
    path = _write(tmp_path / "replayed.pcap", packets + later + replayed)
    settings = FlowSettings(idle_timeout_s=1.0)
    for chunk in (1, 3, 7, 23):
        streamed = _streamed(path, settings, chunk)  # asserts each flow comes once
        assert sum(flow[5] + flow[6] for flow in streamed.values()) == len(packets) * 2 + len(later)


def test_role_memory_keeps_the_last_role_per_five_tuple() -> None:
    from pytrafgen.detect.stream import RoleMemory, _hash_rows

    rows = np.random.default_rng(0).integers(0, 256, size=(1000, 38), dtype=np.uint8)
    hashes = _hash_rows(rows)
    assert len(np.unique(hashes)) == 1000 and np.array_equal(_hash_rows(rows.copy()), hashes)
    memory = RoleMemory()
    memory.update(hashes[:600], np.ones(600, bool))
    memory.update(np.r_[hashes[400:], hashes[:1]], np.r_[np.zeros(600, bool), False])  # the last of equal ones wins
    known, low = memory.lookup(np.r_[hashes, _hash_rows(rows[:3] ^ 1)])
    assert len(memory) == 1000 and known[:1000].all() and not known[1000:].any()
    assert not low[0] and low[1:400].all() and not low[400:1000].any()


# --- verdicts -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forest10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("det") / "forest10"
    result = CliRunner().invoke(build_app(), [str(a) for a in (
        "detect", "train", *CAPTURES, "--labels", CORPUS / "manifest.csv", "--model", "forest",
        "--max-flow-packets", "10", "--out", out, "--json")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["validation"]["flows"] > 0
    return out


def test_streamed_verdicts_equal_the_whole_capture(forest10: Path) -> None:
    det = load_detector(forest10)
    for name in ("benign_coap", "benign_mqtt", "slowloris"):
        path = CORPUS / f"{name}.pcap"
        table = pytrafgen.read_pcap(path)
        flows = det.header.settings.assemble(table)
        proba = det.predict_proba(det.encode(table, flows))
        whole = {int(flows.first_packet[f]): (int(flows.client_port[f]), int(flows.server_port[f]),
                                              int(flows.packets[f]), int(proba[f].argmax()))
                 for f in range(len(flows))}
        for chunk in (3, 7, 23, 500):
            streamed = {}
            for v in iter_verdicts(det, path, chunk_packets=chunk):
                for i in range(len(v)):
                    streamed[int(v.first_row[i])] = (int(v.client_port[i]), int(v.server_port[i]),
                                                     int(v.packets[i]), int(v.predicted[i]))
            assert streamed == whole, (name, chunk)
