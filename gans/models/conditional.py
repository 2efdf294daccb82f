"""Class-conditional generator and critic wrappers around any base model.

Conditioning by concatenation follows the conditional GAN of Mirza & Osindero (2014), "Conditional
Generative Adversarial Nets": the generator sees ``[z, one_hot(y)]`` (noise 100-d + one-hot 10-d)
and, for images, the critic sees the label as constant one-hot planes along the channel axis
(1 + 10 = 11 channels for grey digits). The projection critic follows Miyato & Koyama (2018),
"cGANs with Projection Discriminator": ``f(x, y) = psi(phi(x)) + <embed(y), phi(x)>``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models.layers import apply_layer

CRITIC_MODES = ("concat", "projection")


def _check_labels(labels: jax.Array) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be integer class ids of shape [B], got {labels.shape}.")


def append_label(x: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """Appends the one-hot label to each example, as the concatenation cGAN does.

    Args:
        x: Vectors [B, D] or images [B, H, W, C].
        labels: Integer class ids [B].
        num_classes: Number of classes K.

    Returns:
        [B, D + K] for vectors; [B, H, W, C + K] for images, the label as K constant planes.
    """
    _check_labels(labels)
    # Labels outside [0, num_classes) give all-zero rows, as jax.nn.one_hot does.
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    if x.ndim == 2:
        return jnp.concatenate([x, one_hot], axis=-1)
    if x.ndim == 4:
        planes = jnp.broadcast_to(one_hot[:, None, None, :], (*x.shape[:3], num_classes))
        return jnp.concatenate([x, planes], axis=-1)
    raise ValueError(f"append_label expects vectors [B, D] or images [B, H, W, C], got {x.shape}.")


class ConditionalGenerator(nn.Module):
    """Generator of class `labels`: runs `base` on ``[z, one_hot(labels)]`` [Mirza & Osindero].

    Attributes:
        base: Any generator with ``__call__(z, train)``, built for ``z_dim + num_classes`` inputs
            (e.g. ``DCGANGenerator`` or ``MLPGenerator``); its parameters live under ``base``.
        num_classes: Number of classes K.
    """

    base: nn.Module
    num_classes: int = 10

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
        """Maps z [B, z_dim] and labels [B] to the base generator's output for [B, z_dim + K]."""
        return self.base(append_label(z, labels, self.num_classes), train=train)


class ConditionalCritic(nn.Module):
    """Critic of (sample, label) pairs, mapping x [B, ...] and labels [B] to scores [B].

    `x` may also be a pytree of such arrays (an MSG-GAN batch), as long as `base` accepts it.

    Modes:
        'concat' [Mirza & Osindero]: `base` scores the input with the label appended
            (``append_label``); parameters under ``base``, whose first layer sees C + K channels.
        'projection' [Miyato & Koyama, Eq. 3]: ``psi(phi(x)) + <embed(y), phi(x)>``, with `phi`
            the base critic's feature trunk (``base.trunk()``, parameters under ``trunk``), `psi`
            one linear unit (``score``) and ``embed`` an ``nn.Embed(K, F)`` (``embed``). For
            DCGAN bases `phi` is the flattened last 4x4 conv map, not the paper's global sum
            pool, so ``psi`` is the very layer the unconditional critic has.

    Attributes:
        base: A critic with ``__call__(x, train)``; for 'projection' it must also have
            ``trunk()`` (``DCGANCritic``, ``MLPCritic``, ``MSGCritic``).
        num_classes: Number of classes K.
        mode: 'concat' or 'projection'.
    """

    base: nn.Module
    num_classes: int = 10
    mode: str = "concat"

    def __post_init__(self):
        if self.mode not in CRITIC_MODES:
            raise ValueError(
                f"ConditionalCritic mode must be one of {CRITIC_MODES}, got {self.mode!r}."
            )
        if self.mode == "projection" and not hasattr(self.base, "trunk"):
            raise ValueError(
                f"ConditionalCritic mode 'projection' needs a base critic with a trunk() method "
                f"(DCGANCritic, MLPCritic, MSGCritic), got {type(self.base).__name__}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = True) -> jax.Array:
        """Returns scores [B]."""
        if self.mode == "concat":
            # Mapped over pytrees, so every image of a multi-scale (MSG-GAN) batch gets the planes.
            x = jax.tree.map(lambda leaf: append_label(leaf, labels, self.num_classes), x)
            return self.base(x, train=train)
        features = self.base.trunk(name="trunk")(x, train=train)
        _check_labels(labels)
        # A spectrally normalised base gets normalised heads, as in Miyato & Koyama's SNEmbedID
        # and SNLinear; parameter names are unchanged either way.
        normalised = dict(spectral_norm=getattr(self.base, "spectral_norm", False), train=train)
        embed = nn.Embed(self.num_classes, features.shape[-1], name="embed")
        embedding = apply_layer(embed, labels, **normalised)
        score = jnp.squeeze(apply_layer(nn.Dense(1, name="score"), features, **normalised), -1)
        return score + jnp.sum(embedding * features, axis=-1)
