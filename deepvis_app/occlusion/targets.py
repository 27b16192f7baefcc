"""What an occlusion map scores: a class (`values.ClassTarget`) or a unit (`values.Unit`) of any layer layout.

A unit without a position scores its channel's spatial mean (the whole feature map, or the token grid); with one,
the neuron at (y, x) of the layer's grid. Units are indexed through `layouts.as_maps`, so channels-last maps and
token layers score the same way as channels-first maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor, nn

from ..errors import DeepVisError, ParamError
from ..layouts import as_maps
from ..probe import (
    layer_table,
    output_logits,  # noqa: F401 - engine and api import it from here
    resolve_calls,
    unknown_layer_message,
)
from ..values import ClassTarget, LayerInfo, Unit, check_channel, check_class_index, check_position

Target = Unit | ClassTarget
TargetLike = int | Unit | ClassTarget | tuple | list


def as_target(target: TargetLike) -> Target:
    """`5` -> ClassTarget(5) (probability); `("layer3", 7)` / `("layer3", 7, 2, 3)` -> Unit; Unit and
    ClassTarget as they are."""
    if isinstance(target, Unit | ClassTarget):
        return target
    if isinstance(target, int | np.integer) and not isinstance(target, bool):
        return ClassTarget(int(target))
    if isinstance(target, tuple | list) and target and isinstance(target[0], str):
        layer, *rest = target
        if len(rest) == 1:
            return Unit(layer, int(rest[0]))
        if len(rest) == 3:
            return Unit(layer, int(rest[0]), int(rest[1]), int(rest[2]))
    raise ParamError("target", f"must be a class index, a Unit, a ClassTarget or (layer, channel[, y, x]); "
                               f"got {target!r}")


def target_label(target: Target) -> str:
    """"class 5 (prob)", "layer3 unit 7", "layer3 unit 7 at (y=2, x=3)": how reports name the target."""
    if isinstance(target, ClassTarget):
        return str(target)
    where = f" at (y={target.y}, x={target.x})" if target.y is not None else ""
    return f"{target.layer} unit {target.channel}{where}"


def unit_info(vm: Any, net: nn.Module, x: Tensor, unit: Unit) -> LayerInfo:
    """The LayerInfo of `unit`'s layer for input `x` (the VisModel's own when `vm` is one and `x` has its input
    size, else measured with `probe.layer_table`), after checking the channel and position against it."""
    resolve_calls(net, [unit.layer], x)  # unknown layer: one line listing the valid ones
    size = getattr(vm, "input_size", None)
    if hasattr(vm, "info") and tuple(x.shape[-2:]) == (size, size):
        info = vm.info(unit.layer)
    else:
        info = find_info(layer_table(net, x), unit.layer)
    check_channel(info, unit.channel)
    check_position(info, unit.y, unit.x)
    return info


def find_info(table: list[LayerInfo], layer: str) -> LayerInfo:
    """`layer`'s entry of a layer table; a bare name of a reused module means its last call."""
    calls = [i for i in table if i.name == layer or i.name.partition("@")[0] == layer]
    exact = [i for i in calls if i.name == layer]
    if exact:
        return exact[0]
    if calls:
        return calls[-1].with_name(layer)
    raise DeepVisError(unknown_layer_message(layer, [i.name for i in table]))


def check_class(target: Target, out: Tensor) -> None:
    """One line when a class target is not one of the `out` logits' classes."""
    if isinstance(target, ClassTarget):
        check_class_index(target.index, out.flatten(1).shape[1])


def score(out: Tensor, target: Target, info: LayerInfo | None) -> tuple[Tensor, Tensor | None]:
    """Per image of the batch `out` (logits, or the unit's layer output): the target's score, and the winning
    class for class targets (else None)."""
    if isinstance(target, ClassTarget):
        logits = out.flatten(1).float()
        labels = logits.argmax(dim=1)
        vals = logits.softmax(dim=1)[:, target.index] if target.score == "prob" else logits[:, target.index]
        return vals, labels
    assert info is not None
    a = as_maps(out, info)[:, target.channel].float()
    if target.y is not None:
        return a[:, target.y, target.x], None
    return a.flatten(1).mean(dim=1), None
