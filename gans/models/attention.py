"""Self-attention over image positions (SAGAN: Zhang et al., 2019, "Self-Attention Generative
Adversarial Networks", Sec. 3), for the ResNet generator and critic."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from gans.models.layers import IMPLEMENTATIONS, apply_layer, conv


def attention_weights(query: jax.Array, key: jax.Array) -> jax.Array:
    """``beta[b, i, j] = softmax_j(q_i . k_j)``: queries and keys ``[B, N, d]`` to ``[B, N, N]``.

    Row ``i`` is a distribution over the ``N`` positions that position ``i`` attends to (SAGAN's
    Eq. 1, written with the query index first), so every row sums to 1.
    """
    return jax.nn.softmax(jnp.einsum("bid,bjd->bij", query, key), axis=-1)


class SelfAttention(nn.Module):
    """``y = x + gamma * o``, ``o_i = v(sum_j beta_ij h(x_j))``, ``beta = softmax(f(x) g(x)^T)``.

    SAGAN's block (Zhang et al., 2019, Eqs. 1-3; released TF code ``non_local.py``,
    ``sn_non_local_block_sim``). On ``x [B, H, W, C]`` with ``N = H * W`` positions: the query
    ``f`` and key ``g`` are 1x1 convolutions to ``C // 8`` channels, the value ``h`` one to
    ``C // 2``; ``beta [B, N, N]`` is ``attention_weights(f(x), g(x))``, a softmax over the
    ``N`` positions; the output 1x1 convolution ``v`` maps the attended values back to ``C``.
    ``gamma`` is a scalar initialised at 0, as in the released code, so the block starts as the
    identity and the network learns to lean on non-local evidence gradually.

    Two differences from the released code. It max-pools keys and values 2x2 (``N / 4`` key
    positions) to save compute; here every position is a key: max pooling passes gradient to
    one input in four, the sparse gradients the project's source notes warn against (its
    models pool by averaging), and at the 8x8 to 32x32 maps of these models the ``[N, N]`` map is
    small (at most 1024 x 1024 per example). Its 1x1 convolutions have no biases; these are
    ``layers.conv`` layers and keep theirs (``2 * C // 8 + C // 2 + C`` parameters more; in the
    logits only the query bias survives the softmax, as a learned per-key salience term).

    Attributes:
        spectral_norm: Spectral normalisation of the four convolutions (SAGAN normalises them in
            both players).
        conv_implementation: How the convolutions are computed (``layers.IMPLEMENTATIONS``).
    """

    spectral_norm: bool = False
    conv_implementation: str = "auto"

    def __post_init__(self):
        if self.conv_implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"SelfAttention conv_implementation must be one of {IMPLEMENTATIONS}, got "
                f"{self.conv_implementation!r}."
            )
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        """Maps ``[B, H, W, C]`` (``C >= 8``) to the same shape; ``train`` drives spectral norm."""
        b, h, w, c = x.shape
        if c < 8:
            raise ValueError(
                f"SelfAttention needs at least 8 channels (queries and keys have C // 8), got {c}."
            )

        def project(inputs: jax.Array, features: int, name: str) -> jax.Array:
            layer = conv(features, (1, 1), implementation=self.conv_implementation, name=name)
            return apply_layer(layer, inputs, spectral_norm=self.spectral_norm, train=train)

        def positions(t: jax.Array) -> jax.Array:
            return t.reshape(b, h * w, t.shape[-1])

        query = positions(project(x, c // 8, "query"))
        key = positions(project(x, c // 8, "key"))
        value = positions(project(x, c // 2, "value"))
        attended = jnp.einsum("bij,bjd->bid", attention_weights(query, key), value)
        out = project(attended.reshape(b, h, w, c // 2), c, "out")
        gamma = self.param("gamma", nn.initializers.zeros, (), jnp.float32)
        return x + gamma * out
