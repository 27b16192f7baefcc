"""Objectives: what an optimized image should excite (or suppress).

An `Objective` maps what one forward pass produced (the probed layer activations and the network output)
to one value per image in the batch; the engine maximizes the batch sum. Objectives compose like numbers
(`a + b`, `0.5 * a`, `-a`, `a - b`) so a weighted mix or "what this unit hates" needs no extra API, and
each carries a canonical `key` string so results can be cached by what was asked for, not by object id.

Units are read through the layer's layout (`layouts.as_maps` with the layer's `LayerInfo`): channel `c` at
(y, x) of a channels-last map or of a ViT's token grid is the same unit the grid, the inspector and the top-k
show, never an index into the raw shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ..errors import DeepVisError
from ..layouts import as_maps
from ..values import LayerInfo, check_channel, check_class_index, check_position


@dataclass
class Outputs:
    """What one forward pass produced: activations by layer name, the network output (logits), and the layers'
    `LayerInfo` (layout, channels) that unit objectives index through."""

    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    infos: dict[str, LayerInfo] = field(default_factory=dict)

    def layer(self, name: str) -> torch.Tensor:
        try:
            return self.acts[name]
        except KeyError:
            raise DeepVisError(f"layer {name!r} produced no output in this forward pass") from None

    def info(self, name: str) -> LayerInfo:
        """The layer's LayerInfo with this forward's shape (an optimized image may be smaller than the model's
        input, so its maps are too)."""
        try:
            info = self.infos[name]
        except KeyError:
            raise DeepVisError(f"layer {name!r}: its layout is not known here, so its units cannot be read") from None
        shape = tuple(self.layer(name).shape[1:])
        return info if info.shape == shape else replace(info, shape=shape)

    def maps(self, name: str) -> torch.Tensor:
        """The layer's activation as channels-first maps N x C x H x W (`layouts.as_maps`)."""
        return as_maps(self.layer(name), self.info(name))


class Objective:
    """A differentiable score per image: `objective(outputs) -> Tensor[N]`.

    `layers` are the layers it needs probed; `needs_logits` says whether it reads the network output (so
    the engine may stop the forward early otherwise); `key` describes it canonically (cache key, JSON).
    """

    def __init__(self, fn: Callable[[Outputs], torch.Tensor], key: str, *, layers: tuple[str, ...] = (),
                 needs_logits: bool = False) -> None:
        self.fn = fn
        self.key = key
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_logits = needs_logits

    def __call__(self, out: Outputs) -> torch.Tensor:
        return self.fn(out)

    def __repr__(self) -> str:
        return f"Objective({self.key})"

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            if other == 0:
                return self
            return Objective(lambda o: self(o) + other, f"({self.key} + {other:g})", layers=self.layers,
                             needs_logits=self.needs_logits)
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(lambda o: self(o) + other(o), f"({self.key} + {other.key})",
                         layers=self.layers + other.layers, needs_logits=self.needs_logits or other.needs_logits)

    __radd__ = __add__  # so sum([a, b, c]) works (it starts from 0)

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return Objective(lambda o: k * self(o), f"{k:g}*{self.key}", layers=self.layers,
                         needs_logits=self.needs_logits)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return self * (1.0 / k)

    def __neg__(self) -> Objective:
        return Objective(lambda o: -self(o), f"-{self.key}", layers=self.layers, needs_logits=self.needs_logits)

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other


def _unit_maps(o: Outputs, layer: str, c: int) -> tuple[LayerInfo, torch.Tensor]:
    """(info, maps N x C x H x W) of `layer`, after the one range check of channel `c`."""
    info = o.info(layer)
    check_channel(info, c)
    return info, as_maps(o.layer(layer), info)


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel `c` over all positions (a feature detector anywhere in the image; over the
    patch tokens of a token layer, its class token left out)."""

    def fn(o: Outputs) -> torch.Tensor:
        _info, maps = _unit_maps(o, layer, c)
        a = maps[:, c]
        return a.reshape(a.shape[0], -1).mean(1)

    return Objective(fn, f"channel({layer},{c})", layers=(layer,))


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel `c` at position (y, x) of the layer's maps; the centre when omitted (one receptive
    field). A vector's unit is its value."""

    def fn(o: Outputs) -> torch.Tensor:
        info, maps = _unit_maps(o, layer, c)
        h, w = maps.shape[2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if y is not None or x is not None:
            check_position(info, yy, xx)
        return maps[:, c, yy, xx]

    pos = "" if y is None and x is None else f",{y},{x}"
    return Objective(fn, f"neuron({layer},{c}{pos})", layers=(layer,))


def layer_dream(layer: str) -> Objective:
    """DeepDream: mean squared activation of a whole layer (amplifies whatever the layer already sees)."""

    def fn(o: Outputs) -> torch.Tensor:
        a = o.layer(layer)
        return a.pow(2).reshape(a.shape[0], -1).mean(1)

    return Objective(fn, f"layer_dream({layer})", layers=(layer,))


def _logits(o: Outputs) -> torch.Tensor:
    if o.logits is None:
        raise DeepVisError("this objective needs the network output, but the forward pass produced none")
    logits = o.logits
    return logits.reshape(logits.shape[0], -1)


def _class_objective(i: int, name: str, score: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    """Class `i` of `score(logits [N, classes])`, with the range check every class objective needs."""

    def fn(o: Outputs) -> torch.Tensor:
        logits = _logits(o)
        check_class_index(i, logits.shape[1])
        return score(logits)[:, i]

    return Objective(fn, f"{name}({i})", needs_logits=True)


def class_logit(i: int) -> Objective:
    """Pre-softmax score of class `i` (Simonyan et al. 2013 optimize this, not the probability)."""
    return _class_objective(i, "class_logit", lambda logits: logits)


def class_prob(i: int) -> Objective:
    """Softmax probability of class `i` in 0..1 (can also rise by suppressing other classes)."""
    return _class_objective(i, "class_prob", lambda logits: F.softmax(logits, dim=1))


def class_log_prob(i: int) -> Objective:
    """Log-softmax of class `i`: like `class_prob` but with gradients that do not vanish near 0 or 1."""
    return _class_objective(i, "class_log_prob", lambda logits: F.log_softmax(logits, dim=1))


def diversity(layer: str) -> Objective:
    """Lucid's diversity term: minus the mean cosine similarity of an image's Gram matrix at `layer` with
    those of the other images in the batch, so a batch spreads over different ways to excite one unit.
    Zero for a batch of one."""

    def fn(o: Outputs) -> torch.Tensor:
        a = o.maps(layer)  # channels first, whatever the layer's layout: the Gram matrix is over channels
        n = a.shape[0]
        if n < 2:
            return a.new_zeros(n)
        flat = a.reshape(n, a.shape[1], -1)
        gram = torch.bmm(flat, flat.transpose(1, 2)).reshape(n, -1)
        gram = F.normalize(gram, dim=1)
        sim = gram @ gram.T
        off = sim - torch.diag_embed(torch.diagonal(sim))
        return -off.sum(1) / (n - 1)

    return Objective(fn, f"diversity({layer})", layers=(layer,))
