"""Objectives: what an optimized image should excite (or suppress).

An `Objective` maps what one forward pass produced (the probed layer activations and the network output)
to one value per image in the batch; the engine maximizes the batch sum. Objectives compose like numbers
(`a + b`, `0.5 * a`, `-a`, `a - b`) so a weighted mix or "what this unit hates" needs no extra API, and
each carries a canonical `key` string so results can be cached by what was asked for, not by object id.

Units are read through the layer's layout (`layouts.as_maps` with the layer's `LayerInfo`): channel `c` at
(y, x) of a channels-last map or of a ViT's token grid is the same unit the grid, the inspector and the top-k
show, never an index into the raw shape.

Capped rectifiers (`nn.ReLU6`, `nn.Hardtanh(0, m)`, see `deepvis_app.rectifiers`): a unit objective on such a
layer maximizes the value *before* the clip by default (the rectifier's input, same channel and position, rectified
with a 1% leak: `uncapped`), since the clipped value stops at the cap with a gradient of exactly 0 (the image stays
a grey wash). Below the cap that is the clipped value itself, so units that never reach it are optimized as before.
Which layers clip is a fact of the network, so a unit objective is bound to it (`Objective.bind(net)`, done by the
engine); its key then says `pre-clip` and its `title` states it. `pre_clip=False` keeps the clipped value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeepVisError, ParamError
from ..layouts import as_maps
from ..rectifiers import Clip, clip_of
from ..values import LayerInfo, check_channel, check_class_index, check_position


@dataclass
class Outputs:
    """What one forward pass produced: activations by layer name, the network output (logits), the layers'
    `LayerInfo` (layout, channels) that unit objectives index through, and `pre`: the input of the layers whose
    pre-clip value an objective reads (a capped rectifier's input, same shape as its output)."""

    acts: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    infos: dict[str, LayerInfo] = field(default_factory=dict)
    pre: dict[str, torch.Tensor] = field(default_factory=dict)

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

    def pre_clip(self, name: str) -> torch.Tensor:
        """The layer's input in this forward: the value its rectifier clips (same shape as its output)."""
        try:
            act = self.pre[name]
        except KeyError:
            raise DeepVisError(f"layer {name!r}: its input (the value before the clip) was not captured in this "
                               "forward pass") from None
        if tuple(act.shape) != tuple(self.layer(name).shape):
            raise DeepVisError(f"layer {name!r}: its input {tuple(act.shape)} and output "
                               f"{tuple(self.layer(name).shape)} differ in shape, so it has no pre-clip value")
        return act


class Objective:
    """A differentiable score per image: `objective(outputs) -> Tensor[N]`.

    `layers` are the layers it needs probed; `needs_logits` says whether it reads the network output (so
    the engine may stop the forward early otherwise); `key` describes it canonically (cache key, JSON).
    `inputs`: layers whose input it reads (`Outputs.pre`: a capped rectifier's pre-clip value); `title`: what
    it measures in words (the key unless it reads before a clip); `clipped`: the same objective on the clipped
    outputs, so a pre-clip result can report both values. `bind(net)` fixes what depends on the network (which
    layers clip); an unbound objective evaluates as its key says.
    """

    def __init__(self, fn: Callable[[Outputs], torch.Tensor], key: str, *, layers: tuple[str, ...] = (),
                 needs_logits: bool = False, inputs: tuple[str, ...] = (), title: str | None = None,
                 clipped: Objective | None = None,
                 resolve: Callable[[nn.Module], Objective] | None = None) -> None:
        self.fn = fn
        self.key = key
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_logits = needs_logits
        self.inputs = tuple(dict.fromkeys(inputs))
        self.title = title or key
        self.clipped = clipped
        self.resolve = resolve

    def __call__(self, out: Outputs) -> torch.Tensor:
        return self.fn(out)

    def __repr__(self) -> str:
        return f"Objective({self.key})"

    @property
    def pre_clip(self) -> bool:
        """Reads some layer's value before its clip (`inputs`)."""
        return bool(self.inputs)

    def bind(self, net: nn.Module) -> Objective:
        """This objective on `net`: unit objectives of capped rectifier layers read the pre-clip value (unless
        built with `pre_clip=False`); ParamError for `pre_clip=True` on a layer that clips nothing."""
        return self if self.resolve is None else self.resolve(net)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            if other == 0:
                return self
            return _composed(lambda o: self(o) + other, f"({self.key} + {other:g})", f"({self.title} + {other:g})",
                             (self,), lambda a: a + other)
        if not isinstance(other, Objective):
            return NotImplemented
        return _composed(lambda o: self(o) + other(o), f"({self.key} + {other.key})",
                         f"({self.title} + {other.title})", (self, other), lambda a, b: a + b)

    __radd__ = __add__  # so sum([a, b, c]) works (it starts from 0)

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return _composed(lambda o: k * self(o), f"{k:g}*{self.key}", f"{k:g}*{self.title}", (self,),
                         lambda a: k * a)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return self * (1.0 / k)

    def __neg__(self) -> Objective:
        return _composed(lambda o: -self(o), f"-{self.key}", f"-{self.title}", (self,), lambda a: -a)

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other


def _composed(fn: Callable[[Outputs], torch.Tensor], key: str, title: str, parts: tuple[Objective, ...],
              rebuild: Callable[..., Objective]) -> Objective:
    """An objective made of `parts` by `rebuild` (the same operator on other parts): its clipped twin and its
    binding to a net are the operator applied to the parts' own."""
    clipped = rebuild(*(p.clipped or p for p in parts)) if any(p.clipped is not None for p in parts) else None
    resolve = None
    if any(p.resolve is not None for p in parts):
        def resolve(net: nn.Module) -> Objective:
            return rebuild(*(p.bind(net) for p in parts))
    return Objective(fn, key, layers=sum((p.layers for p in parts), ()),
                     needs_logits=any(p.needs_logits for p in parts), inputs=sum((p.inputs for p in parts), ()),
                     title=title if title != key else None, clipped=clipped, resolve=resolve)


def _unit_maps(o: Outputs, layer: str, c: int, pre_clip: bool = False) -> tuple[LayerInfo, torch.Tensor]:
    """(info, maps N x C x H x W) of `layer` (of its input before the clip with `pre_clip`), after the one range
    check of channel `c`."""
    info = o.info(layer)
    check_channel(info, c)
    return info, as_maps(uncapped(o.pre_clip(layer)) if pre_clip else o.layer(layer), info)


# Below zero a capped rectifier's input still gets this share of the gradient (see `uncapped`).
LEAK = 0.01


def uncapped(pre: torch.Tensor) -> torch.Tensor:
    """A capped rectifier's value with the cap removed: equal to the clipped value below the cap (so a unit that
    never reaches it is optimized as before), rising past it where the clipped value stops with a gradient of 0;
    below zero a 1% leak, so a unit silent on the grey start image still gets a gradient."""
    return F.leaky_relu(pre, LEAK)


def _unit_objective(key: str, what: str, layer: str, c: int, pre_clip: bool | None,
                    read: Callable[[LayerInfo, torch.Tensor], torch.Tensor]) -> Objective:
    """A unit objective `read(info, maps)` on `layer`'s output, or on its input before a capped rectifier's clip:
    always (`pre_clip=True`, the layer must clip), never (False), or when the bound net's layer clips (None)."""

    def make(pre: bool, clip: Clip | None = None) -> Objective:
        def fn(o: Outputs) -> torch.Tensor:
            info, maps = _unit_maps(o, layer, c, pre)
            return read(info, maps)

        if not pre:
            return Objective(fn, f"{key})", layers=(layer,))
        title = f"pre-clip value of {what}" + (f" ({clip})" if clip is not None else "")
        return Objective(fn, f"{key},pre-clip)", layers=(layer,), inputs=(layer,), title=title,
                         clipped=make(False))

    def resolve(net: nn.Module) -> Objective:
        clip = clip_of(net, layer)
        if clip is None and pre_clip:
            raise ParamError("pre_clip", f"layer {layer!r} clips nothing (only ReLU6 and Hardtanh(0, m) layers have "
                                         "a value before a clip)")
        return make(clip is not None, clip)

    if pre_clip is False:
        return make(False)
    unbound = make(bool(pre_clip))
    unbound.resolve = resolve
    return unbound


def channel(layer: str, c: int, *, pre_clip: bool | None = None) -> Objective:
    """Mean activation of channel `c` over all positions (a feature detector anywhere in the image; over the
    patch tokens of a token layer, its class token left out). On a capped rectifier, the mean value before the
    clip unless `pre_clip=False` (module docstring)."""

    def read(_info: LayerInfo, maps: torch.Tensor) -> torch.Tensor:
        a = maps[:, c]
        return a.reshape(a.shape[0], -1).mean(1)

    return _unit_objective(f"channel({layer},{c}", f"{layer} channel {c} (mean over positions)", layer, c,
                           pre_clip, read)


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None, *,
           pre_clip: bool | None = None) -> Objective:
    """One unit: channel `c` at position (y, x) of the layer's maps; the centre when omitted (one receptive
    field). A vector's unit is its value. On a capped rectifier, its value before the clip unless
    `pre_clip=False` (module docstring)."""

    def read(info: LayerInfo, maps: torch.Tensor) -> torch.Tensor:
        h, w = maps.shape[2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if y is not None or x is not None:
            check_position(info, yy, xx)
        return maps[:, c, yy, xx]

    pos = "" if y is None and x is None else f",{y},{x}"
    where = "" if y is None and x is None else f" at y={y}, x={x}"
    return _unit_objective(f"neuron({layer},{c}{pos}", f"{layer} unit {c}{where}", layer, c, pre_clip, read)


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
