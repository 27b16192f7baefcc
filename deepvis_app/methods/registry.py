"""Every attribution method by name, behind one signature: `explain(net, x, method, target, *, layer, vm, ...)`.

Names (as the command line and the window spell them): the CAM family `gradcam`, `gradcampp`, `xgradcam`,
`layercam`, `hirescam`, `scorecam`, `eigencam` (need a layer); input-space `gradient`, `guided`, `deconv`,
`input_x_gradient`, `ig`, `lrp`; and the wrappers `smoothgrad:<m>` / `vargrad:<m>` around `gradient`, `guided`,
`deconv`, `input_x_gradient` or `ig`. Each gives a `MethodMap`: the raw values (CAMs [N, 1, H, W] at input resolution
after their ReLU; the others shaped like x) and a 2-D `heat` [N, H, W] for display and the faithfulness metrics
(signed methods summed over colour channels, gradient magnitudes as their per-pixel maximum, Simonyan's saliency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from ..abort import Abort
from ..errors import DeepVisError, ParamError
from .cam import CAM_METHODS
from .gradients import GRADIENT_METHODS
from .ig import IntegratedGradients
from .smooth import KINDS, smooth
from .targets import Target

SIGNED = ("input_x_gradient", "ig", "lrp")  # heat = channel sum (relevance adds up); others: max |value|
WRAPPABLE = ("gradient", "guided", "deconv", "input_x_gradient", "ig")


@dataclass(frozen=True)
class MethodMap:
    method: str
    values: Tensor
    heat: Tensor  # [N, H, W]
    extra: dict = field(default_factory=dict)  # e.g. IG's completeness gap


def method_names() -> list[str]:
    """Every name `explain` takes (wrappers spelled with their wrapped method)."""
    base = [*CAM_METHODS, *GRADIENT_METHODS, "ig", "lrp"]
    return base + [f"{kind}:{m}" for kind in KINDS for m in WRAPPABLE]


def check_method(method: str, layer: str | None) -> None:
    """One line for an unknown method name, or a CAM without a layer (before any model work)."""
    if method not in method_names():
        raise ParamError("method", f"must be one of {', '.join(method_names())}; got {method!r}")
    if method in CAM_METHODS and not layer:
        raise ParamError("layer", f"is needed by {method} (a layer with positions, e.g. the last conv block)")


def heat_of(method: str, values: Tensor) -> Tensor:
    """[N, H, W]: a CAM as it is; relevance-like maps (IG, input x gradient, LRP, VarGrad) summed over colour
    channels; gradient magnitudes as their per-pixel maximum."""
    if values.shape[1] == 1:
        return values[:, 0]
    kind, _, inner = method.partition(":")
    signed = kind == "vargrad" or (inner or kind) in SIGNED
    return values.sum(dim=1) if signed else values.abs().amax(dim=1)


def explain(net: nn.Module, x: Tensor, method: str, target: Target | int | None = None, *, layer: str | None = None,
            vm: object | None = None, steps: int = 32, baseline: str = "black", samples: int = 25,
            noise: float = 0.15, composite: str = "epsilon_plus_flat", batch_size: int = 32, seed: int = 0,
            abort: Abort = None, progress: Callable[[int, int], None] | None = None) -> MethodMap:
    """The map of `method` for `target` (class index / ClassTarget / Unit / None: the top class) on images `x`."""
    check_method(method, layer)
    extra: dict = {}
    if method in CAM_METHODS:
        options = {"batch_size": batch_size} if method == "scorecam" else {}
        cam = CAM_METHODS[method](net, layer, vm=vm, **options).attribute(x, target, abort=abort, progress=progress)
        values = cam.at(tuple(x.shape[-2:]))
    elif method == "ig":
        result = IntegratedGradients(net, vm=vm, baseline=baseline, steps=steps, seed=seed).attribute(
            x, target, abort=abort, progress=progress)
        values = result.attribution
        extra = {"completeness_gap": result.gap.tolist(), "score": result.score.tolist(),
                 "baseline_score": result.baseline_score.tolist()}
    elif method == "lrp":
        from .lrp import lrp

        values = lrp(net, x, target, composite=composite, vm=vm)
    elif ":" in method:
        kind, inner = method.split(":", 1)
        wrapped = _input_method(inner, steps=steps, baseline=baseline, seed=seed)
        values = smooth(wrapped, net, x, target, kind=kind, samples=samples, noise=noise, seed=seed, vm=vm,
                        abort=abort, progress=progress)
    else:
        values = GRADIENT_METHODS[method](net, x, target, vm=vm)
    if not values.isfinite().all():
        raise DeepVisError(f"{method} gave non-finite values on this input")
    return MethodMap(method, values, heat_of(method, values), extra)


def _input_method(name: str, *, steps: int, baseline: str, seed: int) -> Callable[..., Tensor]:
    if name == "ig":
        def run(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None) -> Tensor:
            return IntegratedGradients(net, vm=vm, baseline=baseline, steps=steps, seed=seed).attribute(
                x, target).attribution

        return run
    return GRADIENT_METHODS[name]
