"""The ``gan`` generator: DoppelGANger/NetShare-style, class-conditioned, WGAN-GP.

Header-level like the originals: the networks generate flow attributes and per-packet header
fields; TCP seq/ack are made continuous from the generated lengths and flags, IP ids count up,
and payload bytes are *real payload prefixes* of the same class and direction with the nearest
length (``pytrafgen.generators.baseline_data``), zero-padded by the builder to the generated
length. torch is imported only when training or sampling, so ``pytrafgen plugins`` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pytrafgen.errors import DatasetError, PytrafgenError
from pytrafgen.generators.baseline_ckpt import (
    arrays_to_state,
    counts_to_labels,
    read_checkpoint,
    state_to_arrays,
    training_progress,
    write_checkpoint,
)
from pytrafgen.generators.baseline_data import EmpiricalParts, TrainingSet, assemble_records
from pytrafgen.interfaces import Generator
from pytrafgen.records import FieldRecords
from pytrafgen_gan.features import FlowEncoding

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"max_len": 16, "batch_packets": 4, "noise_dim": 8, "hidden": 32, "disc_hidden": 64, "iterations": 60,
             "batch_size": 32},
    "small": {"max_len": 64, "batch_packets": 8, "noise_dim": 16, "hidden": 128, "disc_hidden": 256,
              "iterations": 2000, "batch_size": 128},
    "base": {"max_len": 128, "batch_packets": 8, "noise_dim": 32, "hidden": 256, "disc_hidden": 512,
             "iterations": 20000, "batch_size": 256},
}
DEFAULTS: dict[str, Any] = {"size": "small", "seed": 0, "lr": 1e-3, "gp_weight": 10.0, "aux_weight": 1.0,
                            "n_ports": 32, "device": "auto", "payload_cap": 512, "payload_per_key": 256, "quiet": True,
                            "sample_batch": 4096}


def _size(name: str) -> dict[str, int]:
    if name not in SIZES:
        raise PytrafgenError(f"unknown size {name!r}; sizes: {', '.join(SIZES)}")
    return SIZES[name]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class GanGenerator(Generator):
    name: ClassVar[str] = "gan"
    description: ClassVar[str] = "DoppelGANger/NetShare-style WGAN-GP: flow attributes + per-packet field series"

    @classmethod
    def fit_setting_names(cls) -> frozenset[str]:
        return frozenset(DEFAULTS).union(*SIZES.values())

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        given = dict(settings or {})
        size = given.get("size", DEFAULTS["size"])
        self.settings: dict[str, Any] = {**DEFAULTS, **_size(size), **given}
        self.classes: list[str] = []
        self.class_kinds: list[str] = []
        self.encoding: FlowEncoding | None = None
        self.parts: EmpiricalParts | None = None
        self.trained: list[str] = []
        self.net: Any = None
        self.history: dict[str, float] = {}
        self._source_dir: Path | None = None

    def _shape(self) -> Any:
        from pytrafgen_gan.model import GanShape

        assert self.encoding is not None
        s = self.settings
        return GanShape(len(self.classes), len(self.encoding.combos), len(self.encoding.ports) + 1,
                        int(s["max_len"]), int(s["batch_packets"]), int(s["noise_dim"]), int(s["hidden"]),
                        int(s["disc_hidden"]))

    def fit(self, dataset: Any, settings: Mapping[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None) -> None:
        import torch

        from pytrafgen_gan.model import Critic, FlowGenerator, gradient_penalty

        given = dict(settings or {})
        if "size" in given:
            self.settings.update(_size(given["size"]))
        self.settings.update(given)
        s = self.settings
        data = TrainingSet.from_dataset("gan", dataset, s)
        self.classes, self.class_kinds, self.parts = data.classes, data.class_kinds, data.parts
        self._source_dir, self.trained, flows = data.source_dir, data.trained, data.flows
        seed = int(s["seed"])
        self.encoding = FlowEncoding.fit(flows, int(s["max_len"]), int(s["n_ports"]))
        attrs_np, feats_np = self.encoding.encode(flows)

        torch.manual_seed(seed)
        device = _device(str(s["device"]))
        shape = self._shape()
        attrs = torch.from_numpy(attrs_np).to(device)
        feats = torch.from_numpy(feats_np).to(device)
        onehot = torch.eye(shape.n_classes, device=device)[torch.from_numpy(flows.label.astype(np.int64)).to(device)]
        # class-balanced minibatches: rare attack classes get as many updates as benign ones
        weights = 1.0 / np.bincount(flows.label, minlength=shape.n_classes)[flows.label]
        weights = torch.from_numpy(weights / weights.sum()).to(device)
        gen = FlowGenerator(shape).to(device)
        feat_dim = shape.n_classes + shape.attr_dim + shape.max_len * feats.shape[2]
        critic = Critic(feat_dim, shape.disc_hidden).to(device)
        aux = Critic(shape.n_classes + shape.attr_dim, shape.disc_hidden).to(device)
        betas = (0.5, 0.9)
        opt_g = torch.optim.Adam(gen.parameters(), lr=float(s["lr"]), betas=betas)
        opt_d = torch.optim.Adam([*critic.parameters(), *aux.parameters()], lr=float(s["lr"]), betas=betas)
        iterations, batch = int(s["iterations"]), int(s["batch_size"])
        gp_w, aux_w = float(s["gp_weight"]), float(s["aux_weight"])
        started, cpu_started = time.perf_counter(), time.process_time()
        d_loss = g_loss = torch.zeros(())
        with training_progress("gan: training", bool(s["quiet"]), progress) as report:
            for step in range(iterations):
                idx = torch.multinomial(weights, batch, replacement=True)
                cls = onehot[idx]
                real_full = torch.cat([cls, attrs[idx], feats[idx].flatten(1)], 1)
                real_attr = torch.cat([cls, attrs[idx]], 1)
                with torch.no_grad():
                    fa, ff = gen(cls)
                fake_full = torch.cat([cls, fa, ff.flatten(1)], 1)
                fake_attr = torch.cat([cls, fa], 1)
                d_loss = (critic(fake_full).mean() - critic(real_full).mean()
                          + gp_w * gradient_penalty(critic, real_full, fake_full)
                          + aux_w * (aux(fake_attr).mean() - aux(real_attr).mean()
                                     + gp_w * gradient_penalty(aux, real_attr, fake_attr)))
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()

                fa, ff = gen(cls)
                g_loss = -critic(torch.cat([cls, fa, ff.flatten(1)], 1)).mean() - aux_w * aux(torch.cat([cls, fa], 1)).mean()
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                if report is not None:
                    report(step + 1, iterations)
        self.net = gen.cpu().eval()
        self.history = {"iterations": iterations, "seconds": time.perf_counter() - started,
                        "cpu_seconds": time.process_time() - cpu_started,
                        "final_d_loss": d_loss.item(), "final_g_loss": g_loss.item()}

    def set_sampling(self, **options: Any) -> None:
        """Sampling options from ``pytrafgen generate``: device, batch size; no
        temperature/top-k/top-p (those belong to token samplers)."""
        allowed = ('device', 'batch_size', 'show_progress')
        unknown = sorted(k for k in options if k not in allowed)
        if unknown:
            raise PytrafgenError(f"generator {self.name!r} takes no sampling options ({', '.join(unknown)})")
        if options.get("device") is not None:
            self.settings["device"] = options["device"]
        if options.get("batch_size") is not None:
            self.settings["sample_batch"] = int(options["batch_size"])

    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        import torch

        if self.net is None or self.encoding is None or self.parts is None:
            raise DatasetError("gan: fit() or load() first")
        labels = counts_to_labels(counts, self.classes, self.trained)
        if len(labels) == 0:
            return FieldRecords.empty(self.classes)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        device = _device(str(self.settings["device"]))
        net = self.net.to(device)
        attrs, feats = [], []
        chunk = int(self.settings["sample_batch"])
        with torch.inference_mode():
            eye = torch.eye(len(self.classes), device=device)
            for start in range(0, len(labels), chunk):
                part = torch.from_numpy(labels[start:start + chunk].astype(np.int64)).to(device)
                a, f = net(eye[part])
                attrs.append(a.float().cpu().numpy())
                feats.append(f.float().cpu().numpy())
                if self.on_progress is not None:
                    self.on_progress(min(start + chunk, len(labels)), len(labels))
        flows, packets = self.encoding.decode(labels, np.concatenate(attrs), np.concatenate(feats), rng)
        return assemble_records(self.classes, flows, packets, self.parts, rng)

    def save(self, path: Path) -> None:
        if self.net is None or self.encoding is None or self.parts is None:
            raise DatasetError("gan: nothing to save; fit() first")
        config = {"generator": self.name, "format": 1, "classes": self.classes, "class_kinds": self.class_kinds,
                  "trained_classes": self.trained, "settings": self.settings, "shape": asdict(self._shape()),
                  "history": self.history}
        tensors = {**state_to_arrays(self.net.state_dict(), "generator"), **self.encoding.arrays(),
                   **self.parts.arrays()}
        write_checkpoint(path, config, tensors, self._source_dir)

    @classmethod
    def load(cls, path: Path) -> GanGenerator:
        from pytrafgen_gan.model import FlowGenerator

        config, tensors = read_checkpoint(path, cls.name)
        gen = cls(config["settings"])
        gen.classes = list(config["classes"])
        gen.class_kinds = list(config.get("class_kinds", []))
        gen.trained = list(config["trained_classes"])
        gen.history = dict(config.get("history", {}))
        gen.encoding = FlowEncoding.from_arrays(tensors, int(gen.settings["max_len"]))
        gen.parts = EmpiricalParts.from_arrays(tensors)
        net = FlowGenerator(gen._shape())
        net.load_state_dict(arrays_to_state(tensors, "generator"))
        gen.net = net.eval()
        return gen
