"""Capped rectifiers: which layers clip their value at a ceiling (`nn.ReLU6` at 6, `nn.Hardtanh(0, m)` at m).

A unit at its cap has a gradient of exactly zero, so every gradient-based view of it is blank and an image
optimized for it stops moving the moment it touches the cap (a flat grey wash). The backprop panes explain the
blank views with it; activation maximization optimizes the value *before* the clip on such layers instead. Asked of
the module a layer name (`name` or `name@k`) points at; no forward pass. No Qt here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .probe import split_layer

__all__ = ["Clip", "clip_of", "rectifier_cap"]


@dataclass(frozen=True)
class Clip:
    """The ceiling of a capped rectifier: `kind` its module type ("ReLU6", "Hardtanh"), `cap` the upper clip."""

    kind: str
    cap: float

    def __str__(self) -> str:
        return f"{self.kind} cap {self.cap:g}"


def clip_of(net: nn.Module, layer: str) -> Clip | None:
    """The clip of the rectifier module `layer` names (`nn.ReLU6`: 6; `nn.Hardtanh(0, m)`: m), else None (a plain
    ReLU, a block output, a convolution, a name that is no module)."""
    name, _call = split_layer(layer)
    if not name:
        return None
    try:
        module = net.get_submodule(name)
    except AttributeError:
        return None
    if isinstance(module, nn.ReLU6):
        return Clip("ReLU6", 6.0)
    if isinstance(module, nn.Hardtanh) and float(module.min_val) == 0.0 and float(module.max_val) > 0.0:
        return Clip("Hardtanh", float(module.max_val))
    return None


def rectifier_cap(net: nn.Module, layer: str) -> float | None:
    """The upper clip of the rectifier module `layer` names (ReLU6: 6), else None."""
    clip = clip_of(net, layer)
    return None if clip is None else clip.cap
