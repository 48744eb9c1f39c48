"""DoppelGANger networks: an attribute generator, an LSTM feature generator emitting
``batch_packets`` packets per step, a discriminator over (class, attributes, series) and an
auxiliary discriminator over (class, attributes) alone, trained with WGAN-GP."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from pytrafgen_gan.features import GEN_FLAG, N_FEATURES


@dataclass(frozen=True)
class GanShape:
    n_classes: int
    n_combos: int
    n_ports: int  # frequent ports + the "another port" slot
    max_len: int
    batch_packets: int
    noise_dim: int
    hidden: int
    disc_hidden: int

    @property
    def attr_dim(self) -> int:
        return self.n_combos + self.n_ports + 1


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in pairwise(sizes[:-1]):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class FlowGenerator(nn.Module):
    """Class one-hot + noise → attributes (softmax slots, sigmoid size) → packet series."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        self.shape = shape
        s = shape
        self.attr_net = _mlp([s.n_classes + s.noise_dim, s.hidden, s.hidden, s.attr_dim])
        self.steps = -(-s.max_len // s.batch_packets)
        self.lstm = nn.LSTM(s.n_classes + s.attr_dim + s.noise_dim, s.hidden, batch_first=True)
        self.out = nn.Linear(s.hidden, s.batch_packets * N_FEATURES)

    def forward(self, class_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shape
        n = class_onehot.shape[0]
        z_attr = torch.randn(n, s.noise_dim, device=class_onehot.device)
        raw = self.attr_net(torch.cat([class_onehot, z_attr], 1))
        k, p = s.n_combos, s.n_ports
        attrs = torch.cat([raw[:, :k].softmax(1), raw[:, k:k + p].softmax(1), raw[:, -1:].sigmoid()], 1)
        z_feat = torch.randn(n, self.steps, s.noise_dim, device=class_onehot.device)
        cond = torch.cat([class_onehot, attrs], 1).unsqueeze(1).expand(n, self.steps, -1)
        hidden, _ = self.lstm(torch.cat([cond, z_feat], 2))
        feats = self.out(hidden).sigmoid().reshape(n, self.steps * s.batch_packets, N_FEATURES)[:, :s.max_len]
        # Soft DoppelGANger masking: everything after the generation flag falls stays off.
        alive = torch.cumprod(feats[:, :, GEN_FLAG], 1)
        alive = torch.cat([torch.ones_like(alive[:, :1]), alive[:, :-1]], 1)
        return attrs, feats * alive.unsqueeze(2)


class Critic(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = _mlp([in_dim, hidden, hidden, hidden, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    mix = torch.rand(real.shape[0], 1, device=real.device)
    x = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()
