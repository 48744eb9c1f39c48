"""pytrafgen-diffusion: a NetDiffusion-style diffusion baseline generator (``--generator diffusion``)."""

from __future__ import annotations

from pytrafgen_diffusion.generator import DiffusionGenerator

__all__ = ["DiffusionGenerator"]
