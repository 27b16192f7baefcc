"""Activation maximization: images that maximize a class score, a neuron, a channel or a whole layer.

    from deepvis_app.optimize import optimize, objectives as obj
    res = optimize(vm, obj.class_logit(100), preset="default", seed=0)   # res.image: uint8 HxWx3

`iter_optimize` is the same as a step iterator (for the GUI's worker thread, with an abort check between
steps). `cached_result` looks a result up without running anything. See docs/optimize.md. No Qt here.

Optimizing a photo instead of a class image: `invert` (feature inversion, docs/inversion.md), `dream` (DeepDream,
docs/dream.md) and `style` (neural style, docs/style.md), each a generator of `ImageStep`s plus a plain function.
"""

from . import dream, invert, objectives, style
from .engine import Cancelled, OptimizeResult, Progress, cached, cached_result, iter_optimize, optimize
from .presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Cancelled", "OptimizeResult", "Preset", "Progress", "cached", "cached_result", "get_preset",
           "dream", "invert", "iter_optimize", "objectives", "optimize", "style"]
