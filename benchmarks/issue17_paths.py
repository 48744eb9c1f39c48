"""Issue 17 check: the outputs and CPU time of the calls whose C++ columns and codec layout
changed (read_pcap, assemble_flows, encode_flows, decode, build_frames) on one capture.

Prints one JSON line: a digest of the tokens, the decoded records and the built frames (equal
digests: equal bytes) and the best of ``repeats`` CPU seconds per call. Run it with the code
before and after a change (benchmarks/results/issue17_unchanged.md says how).

    python benchmarks/issue17_paths.py /work/shared/data/captures/http_flood.pcap 20
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pytrafgen.address_plan import AddressPlan
from pytrafgen.build import build_frames
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.records_from_packets import records_from_packets
from pytrafgen.tokenizer import Vocabulary, decode, encode_flows


def best(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """(smallest CPU seconds of ``repeats`` calls, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return min(times), out


def main(path: str, repeats: int) -> dict[str, Any]:
    vocab = Vocabulary(["c"], payload_cap=64)
    t_read, table = best(repeats, lambda: read_pcap(path))
    t_flows, flows = best(repeats, lambda: assemble_flows(table))
    labels = np.zeros(len(flows), np.int32)
    t_enc, enc = best(repeats, lambda: encode_flows(table, flows, labels, vocab, protocols={}))
    t_dec, decoded = best(repeats, lambda: decode(enc.tokens, enc.offsets, vocab))
    records = records_from_packets(table, flows, labels, ["c"])
    plan = AddressPlan.learn(table, flows, labels, ["c"])
    t_build, built = best(repeats, lambda: build_frames(records, plan, seed=0))
    digest = hashlib.sha256(enc.tokens.tobytes() + enc.offsets.tobytes()
                            + b"".join(v.tobytes() for _, v in sorted(decoded.packets.items()))
                            + built.to_table().data.tobytes()).hexdigest()[:16]
    return {"digest": digest, "packets": len(table), "flows": len(flows), "tokens": len(enc.tokens),
            "read_s": t_read, "flows_s": t_flows, "encode_s": t_enc, "decode_s": t_dec, "build_s": t_build}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
