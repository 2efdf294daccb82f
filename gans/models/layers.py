"""Layer wrappers shared by the models, and stride-2 convolutions laid out for XLA:CPU.

A stride-2 convolution and its adjoint, the stride-2 transposed convolution, are each the sum of
four stride-1 convolutions, one per phase (the parity of an output or input pixel's row and
column). Stacking the phases on the channel axis turns them into ONE stride-1 convolution
between a depth-to-space (pixel shuffle, Shi et al., 2016, "Real-Time Single Image and Video
Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network") or space-to-depth
rearrangement and the same kernel entries, reordered: same parameters, same outputs. The strided
convolution keeps its FLOPs; the transposed one computes each phase on an (H + 1) x (W + 1) grid
instead of H x W (one convolution for all four phases instead of four).

On XLA:CPU (jax 0.10) the gradients of convolutions, and the double backpropagation of a
gradient penalty through them, run far below the speed of its matrix products; the
``"sub_pixel_matmul"`` form therefore also writes the stride-1 convolution as one matrix product
of image patches (im2col), so every derivative of every order is a matrix product, a pad or a
slice. ``"auto"`` picks that form on CPU and the backend's native convolutions elsewhere.
"""

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Spectral normalisation keeps its power-iteration vectors here, apart from "batch_stats":
# it adds no cross-example term, so the trainer may score real and fake batches jointly.
SPECTRAL_COLLECTION = "spectral_stats"

# How stride-2 (transposed) convolutions are computed; all give the same outputs.
#   native: lax.conv_general_dilated / lax.conv_transpose, as nn.Conv / nn.ConvTranspose do.
#   sub_pixel: phases stacked on the channel axis, one stride-1 lax convolution.
#   sub_pixel_matmul: the same, with the stride-1 convolution as one patch matrix product.
#   auto: sub_pixel_matmul on CPU (fastest there: `python -m experiments.benchmark
#     --settings=convs`), else native.
IMPLEMENTATIONS = ("auto", "native", "sub_pixel", "sub_pixel_matmul")

Padding = Sequence[tuple[int, int]]
_NHWC = ("NHWC", "HWIO", "NHWC")


def apply_layer(layer: nn.Module, x: jax.Array, *, spectral_norm: bool, train: bool) -> jax.Array:
    """``layer(x)``, through spectral normalisation when asked (Miyato et al., 2018).

    With ``spectral_norm`` the layer runs with ``W / sigma(W)`` (``flax.linen.SpectralNorm``,
    read in flax 0.12). ``W`` is the kernel as a matrix: a Dense kernel as it is, a (transposed)
    convolution's ``[kh, kw, C_in, C_out]`` reshaped to ``[kh * kw * C_in, C_out]``, whose
    largest singular value is what is normalised. That is the matrix of Miyato's Chainer code
    (``W.reshape(out, -1)`` of an ``[out, in, kh, kw]`` kernel: the transpose, up to a column
    order, so the same singular values), not the operator norm of the convolution itself, which
    can be larger (for a stride-1 convolution by up to ``sqrt(kh * kw)``, each input pixel
    reaching that many outputs). Biases and other 1-D parameters are left alone.

    ``sigma`` comes from one power iteration per call (flax's ``n_steps=1``) started from the
    stored right singular vector ``u`` ``[1, C_out]``: ``v = normalize(u W^T)``, ``u' =
    normalize(v W)``, ``sigma = v W u'^T``, with ``u'`` and ``v`` held constant for the
    gradient. With ``train=True`` (the module applied with ``SPECTRAL_COLLECTION`` mutable)
    ``u'`` and that ``sigma`` are stored, so repeated training calls converge on the top
    singular value; with ``train=False`` the same one-step estimate is computed and used but
    nothing is stored, so evaluation changes no state. Called inside a compact method; the
    wrapped layer keeps its parameter names, and the vectors live in the wrapper's
    ``SPECTRAL_COLLECTION`` entry (``SpectralNorm_i: {"<layer>/kernel/u", ".../sigma"}``).

    How many training calls a step makes is the trainer's choice (``StepConfig.
    power_iterations``): by default one per critic update (real and fake scored in one call,
    the generator's pass storing nothing), ``n_critic`` a step; Miyato et al.'s released code
    advances at every critic call, ``2 n_critic + 1`` a step (11 at n_critic 5), which
    ``power_iterations="per_call"`` reproduces. With fewer iterations the estimate trails a
    kernel that training moves: on a small DCGAN critic, 3 % below the top singular value
    after 200 critic updates.
    """
    if not spectral_norm:
        return layer(x)
    return nn.SpectralNorm(layer, collection_name=SPECTRAL_COLLECTION)(x, update_stats=train)


def minibatch_std_options(enabled: bool, group: int) -> dict:
    """A critic's minibatch-std arguments from a model's options (``group`` 0: the whole batch).

    Raises:
      ValueError: ``group`` is negative.
    """
    if group < 0:
        raise ValueError(f"minibatch_std_group must be >= 0 (0: the whole batch), got {group}.")
    return {"minibatch_std": enabled, "minibatch_std_group": group or None}


def minibatch_std(
    x: jax.Array, group_size: int | None = None, axis_name: str | None = None
) -> jax.Array:
    """``x`` with one more channel: the minibatch standard deviation (Karras et al., 2018).

    For each group of ``group_size`` consecutive examples (``None``: the whole batch, which
    under ``pmap`` with ``axis_name`` is the global batch, as BatchNorm's statistics are), the
    standard deviation ``sqrt(mean_g((x - mean_g x)^2) + 1e-8)`` of every feature over the
    group, averaged over the features (and positions) into one value, is appended to each of the
    group's examples as a constant channel: ``[B, ..., C] -> [B, ..., C + 1]`` (ProGAN's layer,
    ``num_channels=1``; a group larger than the batch shrinks to it, so under ``pmap`` keep
    groups within one device's batch). A critic with it scores an example by its batch: score
    real and fake
    batches in separate passes, and its per-example input gradients (a penalty's norms) carry
    terms through the other examples of the group.
    """
    batch = x.shape[0]
    size = batch if group_size is None else min(group_size, batch)  # ProGAN's min(G, N).
    if batch % size:
        raise ValueError(
            f"the minibatch standard deviation groups {size} examples, which does not divide "
            f"the batch of {batch}; give a group size that divides the (per-device) batch."
        )
    grouped = x.reshape((batch // size, size) + x.shape[1:]).astype(jnp.float32)
    mean = jnp.mean(grouped, axis=1, keepdims=True)
    if group_size is None and axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    variance = jnp.mean(jnp.square(grouped - mean), axis=1)
    if group_size is None and axis_name is not None:
        variance = lax.pmean(variance, axis_name)
    std = jnp.sqrt(variance + 1e-8)
    per_group = jnp.mean(std, axis=tuple(range(1, std.ndim)))  # [B / size]
    channel = jnp.repeat(per_group, size).astype(x.dtype)
    channel = jnp.broadcast_to(channel.reshape((batch,) + (1,) * (x.ndim - 1)), x.shape[:-1] + (1,))
    return jnp.concatenate([x, channel], axis=-1)


def statistics_axis(module: nn.Module) -> str | None:
    """``module.axis_name``, except while initialising (outside ``pmap``, as BatchNorm does)."""
    return None if module.is_initializing() else module.axis_name


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


def resolve_implementation(implementation: str) -> str:
    """Checks ``implementation`` and resolves ``"auto"`` for the default backend."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown convolution implementation {implementation!r}; choose one of "
            f"{IMPLEMENTATIONS}."
        )
    if implementation != "auto":
        return implementation
    return "sub_pixel_matmul" if jax.default_backend() == "cpu" else "native"


# --------------------------------------------------------------------------- #
# Stride-1 convolution, rearrangements.
# --------------------------------------------------------------------------- #
def conv_as_matmul(
    x: jax.Array, kernel: jax.Array, padding: Padding, precision: lax.PrecisionLike = None
) -> jax.Array:
    """Stride-1 convolution of ``x [B, H, W, C]`` with ``kernel [kh, kw, C, F]`` by im2col.

    ``y[b, i, j] = sum_{u, v, c} x_pad[b, i + u, j + v, c] kernel[u, v, c]``: the ``kh * kw``
    shifted windows of the padded input, concatenated on the channel axis, times the kernel
    flattened to ``[kh * kw * C, F]`` (one matrix product). ``padding`` is ``((lo, hi), (lo,
    hi))`` per spatial axis, as in ``lax.conv_general_dilated``; negative entries crop.
    """
    kh, kw, c, f = kernel.shape
    zero = jnp.zeros((), x.dtype)
    x = lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    windows = [x[:, u : u + h, v : v + w] for u in range(kh) for v in range(kw)]
    patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return jnp.dot(patches, kernel.reshape(kh * kw * c, f), precision=precision)


def _stride1_conv(
    x: jax.Array,
    kernel: jax.Array,
    padding: Padding,
    implementation: str,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    if implementation == "sub_pixel_matmul":
        return conv_as_matmul(x, kernel, padding, precision)
    return lax.conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=_NHWC, precision=precision
    )


def space_to_depth(x: jax.Array, block: int) -> jax.Array:
    """``[B, H, W, C]`` to ``[B, H / b, W / b, b * b * C]``; channels ordered (row, col, c)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // block, w // block, block * block * c)


# --------------------------------------------------------------------------- #
# Stride-s convolution as a stride-1 convolution of the space-to-depth input.
# --------------------------------------------------------------------------- #
def _space_to_depth_supported(strides, kernel_shape, lhs_dilation, rhs_dilation, groups) -> bool:
    return (
        len(strides) == 2
        and all(k % s == 0 for k, s in zip(kernel_shape[:2], strides))
        and all(d == 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
        and groups == 1
    )


def strided_conv(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int],
    padding: Padding,
    implementation: str = "sub_pixel_matmul",
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """Stride-``s`` convolution (kernel sides divisible by ``s``) as a stride-1 one.

    With ``u = s a + q``: ``y[i] = sum_u x_pad[s i + u] k[u] = sum_a sum_q X[i + a, q] k[s a + q]``
    where ``X = space_to_depth(x_pad, s)`` holds pixel ``s m + q`` at block ``m``, phase ``q``;
    so ``y`` is the stride-1 ``kh / s x kw / s`` convolution of ``X`` with the kernel entries
    reordered to ``[kh / s, kw / s, s * s * C, F]``. Equals ``lax.conv_general_dilated(x, kernel,
    strides, padding)`` (NHWC, HWIO).
    """
    (sh, sw), (kh, kw, c, f) = strides, kernel.shape
    if sh != sw:
        raise ValueError(f"strided_conv needs equal strides, got {tuple(strides)}.")
    s = sh
    # Output size as lax defines it; the right pad is then grown to a multiple of the stride.
    sizes = [x.shape[1 + d] + sum(padding[d]) for d in range(2)]
    out = [(size - k) // s + 1 for size, k in zip(sizes, (kh, kw))]
    pads = [(lo, hi + (-size) % s) for (lo, hi), size in zip(padding, sizes)]
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    blocks = space_to_depth(x, s) if s > 1 else x
    k = kernel.reshape(kh // s, s, kw // s, s, c, f).transpose(0, 2, 1, 3, 4, 5)
    k = k.reshape(kh // s, kw // s, s * s * c, f)
    y = _stride1_conv(blocks, k, ((0, 0), (0, 0)), implementation, precision)
    return y[:, : out[0], : out[1]]


@dataclasses.dataclass(frozen=True)
class ConvGeneralDilated:
    """``lax.conv_general_dilated`` for ``nn.Conv(conv_general_dilated_cls=...)``.

    Computes NHWC/HWIO convolutions whose kernel sides divide by their strides through
    ``strided_conv`` (``implementation`` not ``"native"``), anything else through lax.
    Parameters, initialisation and the module's type stay those of ``nn.Conv``.
    """

    implementation: str = "auto"

    def __call__(
        self,
        lhs: jax.Array,
        rhs: jax.Array,
        window_strides: Sequence[int],
        padding: str | Padding,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: lax.ConvDimensionNumbers | None = None,
        feature_group_count: int = 1,
        precision: lax.PrecisionLike = None,
        **kwargs,
    ) -> jax.Array:
        implementation = resolve_implementation(self.implementation)
        canonical = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
        if (
            implementation == "native"
            or kwargs
            or lhs.ndim != 4
            or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != canonical
            or not _space_to_depth_supported(
                window_strides, rhs.shape, lhs_dilation, rhs_dilation, feature_group_count
            )
        ):
            return lax.conv_general_dilated(
                lhs,
                rhs,
                window_strides,
                padding,
                lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation,
                dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count,
                precision=precision,
                **kwargs,
            )
        if isinstance(padding, str):
            padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
        return strided_conv(lhs, rhs, window_strides, padding, implementation, precision)


def conv(
    features: int,
    kernel_size: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    padding: str | Padding = "SAME",
    implementation: str = "auto",
    name: str | None = None,
    kernel_init: nn.initializers.Initializer = nn.linear.default_kernel_init,
) -> nn.Conv:
    """An ``nn.Conv`` (same parameters, same type) computed as ``implementation`` says."""
    resolve_implementation(implementation)  # Fails early on an unknown name.
    return nn.Conv(
        features,
        kernel_size,
        strides=strides,
        padding=padding,
        kernel_init=kernel_init,
        conv_general_dilated_cls=functools.partial(ConvGeneralDilated, implementation),
        name=name,
    )


# --------------------------------------------------------------------------- #
# Stride-2 transposed convolution as a stride-1 convolution and depth-to-space.
# --------------------------------------------------------------------------- #
def phase_kernels(kernel: jax.Array) -> jax.Array:
    """The 4 phase sub-kernels of a ``[4, 4, C, F]`` transposed-convolution kernel, stacked.

    Returns ``[2, 2, C, 4 F]`` with ``K[a, b, c, (p, q, f)] = kernel[2 a + p, 2 b + q, c, f]``.
    """
    kh, kw, c, f = kernel.shape
    k = kernel.reshape(kh // 2, 2, kw // 2, 2, c, f)  # (a, p, b, q, c, f)
    return k.transpose(0, 2, 4, 1, 3, 5).reshape(kh // 2, kw // 2, c, 4 * f)


def sub_pixel_conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    implementation: str = "sub_pixel_matmul",
    precision: lax.PrecisionLike = None,
) -> jax.Array:
    """``lax.conv_transpose(x, kernel, (2, 2), "SAME")`` for a ``[4, 4, C, F]`` kernel.

    That op correlates the 2-dilated input, padded by 2, with the kernel:
    ``y[o] = sum_t x_dil[o + t - 2] k[t]``, non-zero where ``o + t`` is even. Output phase ``p``
    (``o = 2 m + p``) therefore reads ``t = 2 a + p`` only: ``y[2 m + p] = sum_{a in 0, 1}
    x[m + a + p - 1] k[2 a + p]``, i.e. ``z_p[m + p]`` for the 2-tap stride-1 convolution
    ``z_p`` of ``x`` padded by one with the sub-kernel ``k[p::2]``. One convolution
    (``phase_kernels``) gives all four ``z_{pq}`` on the channel axis, ``[B, H + 1, W + 1,
    4 F]``; depth-to-space with phase ``(p, q)`` shifted by ``(p, q)`` pixels gives
    ``[B, 2 H, 2 W, F]``.
    """
    b, h, w, _ = x.shape
    f = kernel.shape[-1]
    z = _stride1_conv(x, phase_kernels(kernel), ((1, 1), (1, 1)), implementation, precision)
    z = z.reshape(b, h + 1, w + 1, 2, 2, f)
    rows = [jnp.stack([z[:, p : p + h, q : q + w, p, q] for q in (0, 1)], axis=3) for p in (0, 1)]
    return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, f)


class SubPixelConvTranspose(nn.ConvTranspose):
    """``nn.ConvTranspose`` whose 4x4, stride-2, 'SAME' case runs as a sub-pixel convolution.

    A drop-in: the same fields, parameters (``kernel [4, 4, C, F]``, ``bias [F]``), initialisers
    and outputs as ``nn.ConvTranspose`` (``sub_pixel_conv_transpose`` shows they are equal), so
    checkpoints load either way and diagnostics see a transposed convolution. Any other
    configuration (kernel, stride, padding, dilation, mask, ``transpose_kernel``) runs
    ``nn.ConvTranspose`` itself.

    Attributes:
        implementation: one of ``IMPLEMENTATIONS``; ``"auto"`` is ``"sub_pixel_matmul"`` on CPU,
            where the transposed convolution's gradient is several times slower, and
            ``"native"`` (``lax.conv_transpose``) on other backends.
    """

    implementation: str = "auto"

    @nn.nowrap
    def _sub_pixel_applies(self, x: jax.Array) -> bool:
        def pair(v):
            return (v, v) if isinstance(v, int) else tuple(v)

        return (
            x.ndim == 4
            and pair(self.kernel_size) == (4, 4)
            and pair(self.strides or 1) == (2, 2)
            and self.padding == "SAME"
            and pair(self.kernel_dilation or 1) == (1, 1)
            and self.mask is None
            and not self.transpose_kernel
        )

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Maps ``[B, H, W, C]`` to ``[B, 2 H, 2 W, features]`` (in the sub-pixel case)."""
        implementation = resolve_implementation(self.implementation)
        if implementation == "native" or not self._sub_pixel_applies(inputs):
            # The parent's body, unwrapped: through super() Flax would run method interceptors
            # (e.g. gans.diagnostics' per-layer probes) a second time for this one layer.
            return nn.ConvTranspose.__call__.__wrapped__(self, inputs)
        kernel_shape = (4, 4, inputs.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        y = sub_pixel_conv_transpose(inputs, kernel, implementation, self.precision)
        return y if bias is None else y + bias
