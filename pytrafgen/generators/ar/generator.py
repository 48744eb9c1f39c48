"""``ARGenerator``: the autoregressive transformer behind the ``Generator`` interface.

A checkpoint directory holds ``config.json`` (generator name, model shape, classes, vocabulary
hash, finished stages), ``vocab.json``, ``address_plan.json``, ``payload_fill.json`` and
``iat_fill.json`` (where the training dataset had them), ``weights.safetensors`` (the best
weights, LoRA merged) and, to resume training, ``train_state.safetensors`` (current weights,
optimizer moments, RNG state) with ``train_state.json`` (step, early-stopping counters,
settings). Nothing is unpickled on load.

torch is imported inside the methods so that listing plugins stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pytrafgen.atomic import atomic_dir
from pytrafgen.errors import CheckpointError, DatasetError, PytrafgenError
from pytrafgen.generators.ar.config import GPTConfig, SamplingSettings, TrainConfig, size_config
from pytrafgen.interfaces import Generator

if TYPE_CHECKING:
    import torch

    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.ar.model import GPT
    from pytrafgen.generators.ar.train import Snapshot
    from pytrafgen.iat_fill import IatFill
    from pytrafgen.records import FieldRecords

STAGES = ("pretrain", "finetune")
MAX_SAMPLING_ROUNDS = 20
LONGEST_FLOW_FACTOR = 2  # continued flows: closed at this many times the class's longest training flow
# fit() settings that are not model or TrainConfig fields
_RUN_SETTINGS = {"stage", "size", "device", "checkpoint_dir", "resume", "quiet"}


class ARGenerator(Generator):
    name: ClassVar[str] = "ar"
    description: ClassVar[str] = (
        "GPT decoder over static-tokenizer tokens: pre-trained on benign flows, fine-tuned per "
        "attack class, grammar-constrained sampling"
    )
    sampling_options: ClassVar[frozenset[str]] = frozenset({"temperature", "top_k", "top_p", "batch_size", "compile",
                                                                   "half_cache", "int8_cache", "bf16_linears",
                                                                   "fused_step", "max_flow_packets"})
    checkpoints_during_fit: ClassVar[bool] = True
    draws_fit_progress: ClassVar[bool] = True

    @classmethod
    def fit_setting_names(cls) -> frozenset[str]:
        from dataclasses import fields

        return frozenset(_RUN_SETTINGS | {"seed"} | {f.name for f in fields(GPTConfig)}
                         | {f.name for f in fields(TrainConfig)})

    def __init__(self, size: str = "small") -> None:
        self.size = size
        self.model_config: GPTConfig | None = None  # of the saved (LoRA-merged) weights
        self.weights: dict[str, torch.Tensor] | None = None
        self.vocab_json: dict[str, Any] | None = None
        self.address_plan_json: dict[str, Any] | None = None
        self.payload_fill_text: str | None = None  # payload_fill.json of the training dataset, where it had one
        # iat_fill.json of the training dataset (or added later, pytrafgen learn-gaps): gaps inside
        # their IAT bucket per class; None decodes each bucket to its fixed value
        self.iat_fill: IatFill | None = None
        self.classes: list[str] = []
        # per class, the flow-header tokens its training flows used (see tokens.header_tokens)
        self.header: dict[str, list[list[int]]] = {}
        # per class, the most packets one of its training flows had: with continuation, a
        # sampled flow is closed at LONGEST_FLOW_FACTOR times that at the latest
        self.longest_flow: dict[str, int] = {}
        self.completed: list[dict[str, Any]] = []  # finished stages: name, steps, best val loss
        self.snapshot: Snapshot | None = None  # training state of the latest stage (resume)
        self.snapshot_model: GPTConfig | None = None  # model shape the snapshot was trained with
        self.snapshot_train: TrainConfig | None = None
        self.sampling = SamplingSettings()
        self.device = "auto"
        self.show_progress = True
        self._vocab: Any = None
        self._sampling_model: tuple[str, GPT] | None = None
        self.last_sample_stats: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ fit

    def fit(self, dataset: TrafficDataset, settings: Mapping[str, Any] | None = None) -> None:
        """Train on ``dataset``. Settings: ``stage`` ("pretrain", "finetune" or "all", the
        default: pre-train then fine-tune), ``size``, ``device``, ``checkpoint_dir`` (periodic
        checkpoints), ``resume`` (continue the stage in this generator's training state),
        ``quiet``, ``replay``, ``lora_rank`` and any ``GPTConfig`` / ``TrainConfig`` field."""
        from pytrafgen.generators.ar.train import init_distributed, resolve_device

        s = dict(settings or {})
        stage = s.get("stage", "all")
        if stage not in (*STAGES, "all"):
            raise PytrafgenError(f"unknown stage {stage!r}; use pretrain, finetune or all")
        self.size = s.get("size") or self.size
        self.show_progress = not s.get("quiet", False)
        ctx = init_distributed(s.get("device", "auto"))
        device = resolve_device(s.get("device", "auto"), ctx)
        self._adopt_dataset(dataset)
        wanted = list(STAGES) if stage == "all" else [stage]
        if stage == "all":  # a stage without flows of its kind is skipped, not an error
            kinds = set(dataset.class_kinds.values())
            wanted = [w for w in wanted if ("benign" if w == "pretrain" else "malicious") in kinds] or wanted
            if s.get("resume"):
                done = {c["stage"] for c in self.completed}
                wanted = [w for w in wanted if w not in done]
        for i, name in enumerate(wanted):
            self._fit_stage(dataset, name, s, device, ctx)
            if i + 1 < len(wanted) and s.get("checkpoint_dir") and ctx.is_main:
                self.save(Path(s["checkpoint_dir"]))

    def _adopt_dataset(self, dataset: TrafficDataset) -> None:
        from pytrafgen.generators.ar import tokens as tok

        vocab_json = tok.vocab_json(dataset)
        if self.vocab_json is not None and tok.vocab_hash(vocab_json) != tok.vocab_hash(self.vocab_json):
            raise DatasetError(
                f"{dataset.path}: dataset vocabulary {tok.vocab_hash(vocab_json)} differs from the "
                f"checkpoint's {tok.vocab_hash(self.vocab_json)}; tokenize it with the same vocabulary"
            )
        self.vocab_json = vocab_json
        self._vocab = None
        self.protocols = dataset.protocols
        self.address_plan_json = tok.address_plan_json(dataset)
        fill = Path(dataset.path) / "payload_fill.json"
        self.payload_fill_text = fill.read_text() if fill.is_file() else None
        self.classes = list(dataset.classes)
        self._adopt_gaps(Path(dataset.path))
        seen = tok.header_tokens(dataset.tokens("train"), dataset.offsets("train"), dataset.labels("train"),
                                 self.classes)
        for name, positions in seen.items():  # union with what earlier stages saw
            old = self.header.get(name, [[] for _ in positions])
            self.header[name] = [sorted(set(a) | set(b)) for a, b in zip(old, positions, strict=True)]
        for name, n in tok.longest_flows(dataset.tokens("train"), dataset.offsets("train"), dataset.labels("train"),
                                         self.classes, tok.special_tokens(dataset.vocab).pkt).items():
            self.longest_flow[name] = max(n, self.longest_flow.get(name, 0))

    def _adopt_gaps(self, dataset_dir: Path) -> None:
        """The dataset's gap table; a dataset made before it keeps the checkpoint's, where that
        one's classes are all the dataset's (the same real gaps still hold), else none."""
        from pytrafgen.iat_fill import FILE_NAME, IatFill

        table = IatFill.load(dataset_dir / FILE_NAME)
        if table is not None:
            table.check_classes(self.classes, str(dataset_dir))
        elif self.iat_fill is not None and set(self.iat_fill.classes) <= set(self.classes):
            table = self.iat_fill
        self.iat_fill = table

    def _fit_stage(self, dataset: TrafficDataset, stage: str, s: dict[str, Any], device: torch.device,
                   ctx: Any) -> None:
        import torch

        from pytrafgen.generators.ar import tokens as tok
        from pytrafgen.generators.ar.continuation import continuation_tokens
        from pytrafgen.generators.ar.data import FlowWindows, class_shares
        from pytrafgen.generators.ar.model import GPT
        from pytrafgen.generators.ar.train import train_stage

        vocab = self.vocabulary()
        overrides = {k: v for k, v in s.items() if k not in _RUN_SETTINGS}
        if stage == "pretrain":
            overrides["lora_rank"] = 0  # adapters only make sense on top of trained weights
        model_cfg, train_cfg = size_config(self.size, tok.vocab_size(vocab), **overrides)
        resume = None
        if s.get("resume") and self.snapshot is not None and self.snapshot.state.stage == stage:
            resume = self.snapshot
            assert self.snapshot_model is not None and self.snapshot_train is not None
            model_cfg = self.snapshot_model
            # the saved settings win, except a longer run asked for explicitly
            train_cfg = replace(self.snapshot_train, steps=overrides.get("steps") or self.snapshot_train.steps)
        elif self.model_config is not None:  # continue from trained weights: keep their shape
            model_cfg = replace(self.model_config, lora_rank=int(overrides.get("lora_rank") or 0),
                                dropout=overrides.get("dropout", self.model_config.dropout))
        if resume is None and self.model_config is None and model_cfg.continuation_buckets > 0:
            # a fresh model: CONT and the packet buckets come after the tokenizer's tokens
            model_cfg = replace(model_cfg, vocab_size=tok.vocab_size(vocab) + 1 + model_cfg.continuation_buckets)
        special = tok.special_tokens(vocab)
        if model_cfg.class_conditioning and model_cfg.bos_token < 0:
            model_cfg = replace(model_cfg, bos_token=special.bos)
        torch.manual_seed(train_cfg.seed)  # the same initial weights on every rank and every run
        model = GPT(model_cfg)
        if resume is None and self.weights is not None:
            missing, unexpected = model.load_state_dict(self.weights, strict=False)
            if unexpected or any("lora_" not in m for m in missing):
                raise CheckpointError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
        model.to(device)
        torch.manual_seed(train_cfg.seed + ctx.rank)  # dropout differs per rank

        kinds = [dataset.class_kinds[c] for c in dataset.classes]
        shares = class_shares(kinds, stage, train_cfg.replay)

        def windows(split: str) -> FlowWindows | None:
            offsets = dataset.offsets(split)
            if len(offsets) < 2:
                return None
            return FlowWindows(dataset.tokens(split), offsets, dataset.labels(split), model_cfg.block_size,
                               special, seed=train_cfg.seed, continuation=continuation_tokens(model_cfg))

        train_w = windows("train")
        if train_w is None or not len(train_w):
            raise DatasetError(f"{dataset.path}: the train split has no flows that fit the context")
        val_w = windows("val")
        val_weights = None
        if val_w is not None and len(val_w):
            try:
                val_weights = val_w.class_balanced_weights(shares)
            except DatasetError:
                val_w = None  # no validation flows of this stage's classes: no early stopping
        else:
            val_w = None
        self.snapshot_model, self.snapshot_train = model_cfg, train_cfg
        checkpoint_dir = s.get("checkpoint_dir")

        def on_checkpoint(snapshot: Snapshot) -> None:
            self._take(snapshot, model_cfg)
            if checkpoint_dir:
                self.save(Path(checkpoint_dir))

        snapshot = train_stage(model, train_w, train_w.class_balanced_weights(shares), val_w, val_weights,
                               train_cfg, stage, device, ctx, on_checkpoint, resume, self.show_progress)
        self._take(snapshot, model_cfg)
        self.completed = [c for c in self.completed if c["stage"] != stage] + [{
            "stage": stage, "steps": snapshot.state.step, "tokens": snapshot.state.tokens,
            "best_val_loss": snapshot.state.best_val, "stopped_early": snapshot.state.stopped_early,
            "dropped_flows": train_w.dropped, "truncated_flows": train_w.truncated,
            "continued_flows": train_w.continued,
        }]

    def adopt_vocabulary(self, vocab_json: dict[str, Any]) -> None:
        """Move trained weights to another vocabulary (a warm start on a dataset tokenized with
        more application protocols, e.g. CoAP added): a token keeps its embedding row when its
        range (same name) exists in both, at the same offset; tokens of new ranges get rows drawn
        like the others (mean and spread of the trained rows). Token ids held elsewhere (the
        BOS of class conditioning, the per-class header tokens) move with them. Only for a
        model without continuation tokens (add those after)."""
        import numpy as np
        import torch

        if self.weights is None or self.model_config is None or self.vocab_json is None:
            raise CheckpointError("the generator has no weights: fit or load it first")
        if self.model_config.continuation_buckets > 0:
            raise CheckpointError("adopt the vocabulary before adding continuation tokens")
        if list(vocab_json.get("classes", [])) != list(self.vocab_json.get("classes", [])):
            raise DatasetError("the new vocabulary has other classes than the checkpoint's; train afresh")
        old_ranges = {r["name"]: r for r in self.vocab_json["ranges"]}
        size = int(vocab_json["size"])
        old_of_new = np.full(size, -1, dtype=np.int64)
        for r in vocab_json["ranges"]:
            was = old_ranges.get(r["name"])
            if was is not None:
                n = min(int(r["size"]), int(was["size"]))
                old_of_new[r["start"]: r["start"] + n] = np.arange(was["start"], was["start"] + n)
        new_of_old = {int(o): i for i, o in enumerate(old_of_new) if o >= 0}
        old = self.weights["wte.weight"].float()
        gen = torch.Generator().manual_seed(0)
        rows = old.mean(0) + old.std(0) * torch.randn((size, old.size(1)), generator=gen)
        kept = torch.from_numpy(np.flatnonzero(old_of_new >= 0))
        rows[kept] = old[torch.from_numpy(old_of_new[old_of_new >= 0])]
        self.weights = {k: (w.float() if w.is_floating_point() else w) for k, w in self.weights.items()}
        self.weights["wte.weight"] = rows
        bos = self.model_config.bos_token
        self.model_config = replace(self.model_config, vocab_size=size,
                                    bos_token=new_of_old.get(bos, -1) if bos >= 0 else bos)
        self.header = {c: [[new_of_old[t] for t in ids if t in new_of_old] for ids in positions]
                       for c, positions in self.header.items()}
        self.vocab_json = vocab_json
        self._vocab = None
        self.snapshot = self.snapshot_model = self.snapshot_train = None
        self._sampling_model = None

    def add_continuation(self, buckets: int = 14, context_packets: int = 4) -> None:
        """Give trained weights without continuation tokens (an older checkpoint) CONT and
        ``buckets`` packet-bucket tokens, so that further training (a warm start) learns whole
        flows: the embedding grows by their rows (drawn like the others: mean and spread of the
        trained rows); every other weight is kept. The resumable training state is dropped (its
        optimizer moments have the old shape)."""
        import torch

        if self.weights is None or self.model_config is None:
            raise CheckpointError("the generator has no weights: fit or load it first")
        if self.model_config.continuation_buckets > 0:
            raise CheckpointError("the model already has continuation tokens")
        if buckets <= 0:
            raise PytrafgenError(f"buckets must be > 0, got {buckets}")
        old = self.weights["wte.weight"].float()
        gen = torch.Generator().manual_seed(0)
        extra = old.mean(0) + old.std(0) * torch.randn((1 + buckets, old.size(1)), generator=gen)
        weights = dict(self.weights)
        weights["wte.weight"] = torch.cat([old, extra]).to(self.weights["wte.weight"].dtype)
        self.weights = {k: (w.float() if w.is_floating_point() else w) for k, w in weights.items()}
        self.model_config = replace(self.model_config, vocab_size=old.size(0) + 1 + buckets,
                                    continuation_buckets=buckets, continuation_context=context_packets)
        self.snapshot = self.snapshot_model = self.snapshot_train = None
        self._sampling_model = None

    def _take(self, snapshot: Snapshot, model_cfg: GPTConfig) -> None:
        self.snapshot = snapshot
        self.weights = snapshot.best_weights
        self.model_config = replace(model_cfg, lora_rank=0)
        self._sampling_model = None

    # --------------------------------------------------------------------------- sample

    def vocabulary(self) -> Any:
        from pytrafgen.generators.ar import tokens as tok

        if self._vocab is None:
            if self.vocab_json is None:
                raise CheckpointError("the generator has no vocabulary: fit or load it first")
            self._vocab = tok.vocab_from_json(self.vocab_json)
        return self._vocab

    def set_sampling(self, *, device: str | None = None, show_progress: bool | None = None,
                     **options: Any) -> None:
        """Sampling options for later ``sample`` calls (None keeps the current value):
        ``temperature``, ``top_k``, ``top_p``, ``batch_size``, ``compile``, ``half_cache`` (False keeps a
        CPU's key/value cache float32), ``int8_cache`` (True: int8 keys and values with a scale per
        slot where the CPU has AVX-512, ahead of ``half_cache``), ``bf16_linears`` (False keeps a CPU's projections float32
        where it would multiply them in bfloat16; see ``SamplingSettings``), ``fused_step`` (False runs a CPU's
        decoding steps as torch operators instead of one C++ call each), ``device``."""
        self.check_sampling_options(options)
        self.sampling = replace(self.sampling, **{k: v for k, v in options.items() if v is not None})
        if device is not None and device != self.device:
            self.device, self._sampling_model = device, None
        if show_progress is not None:
            self.show_progress = show_progress

    def _model_on_device(self) -> tuple[GPT, torch.device]:
        from pytrafgen.generators.ar.model import GPT
        from pytrafgen.generators.ar.train import resolve_device

        if self.weights is None or self.model_config is None:
            raise CheckpointError("the generator has no weights: fit or load it first")
        device = resolve_device(self.device)
        if self._sampling_model is None or self._sampling_model[0] != str(device):
            model = GPT(self.model_config)
            model.load_state_dict(self.weights)
            self._sampling_model = (str(device), model.to(device).eval())
        return self._sampling_model[1], device

    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        """``counts[class]`` flows per class, their gaps drawn inside their IAT bucket from the
        checkpoint's ``iat_fill.json`` and their payloads filled past the token cap from its
        ``payload_fill.json``, where it has them. The grammar guarantees structure but not the
        content of application messages (HTTP, MQTT), which the protocol plugin judges when
        decoding: a flow it rejects is drawn again (in the same pool of rows, up to
        ``MAX_SAMPLING_ROUNDS`` times, then in up to ``MAX_SAMPLING_ROUNDS`` further rounds);
        ``last_sample_stats`` says how many were."""
        import numpy as np

        from pytrafgen.generators.ar import tokens as tok
        from pytrafgen.generators.ar.continuation import continuation_tokens
        from pytrafgen.generators.ar.sample import cpu_threads, sample_classes
        from pytrafgen.tokenizer.encode import app_protocols_for

        model, device = self._model_on_device()
        vocab = self.vocabulary()
        protocols = app_protocols_for(vocab, self.protocols)  # a clear error before any sampling
        special = tok.special_tokens(vocab)
        # a model with continuation tokens has more tokens than the grammar: never sampled
        n_tokens = model.config.vocab_size
        grammar = tok.grammar_tables(vocab, device, n_tokens, protocols)
        continuation = continuation_tokens(model.config)
        class_tokens = tok.class_tokens(vocab)
        wanted = {name: int(n) for name, n in counts.items() if int(n) > 0}
        header = tok.header_masks({c: self.header[c] for c in wanted if c in self.header}, n_tokens)
        if header and len(header) < len(wanted):  # a class unseen in training: no restriction for it
            full = np.ones((tok.HEADER_POSITIONS, n_tokens), dtype=bool)
            header = {c: header.get(c, full) for c in wanted}
        caps = {class_tokens[c]: LONGEST_FLOW_FACTOR * self.longest_flow[c] for c in wanted if c in self.longest_flow}
        kept: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
        rejected: dict[str, int] = {}
        total = sum(wanted.values())
        sampled = [0]  # flows sampled so far, redrawn ones included

        with self._progress(total) as report:
            def on_batch(n_flows: int) -> None:
                sampled[0] += n_flows
                report(sampled[0], total + sum(rejected.values()))

            for round_ in range(MAX_SAMPLING_ROUNDS):
                missing = {name: n - len(kept[name]) for name, n in wanted.items() if len(kept[name]) < n}
                if not missing:
                    break
                round_seed = int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])
                def accept(seq: np.ndarray) -> bool:
                    return tok.decodable([seq], vocab, rejected, protocols)[0]

                # a rejected flow is drawn again within the round (same pool of rows)
                with cpu_threads(device):
                    sequences, names = sample_classes(model, grammar, special.bos, special.eos, class_tokens,
                                                      missing, self.sampling, round_seed, device,
                                                      on_progress=on_batch, header_allowed=header or None,
                                                      accept=accept, max_redraws=MAX_SAMPLING_ROUNDS,
                                                      continuation=continuation, pkt=special.pkt,
                                                      class_caps=caps)
                for seq, name in zip(sequences, names, strict=True):
                    kept[name].append(seq)
                report(sampled[0], total + sum(rejected.values()))  # redrawn flows add to the total
        short = {name: n - len(kept[name]) for name, n in wanted.items() if len(kept[name]) < n}
        if short:
            raise PytrafgenError(
                f"after {MAX_SAMPLING_ROUNDS} rounds the model still emits undecodable flows for "
                f"{', '.join(f'{k} ({v} missing)' for k, v in short.items())}: {rejected}; train it longer")
        self.last_sample_stats = {"flows": total, "redrawn": sum(rejected.values()), "redrawn_reasons": rejected}
        records = tok.decode_sequences([seq for name in wanted for seq in kept[name]], vocab, protocols)
        if self.iat_fill is not None:
            # each bucket's gap drawn from the class's real gaps in it, not the bucket's fixed value
            records = self.iat_fill.fill(records, seed)[0]
        if self.payload_fill_text is not None:
            # payload bytes past the token cap drawn from the class's learned byte model, so
            # gen.sample() + write_records() give the bytes `pytrafgen generate` writes
            from pytrafgen.payload_fill import PayloadFill

            records = PayloadFill.from_json(json.loads(self.payload_fill_text)).fill(records, seed)[0]
        return records

    def _progress(self, total: int) -> Any:
        """``on_progress`` when the caller set one, else a bar of our own (``show_progress``)."""
        import contextlib

        from pytrafgen.progress import progress_bar

        if self.on_progress is not None:
            return contextlib.nullcontext(self.on_progress)
        return progress_bar("sampling flows", total, enabled=self.show_progress and total > 0)

    # ----------------------------------------------------------------------- the CLI's contract

    def training_stages(self) -> list[dict[str, Any]]:
        return list(self.completed)

    def finish_fit(self) -> None:
        from pytrafgen.generators.ar.train import shutdown_distributed

        shutdown_distributed()

    def is_writer(self) -> bool:
        """Rank 0 under torchrun, or a plain single-process run."""
        import os

        return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0

    def export(self, path: Path) -> None:
        """The best weights as float16 (half the bytes, same samples to within rounding), without
        the resumable training state (which stays in the training checkpoint)."""
        import torch

        if self.weights is None:
            raise CheckpointError("nothing to export: the generator has not been trained")
        self.weights = {k: w.to(torch.float16) if w.is_floating_point() else w for k, w in self.weights.items()}
        self.snapshot = None
        self._sampling_model = None
        self.save(path)

    # ----------------------------------------------------------------------- save / load

    def config_json(self) -> dict[str, Any]:
        from pytrafgen.generators.ar import tokens as tok

        assert self.model_config is not None and self.vocab_json is not None
        return {
            "generator": self.name,
            "format": 1,
            "size": self.size,
            "model": self.model_config.to_dict(),
            "classes": self.classes,
            "vocab_hash": tok.vocab_hash(self.vocab_json),
            "stages": self.completed,
            "header_tokens": self.header,
            "longest_flow_packets": self.longest_flow,
        }

    def save(self, path: Path) -> None:
        from pytrafgen.safetensors_io import save_torch

        if self.weights is None or self.model_config is None:
            raise CheckpointError("nothing to save: the generator has not been trained")
        with atomic_dir(path) as tmp:
            (tmp / "config.json").write_text(json.dumps(self.config_json(), indent=2))
            (tmp / "vocab.json").write_text(json.dumps(self.vocab_json))
            (tmp / "address_plan.json").write_text(json.dumps(self.address_plan_json))
            if self.payload_fill_text is not None:
                (tmp / "payload_fill.json").write_text(self.payload_fill_text)
            if self.iat_fill is not None:
                from pytrafgen.iat_fill import FILE_NAME

                self.iat_fill.save(tmp / FILE_NAME)
            save_torch(self.weights, tmp / "weights.safetensors", {"generator": self.name})
            if self.snapshot is not None:
                assert self.snapshot_model is not None and self.snapshot_train is not None
                save_torch(self.snapshot.resume_tensors, tmp / "train_state.safetensors")
                (tmp / "train_state.json").write_text(json.dumps({
                    "state": self.snapshot.state.to_dict(),
                    "model": self.snapshot_model.to_dict(),
                    "train": self.snapshot_train.to_dict(),
                    "optimizer_groups": self.snapshot.optimizer_groups,
                }, indent=2))

    @classmethod
    def load(cls, path: Path) -> ARGenerator:
        from pytrafgen.generators import read_checkpoint_config
        from pytrafgen.generators.ar.train import Snapshot, TrainState
        from pytrafgen.safetensors_io import load_torch

        path = Path(path)
        config = read_checkpoint_config(path)
        if config["generator"] != cls.name:
            raise CheckpointError(f"{path}: a {config['generator']!r} checkpoint, not {cls.name!r}")
        gen = cls(config.get("size", "small"))
        try:
            gen.model_config = GPTConfig.from_dict(config["model"])
            gen.classes = list(config["classes"])
            gen.completed = list(config.get("stages", []))
            gen.header = dict(config.get("header_tokens", {}))
            gen.longest_flow = {str(k): int(v) for k, v in config.get("longest_flow_packets", {}).items()}
            gen.vocab_json = json.loads((path / "vocab.json").read_text())
            gen.address_plan_json = json.loads((path / "address_plan.json").read_text())
            fill = path / "payload_fill.json"
            gen.payload_fill_text = fill.read_text() if fill.is_file() else None
        except (KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: incomplete checkpoint ({type(exc).__name__}: {exc})") from None
        if not (path / "weights.safetensors").is_file():
            raise CheckpointError(f"{path}: weights.safetensors is missing")
        from pytrafgen.iat_fill import FILE_NAME, IatFill

        try:
            gen.iat_fill = IatFill.load(path / FILE_NAME)
            if gen.iat_fill is not None:
                gen.iat_fill.check_classes(gen.classes, str(path))
        except PytrafgenError as exc:
            raise CheckpointError(str(exc)) from None
        gen.weights = load_torch(path / "weights.safetensors")
        state_file = path / "train_state.json"
        if state_file.is_file() and (path / "train_state.safetensors").is_file():
            saved = json.loads(state_file.read_text())
            gen.snapshot = Snapshot(TrainState.from_dict(saved["state"]), gen.weights,
                                    load_torch(path / "train_state.safetensors"), saved["optimizer_groups"])
            gen.snapshot_model = GPTConfig.from_dict(saved["model"])
            gen.snapshot_train = TrainConfig.from_dict(saved["train"])
        return gen


__all__ = ["ARGenerator"]
