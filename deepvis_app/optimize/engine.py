"""The optimization loop, as a step iterator the GUI can drive from a worker thread.

`iter_optimize` yields a `Progress` after every step (or every `yield_every` steps) with the current images
as uint8, checks `abort` between steps and simply stops when it is set (nothing is cached then), and
finishes with a `Progress(done=True, result=OptimizeResult)`. `optimize` runs it to the end. A cache hit
yields the final progress at once without a single forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..abort import Abort, aborted
from ..errors import DeepVisError, ParamError
from ..layer_lookup import layer_info
from ..probe import Capture
from ..values import LayerInfo
from . import cache as result_cache
from . import regularizers as R
from .objectives import Objective, Outputs
from .objectives import diversity as diversity_objective
from .param import PixelImage, make_param
from .presets import Preset, get_preset
from .transforms import get_transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

class Cancelled(Exception):
    """`optimize()` was aborted before the last step (not a user error: the caller asked for it)."""


@dataclass
class OptimizeResult:
    """`image`: the best image of the batch (uint8 HxWx3); `images`: all of them [N,H,W,3]; `value`: the
    objective of `image` as saved (8-bit, untransformed); `values`: same per image; `history`: batch-mean
    objective after each step (under the random transforms); `cached`: came from disk. `objective` is the
    objective's key, `value_of` says in words what `value` measures (e.g. "pre-clip value of L channel 5 (ReLU6
    cap 6)"); for a pre-clip objective `clipped_value(s)` are the same images' values after the clip."""

    image: np.ndarray
    images: np.ndarray
    value: float
    values: list[float]
    history: list[float]
    objective: str
    settings: dict[str, Any]
    best: int = 0
    cached: bool = False
    value_of: str = ""
    clipped_value: float | None = None
    clipped_values: list[float] | None = None

    @property
    def pre_clip(self) -> bool:
        """`value` was read before a capped rectifier's clip (it may exceed the cap)."""
        return self.clipped_value is not None


@dataclass
class Progress:
    step: int
    steps: int
    value: float
    images: np.ndarray | None
    done: bool = False
    result: OptimizeResult | None = field(default=None, repr=False)

    @property
    def image(self) -> np.ndarray | None:
        if self.result is not None:
            return self.result.image
        return None if self.images is None else self.images[0]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N,3,H,W] in [0,1] -> [N,H,W,3] uint8 (what a PNG holds)."""
    return (img.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Forward:
    """Runs the net capturing `layers` (`probe.Capture`) and returns `Outputs` with their `infos`. When nothing
    needs the network's output, the forward stops once every layer is captured, so optimizing an early layer
    does not pay for the rest of the network; which call of a reused module a bare name means is resolved by the
    probe, once, from the first input. Only forwards of the thread that makes the first call are touched.

    >>> with Forward(net, ["layer2"], need_logits=False) as forward:
    ...     out = forward(x)            # out.layer("layer2"), out.maps("layer2"); out.logits is None
    """

    def __init__(self, net: nn.Module, layers: Sequence[str], need_logits: bool,
                 infos: dict[str, LayerInfo] | None = None, inputs: Sequence[str] = ()) -> None:
        self.net = net
        self.layers = list(dict.fromkeys(layers))
        self.need_logits = need_logits or not self.layers
        self.infos = dict(infos or {})
        missing = [layer for layer in inputs if layer not in self.layers]
        if missing:  # the forward may stop after the captured layers: an input's layer must be one of them
            raise DeepVisError(f"the input of layer {missing[0]!r} is read, but that layer is not captured")
        self.inputs = list(dict.fromkeys(inputs))  # layers whose input (pre-clip value) is read: `Outputs.pre`
        Capture(net, self.layers, inputs=self.inputs)  # validates the names now: one line listing the valid layers
        self._capture: Capture | None = None

    def __enter__(self) -> Forward:
        if self.need_logits:  # the whole net runs: a bare name is captured at every call, the last one wins
            self._capture = Capture(self.net, self.layers, inputs=self.inputs).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._capture is not None:
            self._capture.__exit__(*exc)
            self._capture = None

    def __call__(self, x: torch.Tensor) -> Outputs:
        if self._capture is None:  # stopping needs the exact calls: resolved from this first input
            self._capture = Capture(self.net, self.layers, example=x[:1].detach(), stop=True,
                                    inputs=self.inputs).__enter__()
        logits = self._capture.run(x)
        if isinstance(logits, tuple | list):  # e.g. aux-logit nets: the main output comes first
            logits = logits[0]
        if not isinstance(logits, torch.Tensor):
            logits = None
        return Outputs(acts=dict(self._capture.activations), logits=logits, infos=self.infos,
                       pre=dict(self._capture.inputs))


def read_values(unread: list[torch.Tensor]) -> list[float]:
    """The 0-dim tensors in `unread` as floats, with one host copy, emptying the list. The loop keeps each step's
    objective on the device and reads them only when a progress is shown: a `float()` per step would make the host
    wait for the GPU every step instead of queueing the next one."""
    if not unread:
        return []
    out = torch.stack(unread).float().cpu().tolist()
    unread.clear()
    return out


def is_vis_model(net: Any) -> bool:
    """A VisModel (duck-typed: importing zoo here would be a cycle)."""
    return hasattr(net, "net") and hasattr(net, "spec")


def layer_infos(model: Any, net: nn.Module, layers: Sequence[str], example: torch.Tensor) -> dict[str, LayerInfo]:
    """Each layer's LayerInfo: the VisModel's own, or for a plain module measured by the probe on `example`."""
    if is_vis_model(model):
        return {layer: model.info(layer) for layer in dict.fromkeys(layers)}
    return {layer: layer_info(net, layer, example) for layer in dict.fromkeys(layers)}


def unpack_model(net: Any, mean: Sequence[float] | None, std: Sequence[float] | None,
                 device: torch.device | str | None, cache_id: str | None):
    """Accept a VisModel or a plain nn.Module; return (module, mean, std, device, cache id)."""
    if is_vis_model(net):
        vm = net
        mean = mean if mean is not None else vm.spec.mean
        std = std if std is not None else vm.spec.std
        device = device if device is not None else vm.device
        if cache_id is None:
            cache_id = f"{vm.spec.name}|{vm.spec.builder}|{result_cache.weights_id(vm.weights)}"
        net = vm.net
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a VisModel or torch.nn.Module, got {type(net).__name__}")
    if device is None:
        p = next(iter(net.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    return net, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD), torch.device(device), cache_id


def _prepare(net: Any, objective: Objective, *, preset: str | Preset, steps: int | None, size: int | None,
             seed: int, batch: int, diversity: float, diversity_layer: str | None,
             mean: Sequence[float] | None, std: Sequence[float] | None, device: torch.device | str | None,
             use_cache: bool, cache_id: str | None, cache_dir: str | Path | None, overrides: dict[str, Any]):
    """Validate the arguments, bind the objective to the net (pre-clip values of capped rectifiers) and derive
    the settings and the cache key, shared by `iter_optimize` and `cached_result` so a lookup finds exactly what
    a run stores."""
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    net, mean, std, dev, cache_id = unpack_model(net, mean, std, device, cache_id)
    objective = objective.bind(net)
    p = get_preset(preset, steps=steps, size=size, **overrides)
    if p.steps < 0:
        raise ParamError("steps", f"must be >= 0, got {p.steps}")
    if p.size < 8:
        raise ParamError("size", f"must be >= 8, got {p.size}")
    if batch < 1:
        raise ParamError("batch", f"must be >= 1, got {batch}")
    div_layer = None
    if diversity:
        div_layer = diversity_layer or (objective.layers[0] if objective.layers else None)
        if div_layer is None:
            raise ParamError("diversity_layer", "is needed for diversity with a class objective (it has no layer)")
    settings = dict(p.settings_dict(), seed=seed, batch=batch, diversity=diversity, diversity_layer=div_layer,
                    mean=list(mean), std=list(std))
    key = None
    cdir = Path(cache_dir).expanduser() if cache_dir is not None else None
    if use_cache and cache_id is not None:
        key = result_cache.make_key(cache_id, objective.key, settings)
    return net, objective, mean, std, dev, p, settings, key, cdir


def _load_result(key: str, objective: Objective, settings: dict[str, Any],
                 cache_dir: Path | None) -> OptimizeResult | None:
    hit = result_cache.load(key, cache_dir)
    if hit is None:
        return None
    images, meta = hit
    best = int(meta["best"])
    clipped = meta.get("clipped_values") if objective.clipped is not None else None
    return OptimizeResult(image=images[best], images=images, value=float(meta["value"]),
                          values=list(meta["values"]), history=list(meta["history"]),
                          objective=objective.key, settings=settings, best=best, cached=True,
                          value_of=objective.title, clipped_value=None if clipped is None else float(clipped[best]),
                          clipped_values=None if clipped is None else [float(v) for v in clipped])


def cached(net: Any, objective: Objective, *, preset: str | Preset = "default", steps: int | None = None,
           size: int | None = None, seed: int = 0, batch: int = 1, diversity: float = 0.0,
           diversity_layer: str | None = None, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None, cache_id: str | None = None,
           cache_dir: str | Path | None = None, **overrides: Any) -> OptimizeResult | None:
    """The cached `OptimizeResult` that `iter_optimize` with the same arguments would return, or None.
    Never runs the network (only reads the model's name/spec/weights id), so a GUI can call it per click."""
    _n, objective, _m, _s, _d, _p, settings, key, cdir = _prepare(
        net, objective, preset=preset, steps=steps, size=size, seed=seed, batch=batch, diversity=diversity,
        diversity_layer=diversity_layer, mean=mean, std=std, device="cpu", use_cache=True,
        cache_id=cache_id, cache_dir=cache_dir, overrides=overrides)
    return None if key is None else _load_result(key, objective, settings, cdir)


def cached_result(net: Any, objective: Objective, **kwargs: Any) -> np.ndarray | None:
    """The cached best image (uint8 HxWx3) for these `iter_optimize` arguments, or None; no forward pass."""
    res = cached(net, objective, **kwargs)
    return None if res is None else res.image


def iter_optimize(net: Any, objective: Objective, *, preset: str | Preset = "default", steps: int | None = None,
                  size: int | None = None, seed: int = 0, batch: int = 1, diversity: float = 0.0,
                  diversity_layer: str | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, device: torch.device | str | None = None,
                  abort: Abort = None, yield_every: int = 1, use_cache: bool = True,
                  cache_id: str | None = None, cache_dir: str | Path | None = None,
                  **overrides: Any) -> Iterator[Progress]:
    """Optimize `batch` images to maximize `objective` on `net`, yielding progress as it goes.

    net: a VisModel (mean/std/device/cache id taken from it) or an eval-mode nn.Module taking normalized
    input `(img - mean) / std` with img RGB in [0, 1] (mean/std in 0..1 units, ImageNet's by default).
    preset + overrides: see `presets.Preset`; `steps`/`size` override the preset's. batch > 1: several
    random starts (the result's `image` is the best); with `diversity` > 0 they are also pushed apart
    (Lucid's Gram-matrix diversity at `diversity_layer`, default: the objective's first layer).
    abort: callable or threading.Event checked between steps; when set the iterator just ends.
    Caching: on when a cache id is known (always for a VisModel; pass `cache_id` for a plain module) and
    `use_cache`; a hit yields one final progress without running the network.
    Capped rectifiers: the objective is bound to `net` first (`Objective.bind`), so a unit of a ReLU6 layer is
    optimized before its clip unless its objective says `pre_clip=False`; the result's `value_of` states it.
    """
    model = net
    net, objective, mean, std, dev, p, settings, key, cache_dir = _prepare(
        net, objective, preset=preset, steps=steps, size=size, seed=seed, batch=batch, diversity=diversity,
        diversity_layer=diversity_layer, mean=mean, std=std, device=device, use_cache=use_cache,
        cache_id=cache_id, cache_dir=cache_dir, overrides=overrides)
    div_layer = settings["diversity_layer"]
    if key is not None:
        res = _load_result(key, objective, settings, cache_dir)
        if res is not None:
            yield Progress(step=p.steps, steps=p.steps, value=res.value, images=res.images, done=True, result=res)
            return

    gen = torch.Generator().manual_seed(int(seed))
    mean_t = torch.tensor(mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
    param = make_param(p.param, batch, p.size, center=mean_t, std=p.init_std, decorrelate=p.decorrelate,
                       generator=gen, device=dev, fft_decay=p.fft_decay)
    variables = param.parameters()
    transform = get_transforms(p.transforms)
    opt = torch.optim.Adam(variables, lr=p.lr) if p.optimizer == "adam" else None
    if p.optimizer not in ("adam", "sgd"):
        raise ParamError("optimizer", f"must be adam or sgd, not {p.optimizer!r}")
    yosinski = isinstance(param, PixelImage) and not p.decorrelate
    div = diversity_objective(div_layer) if div_layer else None
    layers = list(objective.layers) + ([div_layer] if div_layer else [])
    history: list[float] = []
    unread: list[torch.Tensor] = []  # the steps' batch means not read on the host yet (`read_values`)

    infos = layer_infos(model, net, layers, torch.zeros(1, 3, p.size, p.size, device=dev))
    with torch.enable_grad(), Forward(net, layers, objective.needs_logits, infos, objective.inputs) as forward:
        for step in range(1, p.steps + 1):
            if aborted(abort):
                return
            img = param.image()
            x = transform(img, gen) if p.transforms != "none" else img
            out = forward((x - mean_t) / std_t)
            values = objective(out)
            if values.dim() != 1 or values.shape[0] != batch:
                raise DeepVisError(f"objective {objective.key} gave shape {tuple(values.shape)}, expected ({batch},)")
            total = values
            if div is not None:
                total = total + diversity * div(out)
            if p.l2:
                total = total - p.l2 * R.l2_penalty(img - mean_t)
            if p.tv:
                total = total - p.tv * R.total_variation(img)
            grads = torch.autograd.grad(-total.sum(), variables)
            with torch.no_grad():
                if opt is not None:
                    for v, g in zip(variables, grads, strict=True):
                        v.grad = g
                    opt.step()
                else:
                    for v, g in zip(variables, grads, strict=True):
                        scale = g.abs().reshape(g.shape[0], -1).mean(1).clamp_min(1e-12)
                        v.sub_(p.lr * g / scale.view(-1, *([1] * (g.dim() - 1))))
                param.after_step()
                if yosinski:
                    px = param.pixels
                    R.decay_(px, p.decay)
                    if p.blur_every and p.blur_width > 0 and step % p.blur_every == 0:
                        R.gaussian_blur_(px, p.blur_width)
                    R.clip_small_norm_(px, p.norm_pct)
                    R.clip_small_contribution_(px, -grads[0], p.contrib_pct)
                    param.after_step()
            unread.append(values.detach().mean())
            if step % yield_every == 0 and step < p.steps:
                history.extend(read_values(unread))
                yield Progress(step=step, steps=p.steps, value=history[-1], images=to_uint8(param.image()))
        history.extend(read_values(unread))

        if aborted(abort):
            return
        # Score what will actually be saved: the 8-bit image, untransformed.
        with torch.no_grad():
            images = to_uint8(param.image())
            saved = torch.from_numpy(images).to(dev).permute(0, 3, 1, 2).float() / 255.0
            out = forward((saved - mean_t) / std_t)
            final = objective(out).float().cpu().tolist()
            clipped = None if objective.clipped is None else objective.clipped(out).float().cpu().tolist()
    best = int(np.argmax(final))
    res = OptimizeResult(image=images[best], images=images, value=float(final[best]), values=final,
                         history=history, objective=objective.key, settings=settings, best=best,
                         value_of=objective.title, clipped_value=None if clipped is None else float(clipped[best]),
                         clipped_values=clipped)
    if key is not None:
        meta = {"best": best, "value": res.value, "values": final, "history": history, "objective": objective.key,
                "value_of": objective.title, "settings": settings}
        if clipped is not None:
            meta["clipped_values"] = clipped
        result_cache.save(key, images, meta, cache_dir)
    yield Progress(step=p.steps, steps=p.steps, value=res.value, images=images, done=True, result=res)


def optimize(net: Any, objective: Objective, *, abort: Abort = None,
             on_progress: Callable[[Progress], None] | None = None, **kwargs: Any) -> OptimizeResult:
    """Run `iter_optimize` to the end and return its result; raises `Cancelled` if `abort` fired. Without
    `on_progress` nothing is shown before the end, so no step waits to read its images back (unless `yield_every`
    says otherwise)."""
    every = kwargs.pop("yield_every", 1 if on_progress is not None else 10**9)
    for prog in iter_optimize(net, objective, abort=abort, yield_every=every, **kwargs):
        if on_progress is not None:
            on_progress(prog)
        if prog.done and prog.result is not None:
            return prog.result
    raise Cancelled("optimization was cancelled")
