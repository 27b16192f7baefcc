"""What scalar an explanation differentiates: a unit of a layer (neuron, channel, seed) or a class of the output.

A unit is a `values.Unit`; its layer's layout comes with a `LayerInfo`, and the unit is read through
`layouts.as_maps(activation, info)[:, channel, y, x]`, so a channels-last map (ConvNeXt) or a token layer (ViT)
is indexed exactly like a CNN's channels-first map. Without an info the activation is taken as channels-first
(a vector when it is N x C), as plain CNNs have it.
"""

from __future__ import annotations

from torch import Tensor

from ..errors import ParamError
from ..layouts import as_maps
from ..values import (
    ClassTarget,
    LayerInfo,
    Layout,
    Unit,
    check_channel,
    check_class_index,
    check_position,
)

UNIT_OBJECTIVES = ("neuron", "channel", "seed")
OBJECTIVES = (*UNIT_OBJECTIVES, "logit", "prob")  # what `--objective` offers: a class score names its objective

Target = Unit | ClassTarget


def activation_info(activation: Tensor, layer: str = "") -> LayerInfo:
    """The layout an activation has when nobody says: channels-first maps (N x C x ...), a vector for N x C."""
    shape = tuple(activation.shape[1:])
    return LayerInfo(layer or "layer", "", shape, Layout.VECTOR if len(shape) <= 1 else Layout.CHANNELS_FIRST)


def check_target(activation: Tensor, target: Target, objective: str, info: LayerInfo | None) -> None:
    """One line when the objective is unknown or the unit / class is not in `activation` (range checks of
    `values`, so every part of the program says the same)."""
    if isinstance(target, ClassTarget):
        if objective != "neuron":
            raise ParamError("objective", f"is set by the class target's score ({target.score}), not {objective!r}")
        check_class_index(target.index, activation.flatten(1).shape[1])
        return
    if objective not in UNIT_OBJECTIVES:
        raise ParamError("objective", f"must be one of {', '.join(UNIT_OBJECTIVES)} for a unit, not {objective!r}")
    info = info or activation_info(activation, target.layer)
    check_channel(info, target.channel)
    if objective == "neuron":
        check_position(info, target.y, target.x)


def resolve_unit(activation: Tensor, unit: Unit, info: LayerInfo | None = None) -> Unit:
    """The unit with its position filled from the channel's argmax in image 0 (on the channels-first view);
    a unit with a position, or of a layer without positions (a vector), is returned as it is."""
    info = info or activation_info(activation, unit.layer)
    if unit.position is not None or info.grid is None:
        return unit
    chan = as_maps(activation.detach(), info)[0, unit.channel]
    flat = int(chan.flatten().argmax())
    return unit.at(flat // chan.shape[1], flat % chan.shape[1])


def unit_objective(activation: Tensor, target: Target, objective: str = "neuron",
                   info: LayerInfo | None = None) -> Tensor:
    """Scalar to differentiate, summed over the batch (images are independent in eval mode).

    objective (units only): ``neuron`` = maps[c, y, x] (a neuron without a position: each image's own maximum
    of the channel); ``channel`` = sum of maps[c]; ``seed`` = the old toolbox's seeding: backprop maps[c]
    itself as the upstream gradient (sum(maps_c * maps_c.detach())). A `ClassTarget` scores class `index` of
    the network output `activation` [N, classes] by its logit or softmax probability.
    """
    if isinstance(target, ClassTarget):
        out = activation.flatten(1)
        if target.score == "prob":
            out = out.softmax(dim=1)
        return out[:, target.index].sum()
    chan = as_maps(activation, info or activation_info(activation, target.layer))[:, target.channel]
    if objective == "channel":
        return chan.sum()
    if objective == "seed":
        return (chan * chan.detach()).sum()
    if target.position is not None:
        return chan[:, target.y, target.x].sum()
    return chan.flatten(1).max(dim=1).values.sum()  # max = the value at the per-image argmax
