"""Input-space gradient methods of a target (class or unit): the gradient, guided backprop, deconvnet and input x
gradient, each one backward through the live rules of `attribution.AttributionContext`.

They share one signature, `method(net, x, target, *, vm=None) -> Tensor shaped like x`, so the wrappers
(SmoothGrad, VarGrad, Integrated Gradients) can take any of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..attribution import AttributionContext
from ..probe import Capture
from ..values import ClassTarget, Unit
from .targets import Target, check_target, coerce_target, layer_info, output_logits, target_score

GradientMethod = Callable[..., Tensor]


def target_gradient(net: nn.Module, x: Tensor, target: Target | int | None, *, rule: str = "gradient",
                    vm: object | None = None, score: str = "logit") -> tuple[Tensor, Tensor]:
    """(d score / d x under `rule`, the score per image) for the images `x`; the model is left as it was.

    For a unit target the forward stops after the unit's layer (the rest of the net cannot change it)."""
    unit_info = layer_info(net, target.layer, x, vm) if isinstance(target, Unit) else None
    xin = x.detach().clone().requires_grad_(True)
    layers = [target.layer] if isinstance(target, Unit) else []
    with torch.enable_grad(), AttributionContext(net) as ac, Capture(net, layers, example=x,
                                                                     stop=bool(layers)) as cap:
        out = cap.run(xin)
        logits = None if out is None else output_logits(out)
        target = coerce_target(target, logits, score)
        check_target(target, None if logits is None else logits.flatten(1).shape[1], unit_info)
        scores = target_score(target, logits, cap.activations.get(getattr(target, "layer", "")), unit_info)
        (grad,) = ac.grad(scores.sum(), xin, rule, retain_graph=False)
    if grad is None:
        grad = torch.zeros_like(xin)
    return grad.detach(), scores.detach()


def gradient(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None) -> Tensor:
    return target_gradient(net, x, target, vm=vm)[0]


def guided(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None) -> Tensor:
    return target_gradient(net, x, target, rule="guided", vm=vm)[0]


def deconv(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None) -> Tensor:
    return target_gradient(net, x, target, rule="deconv", vm=vm)[0]


def input_x_gradient(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None) -> Tensor:
    return x.detach() * target_gradient(net, x, target, vm=vm)[0]


GRADIENT_METHODS: dict[str, GradientMethod] = {"gradient": gradient, "guided": guided, "deconv": deconv,
                                               "input_x_gradient": input_x_gradient}

__all__ = ["GRADIENT_METHODS", "ClassTarget", "Unit", "deconv", "gradient", "guided", "input_x_gradient",
           "target_gradient"]
