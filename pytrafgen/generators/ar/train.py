"""The training loop for one stage (pre-training or fine-tuning), top to bottom:

1. set up: device, distributed context (when launched by ``torchrun``), trainable parameters
   (all, or only the LoRA adapters), AdamW (fused on CUDA), optional ``torch.compile``, DDP;
2. restore a resumed run: weights, optimizer moments, RNG state, step and early-stopping
   counters;
3. loop: draw windows (RNG seeded by (seed, rank, step)), forward under bf16 autocast on CUDA,
   backward, clip, step, cosine learning rate with warm-up;
4. every ``eval_every`` steps: validation loss, keep the best weights, stop early after
   ``patience`` evaluations without improvement;
5. every ``checkpoint_every`` steps and at the end: hand a snapshot (best weights + the state
   needed to resume) to ``on_checkpoint``, which writes it atomically.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pytrafgen.errors import PytrafgenError
from pytrafgen.generators.ar.config import TrainConfig
from pytrafgen.generators.ar.data import FlowWindows
from pytrafgen.generators.ar.model import GPT

# ---------------------------------------------------------------------------- setup helpers


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1): NCCL on CUDA,
    gloo on CPU. A plain ``python`` launch is a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return ctx


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """``auto``: this process's GPU when there is one, else the CPU."""
    local = ctx.local_rank if ctx else 0
    if name == "auto":
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and ctx and ctx.world_size > 1:
        return torch.device(f"cuda:{local}")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PytrafgenError(f"device {name!r} requested but CUDA is not available")
    return device


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - floor)


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; matrices decay, gains and adapters' B do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


# ----------------------------------------------------------------------- state and snapshots


@dataclass
class TrainState:
    """Counters of one stage; saved as JSON beside the tensors needed to resume."""

    stage: str
    step: int = 0
    tokens: int = 0
    best_val: float | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    train_loss: float | None = None  # smoothed (EMA 0.9)
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)


@dataclass
class Snapshot:
    """What a checkpoint holds: the best weights for sampling, and everything to resume."""

    state: TrainState
    best_weights: dict[str, torch.Tensor]  # LoRA merged, on the CPU
    resume_tensors: dict[str, torch.Tensor]  # "model.*", "optim.*", "rng.*"
    optimizer_groups: list[dict[str, Any]]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def take_snapshot(model: GPT, optimizer: torch.optim.Optimizer, state: TrainState,
                  best_weights: dict[str, torch.Tensor] | None) -> Snapshot:
    tensors = {f"model.{k}": v for k, v in _cpu(model.state_dict()).items()}
    opt_state = optimizer.state_dict()
    for pid, entries in opt_state["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{pid}.{key}"] = value.detach().to("cpu", copy=True)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt_state["param_groups"]]
    best = best_weights if best_weights is not None else _cpu(model.merged_state_dict())
    return Snapshot(TrainState.from_dict(state.to_dict()), best, tensors, groups)


def restore_snapshot(model: GPT, optimizer: torch.optim.Optimizer, snapshot: Snapshot) -> None:
    tensors = snapshot.resume_tensors
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": snapshot.optimizer_groups})
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


# ------------------------------------------------------------------------------- the loop


@torch.no_grad()
def validation_loss(model: GPT, windows: FlowWindows, weights: np.ndarray, cfg: TrainConfig,
                    device: torch.device, ctx: DistContext) -> float:
    """Mean loss over a fixed set of validation windows (the same every evaluation)."""
    was_training = model.training
    model.eval()
    rng = np.random.default_rng([cfg.seed, 0xEAA1])
    losses = []
    for _ in range(cfg.eval_batches):
        x, y = windows.batch(weights, cfg.batch_size, rng)
        with autocast_for(device):
            _, loss = model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
        losses.append(loss.float())
    mean = torch.stack(losses).mean()
    if ctx.world_size > 1:
        dist.all_reduce(mean, op=dist.ReduceOp.AVG)
    model.train(was_training)
    return float(mean)


def train_stage(
    model: GPT,
    train_windows: FlowWindows,
    train_weights: np.ndarray,
    val_windows: FlowWindows | None,
    val_weights: np.ndarray | None,
    cfg: TrainConfig,
    stage: str,
    device: torch.device,
    ctx: DistContext,
    on_checkpoint: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    show_progress: bool = True,
) -> Snapshot:
    """Train ``model`` (already on ``device``) for one stage; returns the final snapshot."""
    # 1. set up
    if model.config.lora_rank:
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    optimizer = make_optimizer(model, cfg, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # 2. resume
    state = TrainState(stage)
    best_weights: dict[str, torch.Tensor] | None = None
    if resume is not None:
        restore_snapshot(model, optimizer, resume)
        state = TrainState.from_dict(resume.state.to_dict())
        best_weights = resume.best_weights
    runner: Any = model
    if ctx.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        runner = torch.compile(runner)
    model.train()

    tokens_per_step = cfg.batch_size * train_windows.block_size * ctx.world_size
    progress = Progress(
        TextColumn(f"[bold]{stage}[/]"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[val]}"),
        TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=not (show_progress and ctx.is_main),
    )
    with progress:
        task = progress.add_task(stage, total=cfg.steps, completed=state.step, loss="-", val="-", rate="-")
        # 3. loop
        last_time, last_step = time.perf_counter(), state.step
        while state.step < cfg.steps and not state.stopped_early:
            rng = np.random.default_rng([cfg.seed, ctx.rank, state.step])
            x, y = train_windows.batch(train_weights, cfg.batch_size, rng)
            x_t, y_t = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(state.step, cfg)
            with autocast_for(device):
                _, loss = runner(x_t, y_t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            optimizer.step()
            state.step += 1
            state.tokens += tokens_per_step
            value = float(loss.detach())
            if not math.isfinite(value):
                raise PytrafgenError(f"{stage}: training loss became {value} at step {state.step}; lower --lr")
            smoothed = value if state.train_loss is None else 0.9 * state.train_loss + 0.1 * value
            state.train_loss = smoothed
            now = time.perf_counter()
            rate = (state.step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
            progress.update(task, completed=state.step, loss=f"{smoothed:.3f}", rate=f"{rate:,.0f}")
            # 4. validation and early stopping
            eval_now = cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.steps)
            if eval_now and val_windows is not None and val_weights is not None:
                val = validation_loss(model, val_windows, val_weights, cfg, device, ctx)
                state.history.append({"step": state.step, "train_loss": smoothed, "val_loss": val})
                progress.update(task, val=f"{val:.3f}")
                if state.best_val is None or val < state.best_val - 1e-4:
                    state.best_val, state.evals_since_best = val, 0
                    best_weights = _cpu(model.merged_state_dict())
                else:
                    state.evals_since_best += 1
                    state.stopped_early = bool(cfg.patience) and state.evals_since_best >= cfg.patience
            # 5. periodic checkpoint
            if on_checkpoint and ctx.is_main and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                on_checkpoint(take_snapshot(model, optimizer, state, best_weights))
            last_time, last_step = time.perf_counter(), state.step
    if val_windows is None:
        best_weights = None  # nothing to select on: the final weights are the result
    snapshot = take_snapshot(model, optimizer, state, best_weights)
    if on_checkpoint and ctx.is_main:
        on_checkpoint(snapshot)
    return snapshot


__all__ = [
    "DistContext",
    "Snapshot",
    "TrainState",
    "init_distributed",
    "learning_rate",
    "resolve_device",
    "shutdown_distributed",
    "train_stage",
]
