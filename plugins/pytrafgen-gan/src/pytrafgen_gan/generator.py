"""The ``gan`` generator: DoppelGANger/NetShare-style, class-conditioned, WGAN-GP.

Header-level like the originals: the networks generate flow attributes and per-packet header
fields; TCP seq/ack are made continuous from the generated lengths and flags, IP ids count up,
and payload bytes are *real payload prefixes* of the same class and direction with the nearest
length (``pytrafgen.generators.baseline``), zero-padded by the builder to the generated
length. torch is imported only when training or sampling, so ``pytrafgen plugins`` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from pytrafgen.errors import DatasetError
from pytrafgen.generators.baseline import BaselineGenerator, assemble_records, training_progress
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
                            "n_ports": 32, "device": "auto", "payload_prefix_bytes": 512, "payload_per_key": 256, "quiet": True,
                            "sample_batch": 4096}


class GanGenerator(BaselineGenerator):
    name: ClassVar[str] = "gan"
    description: ClassVar[str] = "DoppelGANger/NetShare-style WGAN-GP: flow attributes + per-packet field series"
    SIZES = SIZES
    DEFAULTS = DEFAULTS
    network_prefix: ClassVar[str] = "generator"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.encoding: FlowEncoding | None = None

    def shape(self) -> Any:
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

        data = self.begin_fit(dataset, settings)
        s, flows = self.settings, data.flows
        seed = int(s["seed"])
        self.encoding = FlowEncoding.fit(flows, int(s["max_len"]), int(s["n_ports"]))
        attrs_np, feats_np = self.encoding.encode(flows)

        torch.manual_seed(seed)
        device = self.device()
        shape = self.shape()
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

    def sample(self, counts: Mapping[str, int], seed: int = 0) -> FieldRecords:
        import torch

        labels = self.labels_for(counts)
        if self.encoding is None or self.parts is None:
            raise DatasetError("gan: fit() or load() first")
        if len(labels) == 0:
            return FieldRecords.empty(self.classes)
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        device = self.device()
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

    def build_network(self, shape: Any) -> Any:
        from pytrafgen_gan.model import FlowGenerator

        return FlowGenerator(shape)

    def model_arrays(self) -> dict[str, np.ndarray]:
        assert self.encoding is not None
        return self.encoding.arrays()

    def restore_arrays(self, tensors: Mapping[str, np.ndarray]) -> None:
        self.encoding = FlowEncoding.from_arrays(dict(tensors), int(self.settings["max_len"]))
