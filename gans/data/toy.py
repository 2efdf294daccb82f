"""Two-dimensional toy distributions of the WGAN-GP paper, sampled in pure JAX.

Scales follow `gan_toy.py` of gulrajani/improved_wgan_training exactly, so that
critic values and plots are comparable with the paper's Figure 2. Every sampler is
a pure function of a `jax.random` key, so it can be jitted or called inside a step.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Equal-weight mixture of isotropic Gaussians in the plane.

    The centres and sigma are public because mode-coverage metrics count a sample as
    hitting a mode when it lies within a few sigma of that mode's centre.

    Attributes:
        name: Short name used in plots and logs.
        centres: Mode centres, float32 [K, 2].
        sigma: Standard deviation of every mode, per coordinate.
    """

    name: str
    centres: np.ndarray
    sigma: float

    def __post_init__(self):
        centres = np.asarray(self.centres, dtype=np.float32)
        if centres.ndim != 2 or centres.shape[1] != 2 or centres.shape[0] == 0:
            raise ValueError(
                f"centres must have shape [K, 2] with K >= 1, got {centres.shape}; "
                "pass one (x, y) row per mode."
            )
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}.")
        centres.setflags(write=False)  # Shared by metrics; must not drift.
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "sigma", float(self.sigma))

    # Compared by value, so that equal mixtures share one compiled sampler (jit static argument).
    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, GaussianMixture)
            and self.name == other.name
            and self.sigma == other.sigma
            and np.array_equal(self.centres, other.centres)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.sigma, self.centres.tobytes()))

    @property
    def num_modes(self) -> int:
        return self.centres.shape[0]

    def sample(self, key: jax.Array, n: int) -> jnp.ndarray:
        """Draws n points: a uniform mode, then N(centre, sigma^2 I). Returns [n, 2] float32."""
        return self.sample_with_modes(key, n)[0]

    def sample_with_modes(self, key: jax.Array, n: int) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``sample`` and the index of the mode each point came from (a label for cGANs)."""
        mode_key, noise_key = jax.random.split(key)
        modes = jax.random.randint(mode_key, (n,), 0, self.num_modes)
        noise = jax.random.normal(noise_key, (n, 2), jnp.float32)
        return jnp.asarray(self.centres)[modes] + self.sigma * noise, modes.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class SwissRoll:
    """sklearn's `make_swiss_roll` seen from above, as in the WGAN-GP toy code.

    The toy code keeps columns [0, 2] of `make_swiss_roll(noise=0.25)`, which are
    (t cos t, t sin t) plus noise with t = 1.5 pi (1 + 2u), u ~ U[0, 1], and divides by
    7.5. This is that formula in JAX, without calling sklearn.
    """

    noise: float = 0.25
    scale: float = 7.5

    def __post_init__(self):
        if self.noise < 0 or not self.scale > 0:
            raise ValueError(
                f"need noise >= 0 and scale > 0, got noise={self.noise}, scale={self.scale}."
            )

    def sample(self, key: jax.Array, n: int) -> jnp.ndarray:
        """Draws n points of the roll. Returns [n, 2] float32."""
        angle_key, noise_key = jax.random.split(key)
        t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(angle_key, (n,), jnp.float32))
        roll = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
        noise = jax.random.normal(noise_key, (n, 2), jnp.float32)
        return (roll + self.noise * noise) / self.scale


def eight_gaussians() -> GaussianMixture:
    """Eight modes on a circle of radius 2, all divided by 1.414 (WGAN-GP toy data)."""
    diagonal = 1 / math.sqrt(2)
    unit = [
        (1, 0),
        (-1, 0),
        (0, 1),
        (0, -1),
        (diagonal, diagonal),
        (diagonal, -diagonal),
        (-diagonal, diagonal),
        (-diagonal, -diagonal),
    ]
    return GaussianMixture("8gaussians", 2.0 * np.array(unit) / 1.414, 0.02 / 1.414)


def twenty_five_gaussians() -> GaussianMixture:
    """Modes at (2i, 2j), i, j in -2..2, all divided by 2.828 (WGAN-GP toy data).

    The original draws one fixed set of 100k points and shuffles it each epoch; we sample
    the same mixture afresh, which is the distribution that fixed set approximates.
    """
    steps = 2.0 * np.arange(-2, 3)
    centres = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixture("25gaussians", centres / 2.828, 0.05 / 2.828)


def ring(num_modes: int = 8, radius: float = 1.0, sigma: float = 0.01) -> GaussianMixture:
    """Modes evenly spaced on a circle, at angles 2 pi k / num_modes."""
    if num_modes < 1:
        raise ValueError(f"num_modes must be at least 1, got {num_modes}.")
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return GaussianMixture(f"ring{num_modes}", centres, sigma)


def grid(side: int = 5, spacing: float = 2.0, sigma: float = 0.05) -> GaussianMixture:
    """Modes on a side x side grid centred at 0, e.g. {-4, -2, 0, 2, 4}^2 by default."""
    if side < 1:
        raise ValueError(f"side must be at least 1, got {side}.")
    steps = spacing * (np.arange(side) - (side - 1) / 2)
    centres = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)
    return GaussianMixture(f"grid{side * side}", centres, sigma)
