"""The ``diffusion`` generator: NetDiffusion-style class-conditioned DDPM over nPrint-like
flow images, bits decoded back to header fields; ``repair`` chooses NetDiffusion's rule-based
post-repair or the raw decoded fields (see :mod:`pytrafgen_diffusion.fields`).

Payload bytes are *real payload prefixes* of the same class and direction with the nearest
length (``pytrafgen.generators.baseline``), zero-padded by the builder to the decoded
length. torch is imported only when training or sampling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from pytrafgen.errors import DatasetError
from pytrafgen.generators.baseline import BaselineGenerator, assemble_records, training_progress
from pytrafgen.records import FieldRecords
from pytrafgen_diffusion.bits import WIDTH, encode_rows, flow_images
from pytrafgen_diffusion.fields import decode_to_columns

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"max_len": 16, "d_model": 64, "n_layers": 2, "n_heads": 4, "n_steps": 50, "iterations": 60,
             "batch_size": 32},
    "small": {"max_len": 64, "d_model": 256, "n_layers": 4, "n_heads": 8, "n_steps": 200, "iterations": 3000,
              "batch_size": 64},
    "base": {"max_len": 128, "d_model": 512, "n_layers": 8, "n_heads": 8, "n_steps": 1000, "iterations": 50000,
             "batch_size": 128},
}
DEFAULTS: dict[str, Any] = {"size": "small", "seed": 0, "lr": 3e-4, "drop_label": 0.1, "guidance": 2.0,
                            "repair": True, "device": "auto", "payload_prefix_bytes": 512, "payload_per_key": 256, "quiet": True,
                            "sample_batch": 512}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class DiffusionGenerator(BaselineGenerator):
    name: ClassVar[str] = "diffusion"
    description: ClassVar[str] = "NetDiffusion-style class-conditioned DDPM over nPrint-like header bit rows"
    SIZES = SIZES
    DEFAULTS = DEFAULTS
    network_prefix: ClassVar[str] = "denoiser"
    #: ``repair`` (NetDiffusion's rule-based post-repair or the raw decoded fields), ``guidance``
    sampling_options: ClassVar[frozenset[str]] = frozenset({"batch_size", "repair", "guidance"})

    def shape(self) -> Any:
        from pytrafgen_diffusion.model import DiffusionShape

        s = self.settings
        return DiffusionShape(len(self.classes), int(s["max_len"]), WIDTH, int(s["d_model"]), int(s["n_layers"]),
                              int(s["n_heads"]), int(s["n_steps"]))

    def fit(self, dataset: Any, settings: Mapping[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None) -> None:
        import torch

        from pytrafgen_diffusion.model import Denoiser, Diffusion

        data = self.begin_fit(dataset, settings)
        s, flows = self.settings, data.flows
        seed = int(s["seed"])
        images_np = flow_images(encode_rows(data.records, flows), flows, int(s["max_len"]))

        torch.manual_seed(seed)
        device = self.device()
        images = torch.from_numpy(images_np).to(device)
        labels = torch.from_numpy(flows.label.astype(np.int64)).to(device)
        weights = 1.0 / np.bincount(flows.label, minlength=len(self.classes))[flows.label]
        weights = torch.from_numpy(weights / weights.sum()).to(device)
        model = Denoiser(self.shape()).to(device)
        diffusion = Diffusion(model)
        opt = torch.optim.AdamW(model.parameters(), lr=float(s["lr"]), weight_decay=0.0)
        iterations, batch = int(s["iterations"]), int(s["batch_size"])
        started, cpu_started = time.perf_counter(), time.process_time()
        loss = torch.zeros(())
        with training_progress("diffusion: training", bool(s["quiet"]), progress) as report:
            for step in range(iterations):
                idx = torch.multinomial(weights, batch, replacement=True)
                loss = diffusion.loss(images[idx].float(), labels[idx], float(s["drop_label"]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if report is not None:
                    report(step + 1, iterations)
        self.net = model.cpu().eval()
        self.history = {"iterations": iterations, "seconds": time.perf_counter() - started,
                        "cpu_seconds": time.process_time() - cpu_started,
                        "final_loss": loss.item()}

    def sample(self, counts: Mapping[str, int], seed: int = 0, repair: bool | None = None) -> FieldRecords:
        import torch

        from pytrafgen_diffusion.model import Diffusion

        labels = self.labels_for(counts)
        if self.parts is None:
            raise DatasetError("diffusion: fit() or load() first")
        if len(labels) == 0:
            return FieldRecords.empty(self.classes)
        repair = _as_bool(self.settings["repair"]) if repair is None else repair
        rng = np.random.default_rng(seed)
        device = self.device()
        diffusion = Diffusion(self.net.to(device))
        gen = torch.Generator(device=device).manual_seed(seed)
        chunk = int(self.settings["sample_batch"])
        images = []
        for start in range(0, len(labels), chunk):
            part = torch.from_numpy(labels[start:start + chunk].astype(np.int64)).to(device)
            images.append(diffusion.sample(part, float(self.settings["guidance"]), gen).float().cpu().numpy())
            if self.on_progress is not None:
                self.on_progress(min(start + chunk, len(labels)), len(labels))
        cols = decode_to_columns(labels, np.concatenate(images), repair, rng)
        return assemble_records(self.classes, cols["flows"], cols["packets"], self.parts, rng,
                                overrides=cols["overrides"], options_mask=cols["options_mask"],
                                raw_derived=cols["raw_derived"])

    def build_network(self, shape: Any) -> Any:
        from pytrafgen_diffusion.model import Denoiser

        return Denoiser(shape)
