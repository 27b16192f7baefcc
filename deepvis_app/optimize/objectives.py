"""Objectives: what an optimized image should excite (or suppress).

An `Objective` maps what one forward pass produced (the probed layer activations and the network output)
to one value per image in the batch; the engine maximizes the batch sum. Objectives compose like numbers
(`a + b`, `0.5 * a`, `-a`, `a - b`) so a weighted mix or "what this unit hates" needs no extra API, and
each carries a canonical `key` string so results can be cached by what was asked for, not by object id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import DeepVisError


@dataclass
class Outputs:
    """What one forward pass produced: activations by layer name, and the network output (logits)."""

    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None

    def layer(self, name: str) -> torch.Tensor:
        try:
            return self.acts[name]
        except KeyError:
            raise DeepVisError(f"layer {name!r} produced no output in this forward pass") from None


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


def _check_channel(act: torch.Tensor, layer: str, c: int) -> None:
    if act.dim() < 2 or not 0 <= c < act.shape[1]:
        n = act.shape[1] if act.dim() >= 2 else 0
        raise DeepVisError(f"unit {c} is out of range for layer {layer!r} (valid: 0..{n - 1})")


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel `c` over all positions (a feature detector anywhere in the image)."""

    def fn(o: Outputs) -> torch.Tensor:
        act = o.layer(layer)
        _check_channel(act, layer, c)
        a = act[:, c]
        return a.reshape(a.shape[0], -1).mean(1)

    return Objective(fn, f"channel({layer},{c})", layers=(layer,))


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel `c` at spatial position (y, x); the centre when omitted (one receptive field)."""

    def fn(o: Outputs) -> torch.Tensor:
        act = o.layer(layer)
        _check_channel(act, layer, c)
        if act.dim() == 2:
            return act[:, c]
        if act.dim() != 4:
            return act[:, c].reshape(act.shape[0], -1).mean(1)
        h, w = act.shape[2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise DeepVisError(f"position (y={yy}, x={xx}) is outside layer {layer!r} "
                               f"(valid: y 0..{h - 1}, x 0..{w - 1})")
        return act[:, c, yy, xx]

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


def _check_class(logits: torch.Tensor, i: int) -> None:
    if not 0 <= i < logits.shape[1]:
        raise DeepVisError(f"class {i} is out of range (valid: 0..{logits.shape[1] - 1})")


def _class_objective(i: int, name: str, score: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    """Class `i` of `score(logits [N, classes])`, with the range check every class objective needs."""

    def fn(o: Outputs) -> torch.Tensor:
        logits = _logits(o)
        _check_class(logits, i)
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
        a = o.layer(layer)
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
