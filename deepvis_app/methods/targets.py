"""What an attribution method explains: a class of the output or a unit of a layer, as one scalar per image.

Every method of this package differentiates (or, gradient-free, reads) `target_score`: a class's logit or
softmax probability, or a unit's value (a neuron at (y, x); without a position, each image's maximum over the
channel, i.e. the neuron at its argmax, as the live inspector explains it). Units are indexed through the layer's
layout (`layouts.as_maps`), so a channels-last or token layer works as a channels-first one does.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import DeepVisError
from ..layer_lookup import layer_info as lookup_layer_info
from ..layouts import as_maps
from ..probe import output_logits  # noqa: F401 - the methods' import point
from ..values import ClassTarget, LayerInfo, Unit, check_channel, check_class_index, check_position

Target = ClassTarget | Unit


def coerce_target(target: Target | int | None, logits: Tensor | None = None, score: str = "logit") -> Target:
    """An int is a class (scored by `score`); None is each image's top class (needs `logits`)."""
    if isinstance(target, ClassTarget | Unit):
        return target
    if target is None:
        if logits is None:
            raise DeepVisError("a target is needed: a class index or a unit")
        return ClassTarget(int(logits[0].argmax()), score)
    return ClassTarget(int(target), score)


def check_target(target: Target, classes: int | None, info: LayerInfo | None) -> None:
    """One line when the class or unit does not exist."""
    if isinstance(target, ClassTarget):
        if classes is not None:
            check_class_index(target.index, classes)
        return
    if info is not None:
        check_channel(info, target.channel)
        check_position(info, target.y, target.x)


def target_score(target: Target, logits: Tensor | None, unit_act: Tensor | None = None,
                 info: LayerInfo | None = None) -> Tensor:
    """Scalar score per image, shape [N]: what the attribution explains."""
    if isinstance(target, ClassTarget):
        if logits is None:
            raise DeepVisError("a class target needs the network's output")
        out = logits.flatten(1)
        if target.score == "prob":
            out = out.softmax(dim=1)
        return out[:, target.index]
    if unit_act is None or info is None:
        raise DeepVisError(f"unit {target} needs its layer's activation")
    chan = as_maps(unit_act, info)[:, target.channel]
    if target.y is not None and target.x is not None:
        return chan[:, target.y, target.x]
    return chan.flatten(1).max(dim=1).values


def layer_info(net: nn.Module, layer: str, example: Tensor, vm: object | None = None) -> LayerInfo:
    """A layer's LayerInfo from the VisModel when given one, else from `layer_lookup` (one layer-table forward per
    plain module and input shape)."""
    if vm is not None and hasattr(vm, "info"):
        return vm.info(layer)
    return lookup_layer_info(net, layer, example)
