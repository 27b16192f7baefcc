"""Running a network with interventions: forward hooks that change chosen channels of chosen layer calls.

`Intervened` is built once for a list of interventions (layer calls resolved, channels checked, index tensors
made) and entered around each forward -- the live worker's per-frame cost is registering one hook per module
and the clone + index writes of the intervened layers' outputs (see benchmarks/interventions.py):

    iv = Intervened.for_model(vm, [Intervention.parse("_blocks.10:3,17:zero")])
    with iv:
        logits = vm.net(x)           # predictions, deeper layers, gradients: all of the intervened network

The hooks run before any other hook on the same module (so a `probe.Capture` of the intervened layer sees the
intervened values, as the live grid should), only in the forwards of the thread that entered the context, and
are removed on exit, also after an exception. A layer's channels are indexed through `layouts.as_maps`, so
channels-first maps, channels-last maps (ConvNeXt, Swin) and token grids (ViT; extra tokens untouched) behave
the same. The layer's output is cloned before it is changed, so autograd and inplace modules (ResNet's shared
`ReLU(inplace=True)`) see an ordinary new tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import DeepVisError
from ..layouts import as_maps
from ..probe import Capture, layer_table
from ..values import LayerInfo, check_channel
from .spec import Intervention, active

OutputFn = Callable[[Tensor], Tensor | None]
InfoLike = Callable[[str], LayerInfo] | Sequence[LayerInfo] | None


def layer_lookup(net: nn.Module, info: InfoLike, example: Tensor | None) -> Callable[[str], LayerInfo]:
    """A function layer -> LayerInfo: `info` itself (e.g. `VisModel.info`), a lookup in a layer table, or one
    measured with `probe.layer_table(net, example)`."""
    if callable(info):
        return info
    if info is None:
        if example is None:
            raise DeepVisError("interventions on a plain network need an example input to find its layer layouts")
        info = layer_table(net, example)
    from ..occlusion.targets import find_info

    table = list(info)
    return lambda layer: find_info(table, layer)


def writable_maps(output: Tensor, info: LayerInfo) -> tuple[Tensor, Tensor]:
    """(a copy of `output`, its channels-first view N x C x H x W): writing into the view changes the copy."""
    out = output.clone()
    maps = as_maps(out, info)
    if maps.untyped_storage().data_ptr() != out.untyped_storage().data_ptr():  # a layout as_maps had to copy
        out = output.clone(memory_format=torch.contiguous_format)
        maps = as_maps(out, info)
    return out, maps


class RecentMeans:
    """Each intervened layer's per-position mean over the last `frames` forwards (exact mean for the first ones,
    then an exponential moving average with weight 1/frames): the live window's "mean" mode. The intervention
    hooks update it with the layer's own values before changing them, so no extra capture is needed."""

    def __init__(self, frames: int = 30) -> None:
        if frames < 1:
            raise DeepVisError(f"frames must be at least 1, got {frames}")
        self.frames = frames
        self._mean: dict[str, Tensor] = {}
        self._count: dict[str, int] = {}

    def observe(self, layer: str, maps: Tensor) -> None:
        """Add a batch of channels-first maps (N x C x H x W) of `layer`."""
        frame = maps.detach().float().mean(dim=0)
        n = self._count.get(layer, 0) + 1
        self._count[layer] = n
        old = self._mean.get(layer)
        if old is None or old.shape != frame.shape:
            self._mean[layer], self._count[layer] = frame, 1
        else:
            self._mean[layer] = old + (frame - old) / min(n, self.frames)

    def __getitem__(self, layer: str) -> Tensor:
        return self._mean[layer]

    def __contains__(self, layer: object) -> bool:
        return layer in self._mean

    def reset(self) -> None:
        self._mean.clear()
        self._count.clear()


MeansLike = Mapping[str, Tensor] | RecentMeans


def check_mean(mean: Tensor, info: LayerInfo, layer: str) -> Tensor:
    """A mean for `layer` as C x H x W (or C x 1 x 1) matching the layer's channels and grid."""
    if mean.dim() == 1:
        mean = mean.reshape(-1, 1, 1)
    grid = info.grid or (1, 1)
    ok_space = tuple(mean.shape[1:]) in ((1, 1), tuple(grid)) if mean.dim() == 3 else False
    if mean.shape[0] != info.channels or not ok_space:
        raise DeepVisError(f"the mean for layer {layer!r} has shape {tuple(mean.shape)}; expected "
                           f"{info.channels} x {grid[0]} x {grid[1]} or {info.channels} values")
    return mean


class Intervened:
    """A list of interventions ready to apply to forwards of `net` (a context manager; enter once per forward or
    around several). Disabled interventions are skipped; several on one layer call apply in list order.

    `info`: layer -> LayerInfo (`VisModel.info`), a layer table, or None (measured from `example`). `example`: an
    input, needed for bare names of reused modules (their last call) and when `info` is None. `means`: for `mean`
    interventions, per layer a tensor C x H x W or C (a per-position or per-channel mean, channels-first), or a
    `RecentMeans` the hooks keep up to date (the first forward then leaves the layer unchanged: its mean is
    itself)."""

    def __init__(self, net: nn.Module, interventions: Iterable[Intervention], *, info: InfoLike = None,
                 example: Tensor | None = None, means: MeansLike | None = None) -> None:
        self.net = net
        self.interventions = active(interventions)
        self.means = means
        lookup = layer_lookup(net, info, example) if self.interventions else None
        layers = list(dict.fromkeys(iv.layer for iv in self.interventions))
        self._infos: dict[str, LayerInfo] = {}
        for layer in layers:
            assert lookup is not None
            self._infos[layer] = lookup(layer)
        for iv in self.interventions:
            info_ = self._infos[iv.layer]
            for c in (iv.channels[0], iv.channels[-1]):
                check_channel(info_, c)
            if iv.kind == "mean":
                if means is None:
                    raise DeepVisError(f"intervention {iv}: mode mean needs the unit's mean (none was given)")
                if not isinstance(means, RecentMeans):
                    if iv.layer not in means:
                        raise DeepVisError(f"intervention {iv}: no mean was given for layer {iv.layer!r}")
                    check_mean(means[iv.layer], info_, iv.layer)
        self._index: dict[tuple[int, torch.device], Tensor] = {}
        fns = {layer: self._layer_fn(layer) for layer in layers}
        self._hooks = Capture(net, modify=fns, example=example) if fns else None  # hooks first: probes see it

    @classmethod
    def for_model(cls, vm: Any, interventions: Iterable[Intervention], *, net: nn.Module | None = None,
                  means: MeansLike | None = None) -> Intervened:
        """Interventions on a `VisModel` (or on `net`, a copy of its network such as the live fast copy)."""
        example = torch.zeros(1, 3, vm.input_size, vm.input_size, device=vm.device)
        return cls(net if net is not None else vm.net, interventions, info=vm.info, example=example, means=means)

    def __bool__(self) -> bool:
        return bool(self.interventions)

    def __enter__(self) -> Intervened:
        if self._hooks is not None:
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hooks is not None:
            self._hooks.remove()

    def _channels(self, iv: Intervention, device: torch.device) -> Tensor:
        key = (id(iv), device)
        idx = self._index.get(key)
        if idx is None:
            idx = self._index[key] = torch.tensor(iv.channels, dtype=torch.long, device=device)
        return idx

    def _mean(self, layer: str, like: Tensor) -> Tensor:
        assert self.means is not None
        mean = check_mean(self.means[layer], self._infos[layer], layer)
        return mean.to(device=like.device, dtype=like.dtype)

    def _layer_fn(self, layer: str) -> OutputFn:
        info = self._infos[layer]
        ops = [iv for iv in self.interventions if iv.layer == layer]
        tracks = isinstance(self.means, RecentMeans) and any(iv.kind == "mean" for iv in ops)

        def fn(output: Tensor) -> Tensor:
            if tracks:
                assert isinstance(self.means, RecentMeans)
                self.means.observe(layer, as_maps(output, info))
            out, maps = writable_maps(output, info)
            for iv in ops:
                idx = self._channels(iv, out.device)
                kind, value = iv.kind, iv.value
                if kind == "zero":
                    maps[:, idx] = 0
                elif kind == "clamp":
                    maps[:, idx] = value
                elif kind == "scale":
                    maps[:, idx] = maps[:, idx] * value
                else:
                    maps[:, idx] = self._mean(layer, out)[idx]
            return out

        return fn


@torch.no_grad()
def layer_mean(net: nn.Module, inputs: Iterable[Tensor], layer: str, info: LayerInfo, *,
               over_positions: bool = False, example: Tensor | None = None) -> Tensor:
    """The mean of `layer`'s channels-first maps over all images of `inputs` (batches): C x H x W per position, or
    C x 1 x 1 averaged over positions too (`over_positions`) -- the values `mean` interventions put in."""
    total: Tensor | None = None
    count = 0
    for x in inputs:
        with Capture(net, [layer], stop=True, detach=True, example=example if example is not None else x) as cap:
            cap.run(x)
            maps = as_maps(cap[layer], info).float()
        total = maps.sum(dim=0) if total is None else total + maps.sum(dim=0)
        count += maps.shape[0]
    if total is None or count == 0:
        raise DeepVisError("no images to take the mean over")
    mean = total / count
    return mean.mean(dim=(1, 2), keepdim=True) if over_positions else mean
