"""The CAM family on any layer with positions (conv maps, channels-last maps, tokens on a patch grid).

One class per method, built from (net, layer) as Captum's are; each returns a `CamMap`: the map at the layer's
resolution after the method's ReLU (what the papers define), upsampled bilinearly on request. The formulas follow
the papers and pytorch-grad-cam (tests compare with it, max abs diff <= 1e-4 after its own scaling):

- Grad-CAM (Selvaraju 2017): w_c = mean_ij dS/dA_cij; relu(sum_c w_c A_c).
- Grad-CAM++ (Chattopadhay 2018): alpha = g^2 / (2 g^2 + sum_ij(A) g^3), w_c = sum_ij alpha relu(g).
- XGrad-CAM (Fu 2020): w_c = sum_ij g A / (sum_ij A).
- Layer-CAM (Jiang 2021): relu(sum_c relu(g) A) (no spatial pooling of the gradient).
- HiResCAM (Draelos 2020): relu(sum_c g A) (exact for the last conv of a GAP head).
- Score-CAM (Wang 2020): w = softmax_c(S(x * norm(up(A_c)))), batched forwards, gradient-free.
- Eigen-CAM (Muhammad 2020): the activations' first principal component, gradient-free.

A token layer's prefix tokens (class, distillation) are dropped and its patch tokens folded onto their grid (the
reshape recipe pytorch-grad-cam documents for ViTs), because `as_maps` does exactly that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..abort import Abort, aborted
from ..errors import DeepVisError, ParamError
from ..layouts import as_maps
from ..probe import Capture
from ..values import ClassTarget, LayerInfo, Unit
from .targets import Target, check_target, coerce_target, layer_info, output_logits, target_score

EPS = 1e-7


@dataclass(frozen=True)
class CamMap:
    """A CAM at its layer's resolution, [N, h, w], after the method's ReLU; `at(size)` upsamples it."""

    low: Tensor
    target: Target
    method: str
    layer: str

    def at(self, size: tuple[int, int]) -> Tensor:
        """[N, 1, H, W]: bilinear (half-pixel centres) to the input size, the raw map `--out F.npy` writes."""
        return F.interpolate(self.low[:, None], size=size, mode="bilinear", align_corners=False)


class LayerCam:
    """Base of the CAM family: captures `layer` (and the unit's layer for a unit target) in one forward and,
    when the method needs it, the gradient of the target's score w.r.t. the layer's output."""

    name = "cam"
    title = "CAM"
    uses_gradients = True

    def __init__(self, net: nn.Module, layer: str, *, vm: object | None = None) -> None:
        self.net = net
        self.layer = layer
        self.vm = vm

    def attribute(self, x: Tensor, target: Target | int | None = None, *, abort: Abort = None,
                  progress: Callable[[int, int], None] | None = None) -> CamMap:
        """The CAM of `target` (a class index or ClassTarget scored by its logit by default, a Unit, or None for
        the top class) for the images `x` [N, 3, H, W]; the model is left exactly as it was."""
        info = layer_info(self.net, self.layer, x, self.vm)
        if not info.spatial:
            raise DeepVisError(f"{self.title} needs a layer with positions; {self.layer!r} has {info.describe()}")
        unit_info = None
        if isinstance(target, Unit):
            unit_info = layer_info(self.net, target.layer, x, self.vm)
        layers = [self.layer] + ([target.layer] if isinstance(target, Unit) and target.layer != self.layer else [])
        xin = x.detach().clone().requires_grad_(self.uses_gradients)
        with torch.set_grad_enabled(self.uses_gradients), Capture(self.net, layers, example=x) as cap:
            logits = output_logits(cap.run(xin))
        target = coerce_target(target, logits)
        classes = logits.flatten(1).shape[1]
        check_target(target, classes, unit_info)
        act = cap[self.layer]
        maps = as_maps(act, info)
        grads = None
        if self.uses_gradients:
            score = target_score(target, logits, cap.activations.get(getattr(target, "layer", "")), unit_info)
            (grad,) = torch.autograd.grad(score.sum(), act, allow_unused=True)
            grads = as_maps(grad if grad is not None else torch.zeros_like(act), info).detach()
        with torch.no_grad():
            cam = self.combine(maps.detach(), grads, x=x, target=target, abort=abort, progress=progress)
        return CamMap(low=cam.clamp(min=0), target=target, method=self.name, layer=self.layer)

    def combine(self, acts: Tensor, grads: Tensor | None, **context: object) -> Tensor:
        """[N, C, h, w] activations (and gradients) -> [N, h, w] map before the ReLU; default: weighted sum."""
        weights = self.weights(acts, grads, **context)
        return (weights[:, :, None, None] * acts).sum(dim=1)

    def weights(self, acts: Tensor, grads: Tensor | None, **context: object) -> Tensor:
        raise NotImplementedError


class GradCam(LayerCam):
    name, title = "gradcam", "Grad-CAM"

    def weights(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        return grads.mean(dim=(2, 3))


class GradCamPlusPlus(LayerCam):
    name, title = "gradcampp", "Grad-CAM++"

    def weights(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        g2 = grads.pow(2)
        g3 = g2 * grads
        sum_acts = acts.sum(dim=(2, 3))[:, :, None, None]
        alpha = g2 / (2 * g2 + sum_acts * g3 + 1e-6)  # pytorch-grad-cam's eps for this method
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp(min=0) * alpha).sum(dim=(2, 3))


class XGradCam(LayerCam):
    name, title = "xgradcam", "XGrad-CAM"

    def weights(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        sum_acts = acts.sum(dim=(2, 3))[:, :, None, None]
        return (grads * acts / (sum_acts + EPS)).sum(dim=(2, 3))


class LayerCamMethod(LayerCam):
    name, title = "layercam", "Layer-CAM"

    def combine(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        return (grads.clamp(min=0) * acts).sum(dim=1)


class HiResCam(LayerCam):
    name, title = "hirescam", "HiResCAM"

    def combine(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        return (grads * acts).sum(dim=1)


class EigenCam(LayerCam):
    """The first principal component of the layer's activations (per image); its sign follows numpy's SVD, as
    pytorch-grad-cam's does, so the two agree."""

    name, title = "eigencam", "Eigen-CAM"
    uses_gradients = False

    def combine(self, acts: Tensor, grads: Tensor | None, **_: object) -> Tensor:
        out = []
        for a in acts.float().cpu().numpy():
            flat = np.nan_to_num(a).reshape(a.shape[0], -1).T
            flat = flat - flat.mean(axis=0)
            _, _, vt = np.linalg.svd(flat, full_matrices=False)
            out.append((flat @ vt[0]).reshape(a.shape[1:]))
        return torch.from_numpy(np.float32(out)).to(acts.device)


class ScoreCam(LayerCam):
    """Each channel's map, upsampled and scaled to [0, 1], masks the input; the target's score on each masked
    input, softmaxed over the channels, weighs the maps. `batch_size` masked images per forward."""

    name, title = "scorecam", "Score-CAM"
    uses_gradients = False

    def __init__(self, net: nn.Module, layer: str, *, vm: object | None = None, batch_size: int = 32) -> None:
        super().__init__(net, layer, vm=vm)
        if not 1 <= batch_size <= 4096:
            raise ParamError("batch_size", f"must be between 1 and 4096, got {batch_size}")
        self.batch_size = batch_size

    def weights(self, acts: Tensor, grads: Tensor | None, *, x: Tensor, target: Target, abort: Abort = None,
                progress: Callable[[int, int], None] | None = None, **_: object) -> Tensor:
        n, c = acts.shape[:2]
        # align_corners=True: pytorch-grad-cam's UpsamplingBilinear2d.
        up = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)
        flat = up.flatten(2)
        lo, hi = flat.min(dim=2).values[:, :, None, None], flat.max(dim=2).values[:, :, None, None]
        masks = (up - lo) / (hi - lo + 1e-8)
        scores = torch.empty(n, c, device=acts.device)
        done, total = 0, n * c
        unit_layer = [target.layer] if isinstance(target, Unit) else []
        unit_info = layer_info(self.net, target.layer, x, self.vm) if isinstance(target, Unit) else None
        for i in range(n):
            for start in range(0, c, self.batch_size):
                if aborted(abort):
                    raise DeepVisError("cancelled")
                batch = x[i:i + 1].detach() * masks[i, start:start + self.batch_size, None]
                with Capture(self.net, unit_layer, example=x[:1], stop=bool(unit_layer)) as cap:
                    out = cap.run(batch)
                logits = None if out is None else output_logits(out)
                scores[i, start:start + batch.shape[0]] = target_score(target, logits, cap.activations.get(
                    getattr(target, "layer", "")), unit_info)
                done += batch.shape[0]
                if progress is not None:
                    progress(done, total)
        return scores.softmax(dim=1)


CAM_METHODS: dict[str, type[LayerCam]] = {cls.name: cls for cls in (
    GradCam, GradCamPlusPlus, XGradCam, LayerCamMethod, HiResCam, ScoreCam, EigenCam)}


def cam(net: nn.Module, x: Tensor, layer: str, target: Target | int | None = None, method: str = "gradcam", *,
        vm: object | None = None, **options: object) -> CamMap:
    """One call: `cam(net, x, "layer4", target=281, method="gradcampp")`."""
    try:
        cls = CAM_METHODS[method]
    except KeyError:
        raise ParamError("method", f"must be one of {', '.join(CAM_METHODS)}, not {method!r}") from None
    return cls(net, layer, vm=vm, **options).attribute(x, target)


__all__ = ["CAM_METHODS", "CamMap", "ClassTarget", "EigenCam", "GradCam", "GradCamPlusPlus", "HiResCam",
           "LayerCam", "LayerCamMethod", "LayerInfo", "ScoreCam", "XGradCam", "cam"]
