"""Receptive fields of units, measured from the network itself (no per-architecture tables).

Theoretical RF (`rf_box`, `rf_geometry`): the set of input pixels a unit depends on is the support of its
input gradient when no path is cancelled. We make cancellation impossible without touching the model:
`torch.func.functional_call` runs it with substituted tensors on the CPU, wherever the model lives (only the
CPU promises exact zeros in the gradients the boxes are read from) -- every weight a positive constant
(1/fan_in, so activations stay O(1)), biases 0, BatchNorm statistics identity -- on an all-ones input, with
max pooling computed as average pooling (every window element gets gradient, not just the switch), rectifiers
backpropagating relu(upstream) (deconv rule: saturation cannot cut a path), and the gradient binarized after
every op (no underflow in deep nets). Global-context branches (squeeze-excitation, global pooling: adaptive
pooling to 1x1) are cut, so a conv unit's RF is its convolutional footprint; units with no spatial footprint
left (after global pooling, fully connected) get the whole image.

For a conv-style layer the box is affine in the unit index: top(y) = y * stride + offset, height = size (same
for x). Boxes of units near the border are clipped by the image, so we read the stride from the last two units'
tops (or the first two units' bottoms), the offset from the last unit's top, the size from the first unit's
bottom -- the sides that are not clipped. When the RF is so large that those are clipped too, we probe again
with a larger input S' = S + 2 m T (T = the layer's total stride), which keeps every layer's size modulo its
stride and so every "same"-style padding unchanged. Results are cached per (net, layer, input size).

Layouts: units are read through `layouts.as_maps`, so channels-last maps (ConvNeXt's inner layers, Swin) are
measured like channels-first ones. A token layer's unit sees the whole image (attention mixes every patch into
every token): its geometry is `full` with that reason, and top-k crops of it are whole frames. Pass the layer's
`LayerInfo` (`vm.info(layer)`) where a model is at hand; a plain module's is looked up (`layer_lookup`).

Effective RF (`EffectiveRF`, Luo et al. 2016): mean over frames of |d(centre unit)/d(input)| summed over
colour channels, with the real weights and plain gradients.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from .attribution import AttributionContext
from .errors import DeepVisError
from .layer_lookup import layer_info
from .layouts import as_maps
from .probe import Capture, Stopped
from .values import LayerInfo, Layout

__all__ = ["EffectiveRF", "RFGeometry", "rf_box", "rf_geometry", "rf_is_local"]

_MAX_PROBE = 4096  # largest probe image side; beyond it boxes are reported clipped


@dataclass(frozen=True)
class RFGeometry:
    """Unit (y, x) sees input rows [y*stride_y + offset_y, ... + size_y), columns likewise.

    `full=True`: the unit sees the whole `input_size` image; `reason` says why (a token layer, a vector, no
    spatial footprint left after global pooling), for the viewer to tell the user.
    """

    stride_y: int
    stride_x: int
    offset_y: int
    offset_x: int
    size_y: int
    size_x: int
    full: bool = False
    reason: str = ""

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        top = y * self.stride_y + self.offset_y
        left = x * self.stride_x + self.offset_x
        return top, left, top + self.size_y, left + self.size_x


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, int], RFGeometry]] = weakref.WeakKeyDictionary()


def rf_box(net: nn.Module, layer: str, y: int, x: int, input_size: int,
           info: LayerInfo | None = None) -> tuple[int, int, int, int]:
    """Theoretical receptive field of unit (y, x) of `layer` as (top, left, bottom, right) input pixels.

    bottom/right exclusive; not clipped to the image (may be negative or exceed input_size). Layer names as in
    `Probe` (`name`, `name@k`); `info`: the layer's LayerInfo (looked up when None). Cached per (net, layer,
    input_size).
    """
    geom = rf_geometry(net, layer, input_size, info)
    if geom.full:
        return 0, 0, input_size, input_size
    return geom.box(y, x)


def rf_geometry(net: nn.Module, layer: str, input_size: int, info: LayerInfo | None = None) -> RFGeometry:
    """Stride, offset and size of `layer`'s receptive fields (see the module docstring for the method)."""
    per_net = _CACHE.setdefault(net, {})
    key = (layer, int(input_size))
    if key not in per_net:
        per_net[key] = _measure(net, layer, int(input_size), info)
    return per_net[key]


_LOCAL: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, int], bool]] = weakref.WeakKeyDictionary()


def rf_is_local(net: nn.Module, layer: str, input_size: int, info: LayerInfo | None = None) -> bool:
    """True when a unit of `layer` depends on no input pixel outside its `rf_box` -- no global context
    (squeeze-excitation, global pooling, a mean over the image) on the way -- so its value and its deconv /
    guided / gradient maps can be computed exactly from an input window that contains the box.

    Measured like the RF itself, but with global pooling kept: the centre unit's support must equal its box.
    Layers without a spatial footprint (`full`: vectors, token layers) are not local.
    """
    per_net = _LOCAL.setdefault(net, {})
    key = (layer, int(input_size))
    if key not in per_net:
        geom = rf_geometry(net, layer, input_size, info)
        local = False
        if not geom.full:
            shape, boxes = _probe_boxes(net, layer, int(input_size), lambda s: [(s[1] // 2, s[2] // 2)],
                                        _info(net, layer, int(input_size), info), cut_global=False)
            if len(shape) == 3 and boxes and boxes[0] is not None:
                t, lft, b, r = geom.box(shape[1] // 2, shape[2] // 2)
                s = int(input_size)
                local = boxes[0] == (max(t, 0), max(lft, 0), min(b, s), min(r, s))
        per_net[key] = local
    return per_net[key]


# --------------------------------------------------------------------------------------------------------------


class _SupportMode(TorchFunctionMode):
    """Max pooling -> average pooling, global pooling cut (unless cut_global=False), gradient binarized."""

    def __init__(self, cut_global: bool = True) -> None:
        super().__init__()
        self.cut_global = cut_global

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.max_pool2d or func is torch.max_pool2d:
            out = self._avg_instead(args, kwargs)
            if out is not None:
                return self._binarize(out)
        if func in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            size = args[1] if len(args) > 1 else kwargs.get("output_size")
            sizes = (size, size) if not isinstance(size, tuple | list) else tuple(size)
            x = args[0]
            if self.cut_global and all(s in (1, None) for s in sizes):
                return F.adaptive_avg_pool2d(x.detach(), size)  # global context: not part of the footprint
            return self._binarize(F.adaptive_avg_pool2d(x, size))
        return self._binarize(func(*args, **kwargs))

    @staticmethod
    def _avg_instead(args, kwargs) -> Tensor | None:
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        params = dict(zip(names, args, strict=False)) | kwargs
        dil = params.get("dilation", 1)
        if params.get("return_indices") or any(d != 1 for d in ((dil, dil) if isinstance(dil, int) else dil)):
            return None
        stride = params.get("stride") or params["kernel_size"]
        return F.avg_pool2d(params["input"], params["kernel_size"], stride, params.get("padding", 0),
                            ceil_mode=bool(params.get("ceil_mode", False)), count_include_pad=True)

    @staticmethod
    def _binarize(out):
        if isinstance(out, Tensor) and out.requires_grad and out.is_floating_point():
            out.register_hook(lambda g: (g != 0).to(g.dtype))
        return out


_HOST = torch.device("cpu")


def _substitutes(net: nn.Module) -> dict[str, Tensor]:
    """Positive constants for every parameter and identity BatchNorm statistics, and the other buffers as they
    are, all on the CPU in float32 (the model is not modified).

    The supports are measured on the CPU wherever the model lives: they are read off exact zeros in the gradients,
    and only the CPU promises them (cuDNN's Winograd and FFT algorithms may leave 1e-8 where a product is zero,
    which would widen every box)."""
    def host(t: Tensor, value: float | None) -> Tensor:
        dtype = torch.float32 if t.is_floating_point() else t.dtype
        if value is None:  # a buffer as it is (one without data, on the meta device: zeros of its shape)
            return torch.zeros(t.shape, dtype=dtype) if t.is_meta else t.detach().to(_HOST, dtype)
        return torch.full((), value, dtype=dtype, device=_HOST).expand(t.shape)  # no copies

    subs: dict[str, Tensor] = {}
    for name, p in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("bias"):
            value = 0.0
        elif p.dim() >= 2:
            value = 1.0 / max(1, p[0].numel())
        else:
            value = 1.0
        subs[name] = host(p, value)
    for name, b in net.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        subs[name] = host(b, 0.0 if leaf == "running_mean" else 1.0 if leaf == "running_var" else None)
    return subs


def _in_channels(net: nn.Module) -> int:
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return m.in_channels
    return 3


def _example(net: nn.Module, size: int) -> Tensor:
    """An all-ones image of side `size` on the net's own device and in its dtype, for what runs the net itself
    (the layer's LayerInfo, which call of a reused module a name means)."""
    first = next(iter(net.parameters()), None)
    device = first.device if first is not None else _HOST
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return torch.ones(1, _in_channels(net), size, size, device=device, dtype=dtype)


def _probe_input(net: nn.Module, size: int) -> Tensor:
    """The all-ones probe image of side `size`, on the CPU in float32 (see `_substitutes`), requiring grad."""
    return torch.ones(1, _in_channels(net), size, size, requires_grad=True)


def _info(net: nn.Module, layer: str, size: int, info: LayerInfo | None) -> LayerInfo:
    """`info`, or the layer's LayerInfo looked up on a probe image of side `size` when the caller had none."""
    return info if info is not None else layer_info(net, layer, _example(net, size))


def _whole_image_reason(info: LayerInfo) -> str:
    """Why every unit of `info`'s layer sees the whole image without measuring ("" when it must be measured)."""
    if info.layout is Layout.TOKENS:
        return (f"layer {info.name!r} is a token layer ({info.describe()}): attention lets every token see the "
                "whole image")
    if info.layout not in (Layout.CHANNELS_FIRST, Layout.CHANNELS_LAST) or len(info.shape) != 3:
        return f"layer {info.name!r} has no positions on the image ({info.describe()}): each unit sees all of it"
    return ""


def _probe_boxes(net: nn.Module, layer: str, size: int,
                 choose: Callable[[tuple[int, ...]], list[tuple[int, int]]], info: LayerInfo,
                 cut_global: bool = True) -> tuple[tuple[int, ...], list[tuple[int, int, int, int] | None]]:
    """Maps shape (C, H, W) of the layer on a `size` probe image and the bounding boxes (clipped to the probe
    image) of the gradient support of the chosen units (`choose(shape)` -> [(y, x)], all channels summed)."""
    x = _probe_input(net, size)
    subs = _substitutes(net)
    # The forward stops once the layer is captured: the rest of the network cannot change its receptive field.
    capture = Capture(net, [layer], example=_example(net, size), stop=True)  # validates the name
    with torch.enable_grad(), AttributionContext(net) as ac, capture, _SupportMode(cut_global):
        try:
            functional_call(net, subs, (x,), strict=False)
        except Stopped:
            pass
    maps = as_maps(capture[layer], info)
    shape = tuple(maps.shape[1:])
    units = choose(shape)
    boxes: list[tuple[int, int, int, int] | None] = []
    for i, (uy, ux) in enumerate(units):
        obj = maps[0, :, uy, ux].sum()
        if obj.grad_fn is None:
            boxes.append(None)
            continue
        (g,) = ac.grad(obj, x, "deconv", retain_graph=i < len(units) - 1)
        if g is None:
            boxes.append(None)
            continue
        support = g[0].abs().sum(dim=0) > 0
        rows = torch.nonzero(support.any(dim=1)).flatten()
        cols = torch.nonzero(support.any(dim=0)).flatten()
        if rows.numel() == 0:
            boxes.append(None)
            continue
        boxes.append((int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1))
    return shape, boxes


def _axis(lo: list[int], hi: list[int], n: int, size: int) -> tuple[int, int, int] | None:
    """(stride, offset, extent) along one axis from clipped boxes of units idx = [0, 1, n-2, n-1]."""
    t0, t1, tn2, tn1 = lo
    b0, b1, bn2, bn1 = hi
    if n == 1:
        if t0 > 0 and b0 < size:
            return max(1, size), t0, b0 - t0
        return None
    if tn2 > 0:
        stride = tn1 - tn2
    elif b1 < size:
        stride = b1 - b0
    else:
        return None
    if tn1 <= 0 or b0 >= size:
        return None
    offset = tn1 - (n - 1) * stride
    return stride, offset, b0 - offset


def _diagonal_units(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Units 0, 1, n-2, n-1 along the diagonal (clamped for tiny maps)."""
    h, w = shape[1], shape[2]
    ys = [0, min(1, h - 1), max(h - 2, 0), h - 1]
    xs = [0, min(1, w - 1), max(w - 2, 0), w - 1]
    return list(zip(ys, xs, strict=True))


def _measure(net: nn.Module, layer: str, input_size: int, info: LayerInfo | None) -> RFGeometry:
    info = _info(net, layer, input_size, info)
    whole = _whole_image_reason(info)
    if whole:
        return RFGeometry(0, 0, 0, 0, input_size, input_size, full=True, reason=whole)
    size = input_size
    step = 0
    while True:
        shape, boxes = _probe_boxes(net, layer, size, _diagonal_units, info)
        if any(b is None for b in boxes):
            return RFGeometry(0, 0, 0, 0, input_size, input_size, full=True,
                              reason=f"no spatial footprint is left at layer {layer!r} (global pooling below it): "
                                     "each unit sees the whole image")
        h, w = shape[1], shape[2]
        ay = _axis([b[0] for b in boxes], [b[2] for b in boxes], h, size)
        ax = _axis([b[1] for b in boxes], [b[3] for b in boxes], w, size)
        if ay is not None and ax is not None:
            return RFGeometry(ay[0], ax[0], ay[1], ax[1], ay[2], ax[2])
        # Clipped on the sides we need: probe a larger image, same size modulo the layer's total stride.
        total = max(1, round(size / max(h, w))) if max(h, w) > 1 else max(1, size)
        step = step * 2 if step else total * max(1, math.ceil(input_size / (2 * total)))
        size = input_size + 2 * step
        if size > _MAX_PROBE:
            raise DeepVisError(f"receptive field of {layer} exceeds a {_MAX_PROBE}px probe; cannot measure it")


class EffectiveRF:
    """Effective receptive field accumulator: mean |d unit / d input| over frames (Luo et al. 2016).

    >>> erf = EffectiveRF(net, "layer3")
    >>> for x in frames: erf.update(x)           # x: Tensor[N, 3, H, W]
    >>> heat = erf.map                            # Tensor[H, W], mean over frames

    The unit is the centre position of the layer's maps (`layouts.as_maps`: channels-last maps and token grids
    too); `channel=None` sums all channels there. `info`: the layer's LayerInfo (looked up on the first frame when
    None). `add(grad)` accumulates an input gradient computed elsewhere (e.g. by the live pipeline). Uses the real
    weights and plain gradients; the forward stops at the layer.
    """

    def __init__(self, net: nn.Module, layer: str, *, channel: int | None = None,
                 info: LayerInfo | None = None) -> None:
        self.net = net
        self.layer = layer
        self.channel = channel
        self.info = info
        self.count = 0
        self._sum: Tensor | None = None

    def update(self, x: Tensor) -> None:
        xin = x.detach().clone().requires_grad_(True)
        if self.info is None:
            self.info = layer_info(self.net, self.layer, xin.detach())
        if self.info.grid is None:
            raise DeepVisError(f"{self.layer} has no spatial positions; its effective RF is the whole image")
        with torch.enable_grad(), Capture(self.net, [self.layer], example=xin.detach(), stop=True) as cap:
            cap.run(xin)
        maps = as_maps(cap[self.layer], self.info)
        cy, cx = maps.shape[2] // 2, maps.shape[3] // 2
        at = maps[:, :, cy, cx] if self.channel is None else maps[:, self.channel, cy, cx]
        (g,) = torch.autograd.grad(at.sum(), xin, allow_unused=True)
        self.add(torch.zeros_like(xin) if g is None else g)

    def add(self, grad: Tensor) -> None:
        """Accumulate input gradients [N, C, H, W] (one map per image)."""
        per_image = grad.detach().abs().sum(dim=1)
        total = per_image.sum(dim=0)
        self._sum = total if self._sum is None else self._sum + total
        self.count += per_image.shape[0]

    @property
    def map(self) -> Tensor:
        if self._sum is None:
            raise DeepVisError("effective RF: no frames accumulated yet")
        return self._sum / self.count

    def reset(self) -> None:
        self.count = 0
        self._sum = None
