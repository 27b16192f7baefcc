"""A unit's optimized image as the app looks it up: which objective, which settings count, where else to look.

Shared by the inspector's optimized image and pattern mode (and the CLI's `optimize-layer` writes what they
find): the objective is the channel mean for layers with positions (maps, token grids) and the unit itself for
vectors, read before the clip on capped rectifier layers (ReLU6), so the app and the CLI share cache entries.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DeepVisError
from ..values import Layout
from . import objectives
from .cache import read_png
from .engine import cached_result


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment (e.g. DEEPVIS_OPTIMIZE_STEPS=4 in tests), else `default`."""
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def app_settings() -> tuple[int, int]:
    """(steps, size) of the app's optimizations: small enough for a CPU next to the live loop."""
    return env_int("DEEPVIS_OPTIMIZE_STEPS", 64), env_int("DEEPVIS_OPTIMIZE_SIZE", 96)


def unit_objective(vm, layer: str, channel: int, *, pre_clip: bool | None = None) -> objectives.Objective:
    """The channel mean for a layer with positions (maps, tokens: the unit's feature anywhere in the image), the
    unit itself for a vector; the layout comes from the model, never from the shape. On a capped rectifier
    (ReLU6) the value before the clip, unless `pre_clip=False` (`objectives.channel`)."""
    if vm.info(layer).layout is Layout.VECTOR:
        return objectives.neuron(layer, channel, pre_clip=pre_clip)
    return objectives.channel(layer, channel, pre_clip=pre_clip)


def cached_unit_image(vm, layer: str, channel: int, *, steps: int, size: int,
                      folder: tuple[str, Path] | None = None) -> np.ndarray | None:
    """The unit's image from the cache (the app's settings first, then the CLI's defaults), else from an opened
    `optimize-layer` folder for that layer; never runs the net."""
    try:
        obj = unit_objective(vm, layer, channel)
        for settings in ({"steps": steps, "size": size}, {}):
            img = cached_result(vm, obj, **settings)
            if img is not None:
                return img
    except (DeepVisError, OSError, ValueError):
        return None
    if folder is not None and folder[0] == layer:
        return read_png(Path(folder[1]) / f"unit_{channel:04d}.png")
    return None
