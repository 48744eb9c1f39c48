"""Where the CPU seconds of ``pytrafgen tokenize`` go: the whole command in a fresh process, with
a process-CPU timer around each stage (a wrapper per function, so no per-call profiling
overhead inflates the Python parts as cProfile does). Stages nest (``_Accumulated.add`` holds
``encode_flows``, which holds ``_app_spans``...): a row's seconds include those of the stages
inside it. With ``PYTRAFGEN_BENCH_CODE=FOLDER`` it profiles the pytrafgen in FOLDER
(``previous_code.py``).

    OMP_NUM_THREADS=1 python benchmarks/profile_tokenize.py tokenize CAPTURE --labels CSV --out DIR --force -q -j 1

Prints one JSON line: the process's user and system CPU seconds, the seconds before the
command runs (interpreter start is not in it: measure ``pytrafgen --help`` for that), and
per stage its CPU seconds and calls.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
from collections import Counter
from typing import Any

from previous_code import ENV, use_code_from

STAGES = [
    ("pytrafgen.capture", "_table_from_reader", "read: C++ reader, a chunk's columns and frames"),
    ("pytrafgen.capture", "PacketTable.concat", "carried open flows + the chunk, one table"),
    ("pytrafgen.detect.data", "FlowSettings.assemble", "flow assembly (C++)"),
    ("pytrafgen.detect.stream", "_keep_roles", "roles of flows continuing an emitted 5-tuple"),
    ("pytrafgen.detect.stream", "_remember_roles", "roles remembered per 5-tuple"),
    ("pytrafgen.tokenizer.stream", "_Accumulated.add", "per batch: encode, samples, address heads, spill"),
    ("pytrafgen.tokenizer.encode", "encode_flows", "encoder (app spans + C++ encode)"),
    ("pytrafgen.tokenizer.encode", "_app_spans", "app protocols: recognition and spans"),
    ("pytrafgen.tokenizer.encode", "_grammar_spans", "declared grammars, C++ (HTTP, MQTT)"),
    ("pytrafgen.tokenizer.encode", "_python_spans", "a plugin's Python encode (CoAP)"),
    ("pytrafgen.payload_fill", "flow_payload_samples", "payload samples per flow (bulk)"),
    ("pytrafgen.tokenizer.pipeline", "first_packet_heads", "address plan inputs per flow"),
    ("pytrafgen.tokenizer.pipeline", "_write", "split, address plan, payload fill, dataset files"),
    ("pytrafgen.dataset", "split_flows", "split by flow, stratified"),
    ("pytrafgen.tokenizer.pipeline", "_learn_plan", "address plan"),
    ("pytrafgen.tokenizer.pipeline", "_learn_fill", "payload fill counts (this branch)"),
    ("pytrafgen.payload_fill", "PayloadFill.learn_samples", "payload fill counts (before)"),
    ("pytrafgen.payload_fill", "PayloadFill.save", "payload_fill.json"),
    ("pytrafgen.dataset", "write_dataset", "token shards, offsets, labels, manifest"),
]


def _wrap(module: str, qualname: str, seconds: dict[str, float], calls: Counter[str]) -> bool:
    """Time ``module.qualname`` (a function or a class's method or classmethod) in place."""
    try:
        owner: Any = importlib.import_module(module)
        name = qualname
        if "." in qualname:
            cls_name, name = qualname.split(".")
            owner = getattr(owner, cls_name)
        raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    except (ImportError, AttributeError, KeyError):
        return False  # a stage the profiled code does not have
    key = f"{module.rsplit('.', 1)[-1]}.{qualname}"
    is_classmethod = isinstance(raw, classmethod)
    fn = raw.__func__ if is_classmethod else raw

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[key] = seconds.get(key, 0.0) + time.process_time() - t0
            calls[key] += 1

    setattr(owner, name, classmethod(timed) if is_classmethod else timed)
    return True


def main() -> None:
    started = time.process_time()
    if os.environ.get(ENV):
        use_code_from(os.environ[ENV])
    sys.argv = ["pytrafgen", *sys.argv[1:]]
    from pytrafgen.cli.main import run

    seconds: dict[str, float] = {}
    calls: Counter[str] = Counter()
    found = {f"{m.rsplit('.', 1)[-1]}.{q}": what for m, q, what in STAGES if _wrap(m, q, seconds, calls)}
    before = time.process_time() - started
    try:
        run()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"user_s": usage.ru_utime, "sys_s": usage.ru_stime, "before_command_s": before,
                      "peak_rss_mb": usage.ru_maxrss / 1024,
                      "stages": {k: {"cpu_s": round(seconds.get(k, 0.0), 4), "calls": calls[k], "what": what}
                                 for k, what in found.items()}}))


if __name__ == "__main__":
    main()
