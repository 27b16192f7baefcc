"""One-call attribution for plain modules: `attribute(net, x, layer, unit, method)`, as Captum offers it.

A unit may be given the short ways a caller has at hand (a channel, (channel, y, x), a `values.Unit`; a class
index for the logit / prob objectives). The layer's layout comes from `layer_lookup` (one layer table per net and
input shape, kept while the net lives), so channels-last and token layers are explained like CNN maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral

import torch
from torch import Tensor, nn

from ..errors import DeepVisError, ParamError
from ..layer_lookup import layer_info
from ..probe import Capture, output_logits
from ..values import CLASS_SCORES, ClassTarget, Unit
from .context import AttributionContext, Explanation
from .objectives import OBJECTIVES, UNIT_OBJECTIVES, Target

UnitLike = Unit | ClassTarget | int | Sequence[int]


def _target(layer: str | None, unit: UnitLike, objective: str) -> Target:
    """The unit or class target `unit` means, given the layer and objective it came with."""
    if isinstance(unit, ClassTarget):
        return unit
    if objective in CLASS_SCORES:
        index = unit if isinstance(unit, Integral) else None
        if not isinstance(unit, Integral | Unit) and len(unit) == 1:
            index = unit[0]
        if not isinstance(index, Integral):
            raise DeepVisError(f"objective {objective!r} takes a class index, got {unit!r}")
        return ClassTarget(int(index), objective)
    if objective not in UNIT_OBJECTIVES:
        raise ParamError("objective", f"must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if isinstance(unit, Unit):
        if layer is not None and unit.layer != layer:
            raise ParamError("unit", f"{unit} is not on layer {layer!r}")
        return unit
    if layer is None:
        raise DeepVisError(f"objective {objective!r} needs a layer")
    if isinstance(unit, Integral):
        return Unit(layer, int(unit))
    parts = [int(v) for v in unit]
    if len(parts) == 1:
        return Unit(layer, parts[0])
    if len(parts) == 3:
        return Unit(layer, parts[0], parts[1], parts[2])
    raise DeepVisError(f"a unit is a channel or (channel, y, x), got {tuple(unit)!r}")


def explain_unit(net: nn.Module, x: Tensor, layer: str | None, unit: UnitLike,
                 methods: Iterable[str] = ("gradient", "deconv", "guided"), *, objective: str = "neuron",
                 cam_layer: str | None = None) -> Explanation:
    """One forward of `net` on `x` (not modified) plus the partial backwards `methods` need.

    layer: a Probe layer name (`name` or `name@k`); may be None for `logit`/`prob` objectives or a `Unit`.
    cam_layer: the Grad-CAM layer (default: `layer`; for class objectives without a layer, required for Grad-CAM).
    """
    target = _target(layer, unit, objective)
    if isinstance(target, Unit):
        layer = target.layer
    methods = tuple(methods)
    wants_cam = bool({"gradcam", "guided_gradcam"} & set(methods))
    cam = cam_layer or layer
    if wants_cam and cam is None:
        raise DeepVisError("Grad-CAM of a class needs a layer: pass cam_layer (e.g. the last conv block)")
    layers = [name for name in dict.fromkeys([layer, cam if wants_cam else None]) if name]
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), AttributionContext(net) as ac, Capture(net, layers) as cap:
        out = cap.run(xin)
    if isinstance(target, ClassTarget):
        act, info, objective = output_logits(out), None, "neuron"
    else:
        act, info = cap[target.layer], layer_info(net, target.layer, xin, missing_ok=True)
    cam_act = cap[cam] if wants_cam and cam is not None else None
    cam_info = layer_info(net, cam, xin, missing_ok=True) if cam_act is not None and cam is not None else None
    return ac.explain(xin, act, target, methods, objective=objective, info=info, cam_activation=cam_act,
                      cam_info=cam_info)


def attribute(net: nn.Module, x: Tensor, layer: str | None = None, unit: UnitLike = 0, method: str = "guided", *,
              objective: str = "neuron", cam_layer: str | None = None) -> Tensor:
    """Attribution of one unit of `net` w.r.t. the input `x` by `method` (see METHODS).

    >>> attribute(net, x, layer="layer3", unit=(5, 3, 4), method="guided")   # Tensor shaped like x

    unit: channel `c` (neuron at the channel's argmax, or the whole channel / seed with `objective`),
    (c, y, x) or a `values.Unit`; for objective="logit"/"prob" the class index (layer may be None). Saliency and
    gradcam return [N, 1, H, W]; the other methods return a tensor shaped like x. The model is left exactly as it
    was. Channels-last and token layers work: their layout comes from `probe.layer_table`.
    """
    return explain_unit(net, x, layer, unit, (method,), objective=objective, cam_layer=cam_layer)[method]
