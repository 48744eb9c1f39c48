"""The ``diffusion`` generator: NetDiffusion-style class-conditioned DDPM over nPrint-like
flow images, bits decoded back to header fields; ``repair`` chooses NetDiffusion's rule-based
post-repair or the raw decoded fields (see :mod:`pytrafgen_diffusion.fields`).

Payload bytes are *real payload prefixes* of the same class and direction with the nearest
length (``pytrafgen.generators.baseline_data``), zero-padded by the builder to the decoded
length. torch is imported only when training or sampling.
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
                            "repair": True, "device": "auto", "payload_cap": 512, "payload_per_key": 256, "quiet": True,
                            "sample_batch": 512}


def _size(name: str) -> dict[str, int]:
    if name not in SIZES:
        raise PytrafgenError(f"unknown size {name!r}; sizes: {', '.join(SIZES)}")
    return SIZES[name]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class DiffusionGenerator(Generator):
    name: ClassVar[str] = "diffusion"
    description: ClassVar[str] = "NetDiffusion-style class-conditioned DDPM over nPrint-like header bit rows"

    @classmethod
    def fit_setting_names(cls) -> frozenset[str]:
        return frozenset(DEFAULTS).union(*SIZES.values())

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        given = dict(settings or {})
        self.settings: dict[str, Any] = {**DEFAULTS, **_size(given.get("size", DEFAULTS["size"])), **given}
        self.classes: list[str] = []
        self.class_kinds: list[str] = []
        self.trained: list[str] = []
        self.parts: EmpiricalParts | None = None
        self.net: Any = None
        self.history: dict[str, float] = {}
        self._source_dir: Path | None = None

    def _shape(self) -> Any:
        from pytrafgen_diffusion.model import DiffusionShape

        s = self.settings
        return DiffusionShape(len(self.classes), int(s["max_len"]), WIDTH, int(s["d_model"]), int(s["n_layers"]),
                              int(s["n_heads"]), int(s["n_steps"]))

    def fit(self, dataset: Any, settings: Mapping[str, Any] | None = None,
            progress: Callable[[int, int], None] | None = None) -> None:
        import torch

        from pytrafgen_diffusion.model import Denoiser, Diffusion

        given = dict(settings or {})
        if "size" in given:
            self.settings.update(_size(given["size"]))
        self.settings.update(given)
        s = self.settings
        data = TrainingSet.from_dataset("diffusion", dataset, s)
        self.classes, self.class_kinds, self.parts = data.classes, data.class_kinds, data.parts
        self._source_dir, self.trained, flows = data.source_dir, data.trained, data.flows
        seed = int(s["seed"])
        images_np = flow_images(encode_rows(data.records, flows), flows, int(s["max_len"]))

        torch.manual_seed(seed)
        device = _device(str(s["device"]))
        images = torch.from_numpy(images_np).to(device)
        labels = torch.from_numpy(flows.label.astype(np.int64)).to(device)
        weights = 1.0 / np.bincount(flows.label, minlength=len(self.classes))[flows.label]
        weights = torch.from_numpy(weights / weights.sum()).to(device)
        model = Denoiser(self._shape()).to(device)
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

    def set_sampling(self, **options: Any) -> None:
        """Sampling options from ``pytrafgen generate``: device, batch size; ``repair`` and ``guidance`` too; no
        temperature/top-k/top-p (those belong to token samplers)."""
        allowed = ('device', 'batch_size', 'show_progress', 'repair', 'guidance')
        unknown = sorted(k for k in options if k not in allowed)
        if unknown:
            raise PytrafgenError(f"generator {self.name!r} takes no sampling options ({', '.join(unknown)})")
        if options.get("device") is not None:
            self.settings["device"] = options["device"]
        if options.get("batch_size") is not None:
            self.settings["sample_batch"] = int(options["batch_size"])
        if options.get("repair") is not None:
            self.settings["repair"] = options["repair"]
        if options.get("guidance") is not None:
            self.settings["guidance"] = options["guidance"]

    def sample(self, counts: Mapping[str, int], seed: int = 0, repair: bool | None = None) -> FieldRecords:
        import torch

        from pytrafgen_diffusion.model import Diffusion

        if self.net is None or self.parts is None:
            raise DatasetError("diffusion: fit() or load() first")
        labels = counts_to_labels(counts, self.classes, self.trained)
        if len(labels) == 0:
            return FieldRecords.empty(self.classes)
        repair = _as_bool(self.settings["repair"]) if repair is None else repair
        rng = np.random.default_rng(seed)
        device = _device(str(self.settings["device"]))
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

    def save(self, path: Path) -> None:
        if self.net is None or self.parts is None:
            raise DatasetError("diffusion: nothing to save; fit() first")
        config = {"generator": self.name, "format": 1, "classes": self.classes, "class_kinds": self.class_kinds,
                  "trained_classes": self.trained, "settings": self.settings, "shape": asdict(self._shape()),
                  "history": self.history}
        write_checkpoint(path, config, {**state_to_arrays(self.net.state_dict(), "denoiser"), **self.parts.arrays()},
                         self._source_dir)

    @classmethod
    def load(cls, path: Path) -> DiffusionGenerator:
        from pytrafgen_diffusion.model import Denoiser

        config, tensors = read_checkpoint(path, cls.name)
        gen = cls(config["settings"])
        gen.classes = list(config["classes"])
        gen.class_kinds = list(config.get("class_kinds", []))
        gen.trained = list(config["trained_classes"])
        gen.history = dict(config.get("history", {}))
        gen.parts = EmpiricalParts.from_arrays(tensors)
        net = Denoiser(gen._shape())
        net.load_state_dict(arrays_to_state(tensors, "denoiser"))
        gen.net = net.eval()
        return gen
