"""Linen generators and critics; all share `__call__(inputs, train=True)`."""

from gans.models.dcgan import DCGANCritic, DCGANGenerator, Upsample2x
from gans.models.mlp import MLPCritic, MLPGenerator

__all__ = ["DCGANCritic", "DCGANGenerator", "MLPCritic", "MLPGenerator", "Upsample2x"]
