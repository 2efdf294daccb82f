"""Linen generators and critics; all share `__call__(inputs, train=True)`.

Conditional models add a `labels` argument; the InfoGAN critic also returns Q's outputs; MSG-GAN
models exchange a tuple of images, smallest first.
"""

from gans.models.conditional import ConditionalCritic, ConditionalGenerator, append_label
from gans.models.dcgan import DCGANCritic, DCGANGenerator, DCGANTrunk, Upsample2x
from gans.models.infogan import (
    InfoGANCritic,
    codes_vector,
    mutual_information_lower_bound,
    sample_codes,
)
from gans.models.infogan_mnist import InfoGANMNISTCritic, InfoGANMNISTGenerator
from gans.models.mlp import MLPCritic, MLPGenerator, MLPOptions, MLPTrunk
from gans.models.attention import SelfAttention
from gans.models.resnet import (
    ResNetCritic,
    ResNetGenerator,
    ResNetTrunk,
    sngan_cifar_resnet,
    wgan_gp_cifar_resnet,
)
from gans.models.resnet_blocks import ConditionalBatchNorm
from gans.models.msg import MSGCritic, MSGGenerator, MSGTrunk, image_pyramid, num_scales_for
from gans.models.standard_cnn import (
    StandardCritic,
    StandardGenerator,
    StandardTrunk,
    sngan_standard_cnn,
)
from gans.models.vae import VAE, VAEEncoder

__all__ = [
    "VAE",
    "ConditionalBatchNorm",
    "ResNetCritic",
    "ResNetGenerator",
    "ResNetTrunk",
    "SelfAttention",
    "StandardCritic",
    "StandardGenerator",
    "StandardTrunk",
    "sngan_standard_cnn",
    "sngan_cifar_resnet",
    "wgan_gp_cifar_resnet",
    "ConditionalCritic",
    "ConditionalGenerator",
    "DCGANCritic",
    "DCGANGenerator",
    "DCGANTrunk",
    "InfoGANCritic",
    "InfoGANMNISTCritic",
    "InfoGANMNISTGenerator",
    "MLPCritic",
    "MLPGenerator",
    "MLPOptions",
    "MLPTrunk",
    "MSGCritic",
    "MSGGenerator",
    "MSGTrunk",
    "Upsample2x",
    "VAEEncoder",
    "append_label",
    "codes_vector",
    "image_pyramid",
    "mutual_information_lower_bound",
    "num_scales_for",
    "sample_codes",
]
