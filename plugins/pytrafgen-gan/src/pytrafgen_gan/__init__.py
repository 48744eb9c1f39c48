"""pytrafgen-gan: a DoppelGANger/NetShare-style GAN baseline generator (``--generator gan``)."""

from __future__ import annotations

from pytrafgen_gan.generator import GanGenerator

__all__ = ["GanGenerator"]
