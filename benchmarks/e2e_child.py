"""One public-API measurement in a fresh process, for ``bench_e2e.py``: prints one JSON line
with the API call's wall time, the bare C++ call's beside it, and the packets. With
``PYTRAFGEN_BENCH_CODE=FOLDER`` it times the pytrafgen in FOLDER (``previous_code.py``).

    python benchmarks/e2e_child.py tokenize|build|write|write_conform|decode|decode_l4|dpkt|scapy CAPTURE [N]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from previous_code import ENV, use_code_from

if os.environ.get(ENV):  # time another copy of the code (bench_e2e.py --previous)
    use_code_from(os.environ[ENV])


def _protocols() -> dict[str, Any]:
    from pytrafgen.plugins import get_registry

    return dict(get_registry().protocols)


def _records(capture: Path) -> tuple[Any, Any]:
    from pytrafgen.address_plan import AddressPlan
    from pytrafgen.capture import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.records_from_packets import records_and_origin

    table = read_pcap(capture)
    flows = assemble_flows(table)
    labels = np.zeros(len(flows), np.int16)
    records, _ = records_and_origin(table, flows, labels, ["mixed"])
    return records, AddressPlan.learn(table, flows, labels, ["mixed"])


def tokenize(capture: Path) -> dict[str, Any]:
    from pytrafgen import _core
    from pytrafgen.capture import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer import Vocabulary, encode_flows
    from pytrafgen.tokenizer.encode import core_columns

    protocols = _protocols()
    vocab = Vocabulary.for_protocols(protocols.values(), ["mixed"])
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    table = read_pcap(capture)
    flows = assemble_flows(table)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols)
    api, api_cpu = time.perf_counter() - t0, time.process_time() - c0
    packets, cols = core_columns(table, flows)
    labels = np.zeros(len(flows), np.int32)
    empty = (np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.uint16))
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    _core.encode_flows(packets, table.data, cols, labels, vocab.codec_layout.to_core(), *empty)
    core, core_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"packets": len(table), "api_s": api, "api_cpu_s": api_cpu, "core_s": core, "core_cpu_s": core_cpu, "app_packets": enc.app_packets,
            "core_what": "_core.encode_flows (L3/L4 fields and payload bytes, no app spans)"}


def build(capture: Path) -> dict[str, Any]:
    from pytrafgen import _core
    from pytrafgen.build import LINKTYPE_ETHERNET, build_frames

    records, plan = _records(capture)
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    built = build_frames(records, plan, seed=0)
    api, api_cpu = time.perf_counter() - t0, time.process_time() - c0
    ends = plan.assign(records, np.random.default_rng(0))
    isn = np.zeros((records.n_flows, 2), np.uint32)
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    _core.build_frames(records.packets, records.flows, ends["client_addr"], ends["server_addr"], ends["client_mac"],
                       ends["server_mac"], isn, records.blob, LINKTYPE_ETHERNET, True, {}, None)
    core, core_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"packets": len(built), "api_s": api, "api_cpu_s": api_cpu, "core_s": core, "core_cpu_s": core_cpu, "core_what": "_core.build_frames"}


def write(capture: Path, conform: bool) -> dict[str, Any]:
    import tempfile

    from pytrafgen.build import write_records

    records, plan = _records(capture)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
        out = write_records(Path(tmp) / "out.pcap", records, plan, seed=0, conform=conform)
        api, api_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"packets": out["packets"], "api_s": api, "api_cpu_s": api_cpu}


def decode(capture: Path, with_apps: bool) -> dict[str, Any]:
    from pytrafgen import _core
    from pytrafgen.capture import read_pcap
    from pytrafgen.flows import assemble_flows
    from pytrafgen.tokenizer import Vocabulary, decode, encode_flows

    protocols = _protocols() if with_apps else {}
    vocab = Vocabulary.for_protocols(protocols.values(), ["mixed"])
    table = read_pcap(capture)
    flows = assemble_flows(table)
    enc = encode_flows(table, flows, np.zeros(len(flows), np.int32), vocab, protocols)
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    records = decode(enc.tokens, enc.offsets, vocab, protocols=protocols)
    api, api_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    _core.decode_tokens(enc.tokens, enc.offsets, vocab.codec_layout.to_core(), False, None)
    core, core_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"packets": records.n_packets, "api_s": api, "api_cpu_s": api_cpu, "core_s": core, "core_cpu_s": core_cpu, "app_packets": enc.app_packets,
            "core_what": "_core.decode_tokens without app decoding"}


def dpkt_parse(capture: Path, limit: int) -> dict[str, Any]:
    """dpkt reading the capture and dissecting Ethernet/IP/TCP/UDP, HTTP messages on port 80."""
    import dpkt

    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    n = 0
    with capture.open("rb") as fh:
        for _, raw in dpkt.pcap.Reader(fh):
            eth = dpkt.ethernet.Ethernet(raw)
            ip = eth.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP) and ip.data.data:
                tcp = ip.data
                try:
                    if tcp.dport == 80:
                        dpkt.http.Request(tcp.data)
                    elif tcp.sport == 80:
                        dpkt.http.Response(tcp.data)
                except (dpkt.UnpackError, dpkt.NeedData):
                    pass
            n += 1
            if n >= limit:
                break
    return {"packets": n, "api_s": time.perf_counter() - t0, "api_cpu_s": time.process_time() - c0}


def scapy_parse(capture: Path, limit: int) -> dict[str, Any]:
    """scapy reading and dissecting the capture's first packets (its HTTP layer on port 80)."""
    from scapy.layers import http  # noqa: F401  (binds HTTP to port 80)
    from scapy.utils import PcapReader

    t0, c0 = time.perf_counter(), time.process_time()  # wall; CPU (C++ runs in this thread)
    n = 0
    for _ in PcapReader(str(capture)):
        n += 1
        if n >= limit:
            break
    return {"packets": n, "api_s": time.perf_counter() - t0, "api_cpu_s": time.process_time() - c0}


def main() -> None:
    mode, capture = sys.argv[1], Path(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    runs = {
        "tokenize": lambda: tokenize(capture),
        "build": lambda: build(capture),
        "write": lambda: write(capture, conform=False),
        "write_conform": lambda: write(capture, conform=True),
        "decode": lambda: decode(capture, with_apps=True),
        "decode_l4": lambda: decode(capture, with_apps=False),
        "dpkt": lambda: dpkt_parse(capture, limit),
        "scapy": lambda: scapy_parse(capture, limit),
    }
    print(json.dumps(runs[mode]()))


if __name__ == "__main__":
    main()
