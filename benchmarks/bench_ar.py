"""AR generator throughput: training tokens/s (+ model-FLOPs utilisation) and sampling tokens/s
and packets/s, with a naive sampler (KV cache grown by concatenation, as DESIGN.md §8 quotes)
measured side by side so the static-cache speed-up is a ratio from one run.

On a GPU (the default sizes): training ``base`` with bf16 autocast, fused AdamW, flash SDPA and
torch.compile; sampling ``small`` with the static KV cache, a large batch and a compiled decode
step (CUDA graphs). On a CPU pass ``--train-sizes small,tiny --sample-sizes small,tiny`` and
small batches. Weights are random: throughput does not depend on them, except through how many
tokens a packet takes, which is why packets/s uses the real tokens-per-packet of ``--dataset``
when given (else of the sampled sequences).

    python benchmarks/bench_ar.py --device cpu --train-sizes small,tiny --sample-sizes small,tiny \
        --train-batch 8 --sample-batch 64 --out benchmarks/results/ar_cpu

``--pipeline N`` measures what a user gets: ``pytrafgen generate`` with the bundled default
model, N flows of every class to a pcap, wall time of a fresh process, once with this tree's
code and once with the code of ``--previous`` (a git revision: its ``pytrafgen`` package run
on this build's C++ core) in the same run; packets/s and sampled tokens/s side by side. With
``--train-sizes "" --sample-sizes ""`` only that section is measured and the other sections of
``--out``.json are kept. ``--scale N`` times this tree alone on N flows per class (the
previous code takes hours at sizes where throughput, not start-up, dominates). The previous
code runs on this build's C++ core unless ``--previous-core`` gives the previous revision's
own, built from it (``git archive REV | tar -x -C /tmp/prev && pip wheel --no-build-isolation
--no-deps /tmp/prev -w /tmp/wheel``, then the ``pytrafgen/_core*.so`` inside the wheel). The
committed figures:

    cd benchmarks && python bench_ar.py --pipeline 40 --previous 9bc6374 \
        --previous-core /tmp/j14/build/_core.cpython-311-x86_64-linux-gnu.so \
        --variant 'float16 cache={"int8_cache": false}' \
        --train-sizes "" --sample-sizes "" --out results/ar_cpu

``--variant LABEL=JSON`` adds a run of this tree with those sampling settings.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bench_common import cpu_model, write_results

from pytrafgen.generators.ar.config import size_config
from pytrafgen.generators.ar.model import GPT
from pytrafgen.generators.ar.sample import GrammarTables, SamplingSettings, sample_batch
from pytrafgen.generators.ar.train import autocast_for, make_optimizer, resolve_device

# dense bf16 tensor-core peak, for MFU
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
CLASSES = ["benign_http", "syn_flood", "mqtt_bruteforce"]


def machine() -> dict[str, object]:
    info: dict[str, object] = {"nproc": int(subprocess.check_output(["nproc"]).strip()), "cpu": cpu_model(),
                               "load_average_1m": round(os.getloadavg()[0], 2),
                               "python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(size: str, vocab_size: int, batch: int, steps: int, warmup: int, device: torch.device,
                   compile_model: bool) -> dict[str, object]:
    # random tokens: any id can stand for BOS; what matters is that class conditioning runs
    model_cfg, train_cfg = size_config(size, vocab_size, batch_size=batch, bos_token=0)
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg, device)
    runner = torch.compile(model) if compile_model else model
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randint(0, vocab_size, (batch, model_cfg.block_size), generator=gen).to(device)
    y = torch.randint(0, vocab_size, (batch, model_cfg.block_size), generator=gen).to(device)

    def step() -> None:
        with autocast_for(device):
            _, loss = runner(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    tokens_per_s = steps * batch * model_cfg.block_size / seconds
    achieved = model.flops_per_token() * tokens_per_s
    peak = peak_flops(device)
    return {
        "size": size, "params": model.num_params(), "block_size": model_cfg.block_size, "batch": batch,
        "steps": steps, "compile": compile_model, "bf16": device.type == "cuda",
        "fused_adamw": device.type == "cuda", "tokens_per_s": tokens_per_s,
        "achieved_tflops": achieved / 1e12, "mfu": achieved / peak if peak else None,
    }


@torch.no_grad()
def naive_sample(model: GPT, grammar: GrammarTables, prompts: torch.Tensor, steps: int) -> torch.Tensor:
    """The baseline: per layer a KV cache grown with torch.cat every step, no preallocation."""
    cfg = model.config
    state = torch.full((prompts.size(0),), grammar.start_state, dtype=torch.long, device=prompts.device)
    for t in range(prompts.size(1)):
        state = grammar.next_state[state, prompts[:, t]]
    keys: list[torch.Tensor | None] = [None] * cfg.n_layer
    values: list[torch.Tensor | None] = [None] * cfg.n_layer
    idx, pos, out = prompts, 0, []
    for _ in range(steps):
        B, T = idx.shape
        positions = torch.arange(pos, pos + T, device=idx.device)
        flow_class = torch.where(positions[None, :] == 0, cfg.bos_token, prompts[:, 1:2])
        x = model._embed(idx, positions, flow_class)
        for i, block in enumerate(model.blocks):
            h = block.ln_1(x)
            q, k, v = block.attn.c_attn(h).split(cfg.n_embd, dim=2)
            q, k, v = (t_.view(B, T, cfg.n_head, -1).transpose(1, 2) for t_ in (q, k, v))
            keys[i] = k if keys[i] is None else torch.cat([keys[i], k], dim=2)
            values[i] = v if values[i] is None else torch.cat([values[i], v], dim=2)
            y = F.scaled_dot_product_attention(q, keys[i], values[i], is_causal=T > 1)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, cfg.n_embd))
            x = x + block.mlp(block.ln_2(x))
        logits = model._logits(x[:, -1:])[:, 0].float().masked_fill(~grammar.allowed[state], float("-inf"))
        token = torch.multinomial(torch.softmax(logits, -1), 1)[:, 0]
        state = grammar.next_state[state, token]
        state = torch.where(state < 0, grammar.start_state, state)
        out.append(token)
        pos += T
        idx = token[:, None]
    return torch.stack(out, 1)


def bench_sampling(size: str, vocab, batch: int, device: torch.device, compile_decode: bool,
                   naive: bool, tokens_per_packet: float | None) -> dict[str, object]:
    from pytrafgen.generators.ar import tokens as tok

    model_cfg, _ = size_config(size, vocab.size, bos_token=tok.special_tokens(vocab).bos)
    torch.manual_seed(0)
    model = GPT(model_cfg).to(device).eval()
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    grammar = tok.grammar_tables(vocab, device)
    special = tok.special_tokens(vocab)
    prompts = torch.tensor([[special.bos, vocab.class_token(CLASSES[i % len(CLASSES)])] for i in range(batch)],
                           device=device)
    # every position is sampled: EOS is masked out so no row finishes early and the count is exact
    no_eos = GrammarTables(grammar.allowed.clone(), grammar.next_state, grammar.start_state)
    no_eos.allowed[:, special.eos] = False  # where EOS is legal, so is PKT: the flow goes on
    settings = SamplingSettings(batch_size=batch, compile=compile_decode)
    decode_fn = torch.compile(model.decode, mode="reduce-overhead") if compile_decode else None
    gen = torch.Generator(device=device).manual_seed(0)
    sample_batch(model, no_eos, prompts, special.eos, settings, gen, decode_fn)  # warm-up / compile
    sync(device)
    start = time.perf_counter()
    tokens, _ = sample_batch(model, no_eos, prompts, special.eos, settings, gen, decode_fn)
    sync(device)
    seconds = time.perf_counter() - start
    emitted = batch * (model_cfg.block_size - prompts.size(1))
    per_packet = tokens_per_packet or emitted / max(int((tokens == special.pkt).sum()), 1)
    result: dict[str, object] = {
        "size": size, "params": model.num_params(), "batch": batch, "max_len": model_cfg.block_size,
        "compile": compile_decode, "tokens_per_s": emitted / seconds,
        "tokens_per_packet": per_packet, "packets_per_s": emitted / seconds / per_packet,
    }
    if naive:
        steps = model_cfg.block_size - prompts.size(1)
        naive_sample(model, no_eos, prompts, 4)
        sync(device)
        start = time.perf_counter()
        naive_sample(model, no_eos, prompts, steps)
        sync(device)
        result["naive_tokens_per_s"] = batch * steps / (time.perf_counter() - start)
        result["speedup_vs_naive"] = result["tokens_per_s"] / result["naive_tokens_per_s"]
    return result


REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "pytrafgen" / "data" / "default_model"


def bench_pipeline(flows_per_class: int, previous: str | None, threads_env: str | None,
                   previous_core: Path | None = None, float32_row: bool = False,
                   variants: dict[str, dict[str, object]] | None = None) -> list[dict[str, object]]:
    """``pytrafgen generate`` of the bundled default, previous code (unless None) then this
    tree's, each in a fresh process; wall time of the whole command. ``previous_core``: the
    previous revision's built ``_core*.so`` (else the previous code runs on this build's).
    ``float32_row``: a further run, this tree with ``bf16_linears`` off (float32 projections).
    ``variants``: further runs of this tree, label → sampling settings."""
    classes = json.loads((DEFAULT_MODEL / "config.json").read_text())["classes"]
    work = Path(tempfile.mkdtemp(prefix="bench_ar_"))
    runs: list[tuple[str, str, dict[str, object]]] = [("this tree", "current", {})]
    if float32_row:
        runs.append(("this tree, float32 projections", "current", {"bf16_linears": False}))
    for label, sampling in (variants or {}).items():
        runs.append((f"this tree, {label}", "current", sampling))
    if previous:
        old_tree = work / "previous"
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", previous, "pytrafgen"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        if previous_core:
            shutil.copy(previous_core, old_tree / "pytrafgen" / previous_core.name)
        runs.insert(0, (f"previous ({previous})", str(old_tree), {}))
    rows = []
    env = dict(os.environ)
    if threads_env:
        env["OMP_NUM_THREADS"] = threads_env
    for label, code, sampling in runs:
        env["PYTRAFGEN_BENCH_SAMPLING"] = json.dumps(sampling)  # read by ar_generate_child.py
        out = work / f"{'old' if code != 'current' else 'new'}.pcap"
        argv = ["generate", str(DEFAULT_MODEL), *[a for c in classes for a in ("--class", f"{c}:{flows_per_class}")],
                "--out", str(out), "--seed", "0", "--json"]
        tokens_file = work / "tokens.json"
        load = round(os.getloadavg()[0], 2)
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("ar_generate_child.py")), code,
                               str(tokens_file), *argv], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        # CPU seconds of the child: on a shared machine wall time mostly says how busy it was
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        if done.returncode != 0:
            sys.exit(f"{label}: generate failed:\n{done.stderr[-3000:]}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        child = json.loads(tokens_file.read_text())
        packets = sum(summary["packets"].values())
        row = {"code": label, "package": child["package"], "flows": sum(summary["flows"].values()),
               "packets": packets, "tokens": child["tokens"], "redrawn": summary["sampling"].get("redrawn"),
               "wall_s": seconds, "packets_per_s": packets / seconds, "tokens_per_s": child["tokens"] / seconds,
               "cpu_s": cpu_s, "packets_per_cpu_s": packets / cpu_s,
               "load_average_start": load, "load_average_end": round(os.getloadavg()[0], 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    shutil.rmtree(work, ignore_errors=True)
    if previous:
        for row in rows[1:]:
            for key in ("packets_per_s", "tokens_per_s", "packets_per_cpu_s"):
                row[f"speedup_{key}"] = row[key] / rows[0][key]
    return rows


def parse_variants(specs: list[str]) -> dict[str, dict[str, object]]:
    """``LABEL=JSON`` items of ``--variant`` → label → sampling settings (exit on a bad one)."""
    variants = {}
    for spec in specs:
        label, _, settings = spec.partition("=")
        try:
            parsed = json.loads(settings)
        except json.JSONDecodeError as err:
            sys.exit(f"--variant {spec!r}: expected LABEL=JSON settings ({err})")
        if not label or not isinstance(parsed, dict):
            sys.exit(f"--variant {spec!r}: expected LABEL=JSON settings, e.g. 'float16 cache={{\"int8_cache\": false}}'")
        variants[label] = parsed
    return variants


def dataset_tokens_per_packet(path: Path) -> float:
    from pytrafgen.dataset import TrafficDataset

    ds = TrafficDataset(path)
    tokens = ds.tokens("train")
    return len(tokens) / max(int(np.count_nonzero(tokens == ds.vocab.special("PKT"))), 1)


def _pipeline_table(rows: list[dict]) -> list[str]:
    lines = ["| code | flows | packets | tokens | redrawn | wall s | packets/s | tokens/s | CPU s | packets/CPU s | "
             "load avg (start → end) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = (f"{r['cpu_s']:.1f} | {r['packets_per_cpu_s']:,.1f}" if "cpu_s" in r else "- | -")
        lines.append(f"| {r['code']} | {r['flows']} | {r['packets']:,} | {r['tokens']:,} | {r['redrawn']} | "
                     f"{r['wall_s']:.1f} | {r['packets_per_s']:,.1f} | {r['tokens_per_s']:,.0f} | {cpu} | "
                     f"{r['load_average_start']} → {r['load_average_end']} |")
    return lines


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# AR generator throughput ({report['device']})", "", f"Date: {report['date']}  ",
             f"Machine: {m['nproc']} cores, {m['cpu']}, torch {m['torch']} ({report['threads']} threads); "
             f"shared with other jobs: load average {m['load_average_start']} at start, "
             f"{m['load_average_1m']} at the end  ", f"Command: `{report['command']}`", ""]
    if report["training"]:
        lines += ["## Training", "", "| size | params | context | batch | compile | bf16 | tokens/s | TFLOP/s | MFU |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in report["training"]:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a (no GPU peak)"
            lines.append(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['block_size']} | {r['batch']} | "
                         f"{r['compile']} | {r['bf16']} | {r['tokens_per_s']:,.0f} | {r['achieved_tflops']:.3f} | {mfu} |")
    if report["sampling"]:
        lines += ["", "## Sampling (grammar-masked, static KV cache)", "",
                  "| size | batch | compile | tokens/s | tokens/packet | packets/s | naive tokens/s | speed-up |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["sampling"]:
            naive = f"{r['naive_tokens_per_s']:,.0f}" if "naive_tokens_per_s" in r else "-"
            ratio = f"{r['speedup_vs_naive']:.2f}x" if "speedup_vs_naive" in r else "-"
            lines.append(f"| {r['size']} | {r['batch']} | {r['compile']} | {r['tokens_per_s']:,.0f} | "
                         f"{r['tokens_per_packet']:.1f} | {r['packets_per_s']:,.0f} | {naive} | {ratio} |")
    pipe = report.get("pipeline")
    if pipe:
        lines += ["", "## Whole pipeline: `pytrafgen generate` with the bundled default, fresh process", "",
                  f"Date: {pipe['date']}  ", f"Command: `{pipe['command']}`  ",
                  f"Each run: {pipe['flows_per_class']} flows of each of the model's "
                  f"{pipe['classes']} classes to a pcap (`generate --json`, seed 0); wall time of the whole "
                  f"process (start-up, model load, sampling, decoding, building the pcap); tokens = sampled "
                  f"tokens of the flows kept. Threads: {pipe['threads']}. The previous code's C++ core: "
                  f"{pipe.get('previous_core', 'this build' + chr(39) + 's')}.", "",
                  *_pipeline_table(pipe["rows"])]
        new = pipe["rows"][1]
        lines += ["", f"This tree / previous, same run: **{new['speedup_packets_per_s']:.2f}x packets/s, "
                  f"{new['speedup_tokens_per_s']:.2f}x tokens/s** (wall)"
                  + (f", {new['speedup_packets_per_cpu_s']:.2f}x packets per CPU second"
                     if "speedup_packets_per_cpu_s" in new else "")
                  + " (the two runs drew different flows: tokens per packet differ)."]
        for extra in pipe["rows"][2:]:
            lines += ["", f"{extra['code']} / previous, same run: {extra['speedup_packets_per_s']:.2f}x packets/s, "
                      f"{extra['speedup_tokens_per_s']:.2f}x tokens/s (wall), "
                      f"{extra['speedup_packets_per_cpu_s']:.2f}x packets per CPU second."]
        scale = report.get("pipeline_scale")
        if scale:
            lines += ["", f"### This tree alone, {scale['flows_per_class']} flows per class", "",
                      f"Date: {scale['date']}  ", f"Command: `{scale['command']}`  ",
                      "The previous code was not run at this size.", "", *_pipeline_table(scale["rows"])]
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-sizes", default="base")
    parser.add_argument("--sample-sizes", default="small")
    parser.add_argument("--vocab-size", type=int, default=4096, help="training benchmark vocabulary (DESIGN §8)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sample-batch", type=int, default=4096)
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive sampler")
    parser.add_argument("--dataset", type=Path, help="tokenized dataset for real tokens per packet")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ar"))
    parser.add_argument("--note", default="")
    parser.add_argument("--pipeline", type=int, default=0, metavar="N",
                        help="also time `pytrafgen generate` of N flows per class, previous code vs this tree")
    parser.add_argument("--previous", default="HEAD", help="git revision of the previous code (--pipeline)")
    parser.add_argument("--previous-core", type=Path,
                        help="the previous revision's built _core*.so (default: this build's, so a change "
                             "in the C++ core counts for both)")
    parser.add_argument("--float32-row", action="store_true",
                        help="--pipeline: also run this tree with bf16_linears off (float32 projections)")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=JSON",
                        help="--pipeline: also run this tree with these sampling settings, e.g. "
                             "'float16 cache={\"int8_cache\": false}' (repeatable)")
    parser.add_argument("--scale", type=int, default=0, metavar="N",
                        help="also time this tree alone on N flows per class (kept beside the last --pipeline)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    use_compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    from pytrafgen.plugins import get_registry
    from pytrafgen.tokenizer.vocab import Vocabulary

    load_start = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was
    vocab = Vocabulary.for_protocols(get_registry().protocols.values(), CLASSES)
    per_packet = dataset_tokens_per_packet(args.dataset) if args.dataset else None
    training = [bench_training(s, args.vocab_size, args.train_batch, args.train_steps, args.warmup, device,
                               use_compile) for s in args.train_sizes.split(",") if s]
    for r in training:
        print(json.dumps(r), flush=True)
    sampling = [bench_sampling(s, vocab, args.sample_batch, device, use_compile, not args.no_naive, per_packet)
                for s in args.sample_sizes.split(",") if s]
    for r in sampling:
        print(json.dumps(r), flush=True)
    pipeline = None
    if args.pipeline:
        if args.previous_core and not args.previous_core.name.startswith("_core"):
            sys.exit(f"--previous-core {args.previous_core}: expected a built _core*.so")
        rows = bench_pipeline(args.pipeline, args.previous, os.environ.get("OMP_NUM_THREADS"), args.previous_core,
                              args.float32_row, parse_variants(args.variant))
        classes = len(json.loads((DEFAULT_MODEL / "config.json").read_text())["classes"])
        pipeline = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join([Path(sys.executable).name, *sys.argv]), "flows_per_class": args.pipeline,
                    "classes": classes, "rows": rows,
                    "previous_core": ("the previous revision's own, built from it" if args.previous_core
                                      else "this build's (only the Python code differs)"),
                    "threads": os.environ.get("OMP_NUM_THREADS") or "as each code sets them (this tree: sized to the idle cores)"}
    scale = None
    if args.scale:
        scale = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "command": " ".join([Path(sys.executable).name, *sys.argv]), "flows_per_class": args.scale,
                 "rows": bench_pipeline(args.scale, None, os.environ.get("OMP_NUM_THREADS"))}
    if (pipeline or scale) and not training and not sampling and args.out.with_suffix(".json").exists():
        # only the pipeline was measured: keep the other sections of the last full run
        kept = json.loads(args.out.with_suffix(".json").read_text())
        kept["pipeline"] = pipeline or kept.get("pipeline")
        # a scale run belongs to the code of the pipeline run beside it: a new pipeline drops it
        kept["pipeline_scale"] = scale or (None if pipeline else kept.get("pipeline_scale"))
        write_results(args.out, kept, to_markdown(kept))
        return
    report = {
        "pipeline": pipeline,
        "pipeline_scale": scale,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_start": load_start},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "threads": torch.get_num_threads(), "sampling_vocab_size": vocab.size,
        "training": training, "sampling": sampling, "note": args.note,
    }
    write_results(args.out, report, to_markdown(report))


if __name__ == "__main__":
    main()
