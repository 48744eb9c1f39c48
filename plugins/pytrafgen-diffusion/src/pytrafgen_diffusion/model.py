"""Class-conditioned DDPM over flow images (packets × header bits).

The denoiser treats each packet row as a token: a linear embedding of its bits, a learned
position embedding, the diffusion-time and class embeddings added, then pre-norm transformer
layers across the packets of the flow and a linear head predicting the noise of every bit.
NetDiffusion fine-tunes Stable Diffusion with ControlNet on nPrint images; this is a small
denoiser trained from scratch, with the same ideas: DDPM (cosine schedule), class conditioning,
classifier-free guidance (class dropped to a null class in training).

The network predicts the clean rows x₀ rather than the noise ε: a packet row is squeezed
through a ``d_model``-wide token, so it cannot pass 391 independent noise values through to
an ε-prediction (an image UNet's skip connections do that), while the clean rows are highly
structured. Both give the same DDPM posterior; guidance is applied to the x₀ predictions
(equivalent to applying it to ε at the same x_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DiffusionShape:
    n_classes: int
    max_len: int
    width: int
    d_model: int
    n_layers: int
    n_heads: int
    n_steps: int


def cosine_alpha_bar(n_steps: int) -> torch.Tensor:
    """ᾱ_t for t = 1..n_steps (Nichol & Dhariwal 2021), as float64."""
    t = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0)


class Denoiser(nn.Module):
    def __init__(self, shape: DiffusionShape) -> None:
        super().__init__()
        self.shape = shape
        d = shape.d_model
        self.embed = nn.Linear(shape.width, d)
        self.position = nn.Parameter(torch.zeros(1, shape.max_len, d))
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.label = nn.Embedding(shape.n_classes + 1, d)  # last index: the null class (guidance)
        layer = nn.TransformerEncoderLayer(d, shape.n_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, shape.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, shape.width)

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.shape.d_model // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cond = self.time(self._time_features(t)) + self.label(labels)
        h = self.embed(x) + self.position + cond[:, None]
        return self.head(self.norm(self.layers(h)))


class Diffusion:
    """Training loss and guided ancestral sampling for a :class:`Denoiser`."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model
        self.alpha_bar = cosine_alpha_bar(model.shape.n_steps).float()

    def loss(self, x0: torch.Tensor, labels: torch.Tensor, drop_label: float) -> torch.Tensor:
        n, steps = x0.shape[0], self.model.shape.n_steps
        t = torch.randint(0, steps, (n,), device=x0.device)
        a = self.alpha_bar.to(x0.device)[t][:, None, None]
        noise = torch.randn_like(x0)
        null = torch.rand(n, device=x0.device) < drop_label
        labels = torch.where(null, torch.full_like(labels, self.model.shape.n_classes), labels)
        pred = self.model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, labels)
        return ((pred - x0) ** 2).mean()

    @torch.inference_mode()
    def sample(self, labels: torch.Tensor, guidance: float, generator: torch.Generator) -> torch.Tensor:
        s = self.model.shape
        device = labels.device
        n = labels.shape[0]
        alpha_bar = self.alpha_bar.to(device)
        x = torch.randn(n, s.max_len, s.width, device=device, generator=generator)
        both = torch.cat([labels, torch.full_like(labels, s.n_classes)])
        for step in reversed(range(s.n_steps)):
            t = torch.full((2 * n,), step, device=device, dtype=torch.long)
            x0_cond, x0_null = self.model(torch.cat([x, x]), t, both).chunk(2)
            x0 = (x0_null + guidance * (x0_cond - x0_null)).clamp(-1, 1)
            a_t = alpha_bar[step]
            a_prev = alpha_bar[step - 1] if step > 0 else torch.ones((), device=device)
            beta = 1 - a_t / a_prev
            # posterior mean of q(x_{t-1} | x_t, x0)
            mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)) * x
            if step > 0:
                var = beta * (1 - a_prev) / (1 - a_t)
                x = mean + var.sqrt() * torch.randn(x.shape, device=device, generator=generator)
            else:
                x = mean
        return x
