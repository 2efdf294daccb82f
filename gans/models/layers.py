"""Layer wrappers shared by the critics."""

import dataclasses

import flax.linen as nn
import jax

# Spectral normalisation keeps its power-iteration vectors here, apart from "batch_stats":
# it adds no cross-example term, so the trainer may score real and fake batches jointly.
SPECTRAL_COLLECTION = "spectral_stats"


def apply_layer(layer: nn.Module, x: jax.Array, *, spectral_norm: bool, train: bool) -> jax.Array:
    """``layer(x)``, through spectral normalisation when asked (Miyato et al., 2018).

    With ``spectral_norm`` the kernel is divided by its largest singular value, estimated by
    one power iteration per call; the estimate is updated in training mode only. Called inside
    a compact method.
    """
    if not spectral_norm:
        return layer(x)
    return nn.SpectralNorm(layer, collection_name=SPECTRAL_COLLECTION)(x, update_stats=train)


def copy_as(module: nn.Module, cls: type[nn.Module], name: str | None = None) -> nn.Module:
    """A new ``cls`` with ``module``'s values for every field ``cls`` declares.

    Critics use it to hand out their trunk (the same hyper-parameters, no score layer).
    """
    fields = {
        f.name: getattr(module, f.name)
        for f in dataclasses.fields(cls)
        if f.init and f.name not in ("parent", "name")
    }
    return cls(**fields, name=name)
