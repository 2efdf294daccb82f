"""Named model builders: ``--model=NAME`` is a lookup here, and a model module registers its own.

A builder maps what every model is given (``Spec``: the data's shape, the widths, spectral
normalisation, whether a penalty needs per-example scores) and the model's own options (a frozen
dataclass that checks itself) to a ``(generator, critic)`` pair:

    @dataclasses.dataclass(frozen=True)
    class LineOptions:
        slope_init: float = 0.0

    def build_line(spec: Spec, options: LineOptions):
        return ShiftGenerator(), LineCritic(options.slope_init)

    registry.register("line", build_line, LineOptions)

The experiments fill an options dataclass from the flags of its fields' names, and refuse a
flag that is a field of other models' options only (``owners``), naming the models that take it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Spec:
    """What every builder is given.

    Attributes:
      element_shape: one example's shape: ``(dim,)`` for points, ``(size, size, channels)``.
      data_name: the data set's name, for messages.
      width: the generator's width (an MLP's hidden units, a CNN's base channels).
      critic_width: the critic's width.
      spectral_norm: spectral normalisation of every critic layer.
      generator_spectral_norm: spectral normalisation of every generator layer.
      num_classes: the classes a generator that conditions itself (``Builder.conditions_itself``)
        takes labels of; None: unconditional.
      penalty: a gradient penalty is on, so the critic's score of one example must not depend on
        the rest of its batch.
      axis_name: the device axis BatchNorm averages its statistics over, or None.
    """

    element_shape: tuple[int, ...]
    data_name: str = "the data"
    width: int = 64
    critic_width: int = 64
    spectral_norm: bool = False
    generator_spectral_norm: bool = False
    num_classes: int | None = None
    penalty: bool = False
    axis_name: str | None = None

    def image(self, model: str) -> tuple[int, int]:
        """``(size, channels)`` of image data; raises ``ValueError`` for points."""
        if len(self.element_shape) != 3:
            raise ValueError(f"--model={model} needs image data; {self.data_name} is 2-D.")
        size, _, channels = self.element_shape
        return size, channels

    def image_generator(self, model: str) -> dict[str, Any]:
        """The arguments every image generator here takes: the image's side and channels, the
        width, spectral normalisation and the device axis."""
        size, channels = self.image(model)
        return {
            "image_size": size,
            "channels": channels,
            "width": self.width,
            "spectral_norm": self.generator_spectral_norm,
            "axis_name": self.axis_name,
        }


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A model without options of its own."""


Models = tuple[nn.Module, nn.Module]


@dataclasses.dataclass(frozen=True)
class Builder:
    """A registered model.

    Attributes:
      name: its ``--model`` name.
      build: ``(spec, options) -> (generator, critic)``; raises ``ValueError`` with one sentence
        for a combination it cannot build.
      options: its options' frozen dataclass; ``options()`` must be valid.
      conditions_itself: its generator takes ``labels`` itself (conditional BatchNorm) rather
        than through ``ConditionalGenerator``.
      real_transform: ``spec -> f`` mapping a batch of real images to what the critic reads
        (MSG-GAN's pyramid), or None.
    """

    name: str
    build: Callable[[Spec, Any], Models]
    options: type = NoOptions
    conditions_itself: bool = False
    real_transform: Callable[[Spec], Callable[[Any], Any]] | None = None

    def option_names(self) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(self.options))


BUILDERS: dict[str, Builder] = {}


def register(
    name: str,
    build: Callable[[Spec, Any], Models],
    options: type = NoOptions,
    *,
    conditions_itself: bool = False,
    real_transform: Callable[[Spec], Callable[[Any], Any]] | None = None,
) -> Builder:
    """Adds a model under ``name``; returns its ``Builder``.

    Raises:
      ValueError: ``name`` is taken, empty or ``auto``, or ``options`` is not a dataclass whose
        defaults are valid.
    """
    if name in BUILDERS:
        raise ValueError(f"model {name!r} is registered already; choose another name.")
    if not name or name == "auto":
        raise ValueError(f"model name {name!r} must be non-empty and not 'auto'.")
    if not dataclasses.is_dataclass(options) or not isinstance(options, type):
        raise ValueError(f"the options of model {name!r} must be a dataclass, got {options!r}.")
    options()  # Its defaults must be a valid setting; raises ValueError if not.
    builder = Builder(name, build, options, conditions_itself, real_transform)
    BUILDERS[name] = builder
    return builder


def get(name: str) -> Builder:
    """The builder registered as ``name``; raises ``ValueError`` listing the known names."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(BUILDERS))}.")
    return BUILDERS[name]


def default_for(element_shape: tuple[int, ...]) -> str:
    """``--model=auto``: the MLP for points, DCGAN for images."""
    return "mlp" if len(element_shape) == 1 else "dcgan"


def owners(option: str) -> tuple[str, ...]:
    """The registered models that take ``option``, by name."""
    return tuple(sorted(name for name, b in BUILDERS.items() if option in b.option_names()))


def option_names() -> tuple[str, ...]:
    """Every option of every registered model, each once."""
    return tuple(dict.fromkeys(o for b in BUILDERS.values() for o in b.option_names()))


def describe_owners(option: str) -> str:
    """``--model=resnet only`` or ``--model=mlp and dcgan``: who takes ``option``."""
    names = owners(option)
    if len(names) == 1:
        return f"--model={names[0]} only"
    return f"--model={', '.join(names[:-1])} and {names[-1]}"
