"""Layer-wise Relevance Propagation through zennit, a maintained library of our field: we choose the composite and
the canonizers (BatchNorm merged into the convolution before it, ResNet's skip connections made explicit) and
call it; we write no LRP rule ourselves.

zennit changes the model while it runs (hooks and merged BatchNorm weights, restored afterwards), so LRP must run
on a model copy no other thread uses (the GUI's job slots and the command line each have their own).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import DeepVisError, ParamError
from ..values import ClassTarget
from .ig import pixels_to_input
from .targets import Target, check_target, coerce_target, output_logits

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1_flat")
DEFAULT_COMPOSITE = "epsilon_plus_flat"


def _zennit():
    try:
        import zennit  # noqa: F401
    except ImportError:
        raise DeepVisError("LRP needs zennit: pip install 'deepvis[explain]' (or pip install zennit)") from None
    from zennit import canonizers, composites, torchvision

    return canonizers, composites, torchvision


def canonizers_for(net: nn.Module) -> list:
    """zennit's canonizers for the architecture: ResNet's, VGG's, else BatchNorm merged in plain Sequentials."""
    canonizers, _, tv = _zennit()
    name = type(net).__name__
    if name == "ResNet":
        return [tv.ResNetCanonizer()]
    if name == "VGG":
        return [tv.VGGCanonizer()]
    return [canonizers.SequentialMergeBatchNorm()]


def make_composite(name: str, net: nn.Module, x: Tensor, vm: object | None = None):
    """The zennit composite `name` with the canonizers for `net`; EpsilonGammaBox gets the input's value bounds
    (a black and a white image in the model's input space)."""
    if name not in COMPOSITES:
        raise ParamError("composite", f"must be one of {', '.join(COMPOSITES)}, not {name!r}")
    _, composites, _ = _zennit()
    cls = composites.COMPOSITES[name]
    if name == "epsilon_gamma_box":
        to_input = pixels_to_input(vm)
        low, high = to_input(torch.zeros_like(x)), to_input(torch.ones_like(x))
        return cls(low=low, high=high, canonizers=canonizers_for(net))
    return cls(canonizers=canonizers_for(net))


def lrp(net: nn.Module, x: Tensor, target: Target | int | None = None, *, composite: str = DEFAULT_COMPOSITE,
        vm: object | None = None) -> Tensor:
    """Relevance of the input pixels for a class (shaped like x). The relevance starts as a one-hot vector at the
    output (zennit's convention), so the map sums to about 1 where the composite conserves relevance."""
    from zennit.attribution import Gradient

    with torch.no_grad():
        logits = output_logits(net(x))
    target = coerce_target(target, logits, "logit")
    if not isinstance(target, ClassTarget):
        raise DeepVisError("LRP explains a class; pick a class, not a unit")
    check_target(target, logits.flatten(1).shape[1], None)
    comp = make_composite(composite, net, x, vm)
    grad_output = torch.zeros_like(logits)
    grad_output[:, target.index] = 1.0
    with torch.enable_grad(), Gradient(model=net, composite=comp) as attributor:
        _, relevance = attributor(x.detach().clone(), grad_output)
    return relevance.detach()
