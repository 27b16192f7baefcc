"""Receptive fields of units, measured from the network itself (no per-architecture tables).

Theoretical RF (`rf_box`, `rf_geometry`): the set of input pixels a unit depends on is the support of its
input gradient when no path is cancelled. We make cancellation impossible without touching the model:
`torch.func.functional_call` runs it with substituted tensors on the CPU, wherever the model lives (only the
CPU promises exact zeros in the gradients the boxes are read from) -- every weight a positive constant
(1/fan_in, so activations stay O(1)), biases 0, BatchNorm statistics identity -- on an all-ones input, with
max pooling computed as average pooling (every window element gets gradient, not just the switch), rectifiers
backpropagating relu(upstream) (deconv rule: saturation cannot cut a path), and the gradient binarized after
every op (no underflow in deep nets). Ops whose backward cancels inside one fused call are given stand-ins of
the same support with positive Jacobians: LayerNorm, GroupNorm, InstanceNorm, batch-statistics BatchNorm
((x + mean x) / (2 mean|x|) over the statistics' dims: their output ignores a constant shift, so they map an
all-ones gradient to exactly zero -- every ConvNeXt and Swin block has one) and softmax (values kept, masked
entries zeroed). Global-context branches (squeeze-excitation, global pooling: adaptive pooling to 1x1, a mean or
max over a 4-D map's positions, normalization statistics over positions) are cut, so a conv unit's RF is its
convolutional footprint; units with no spatial footprint left (after global pooling, fully connected) get the
whole image. LayerNorm over the channels at each position is no image context: ConvNeXt's units are local.

For a conv-style layer the box is affine in the unit index: top(y) = y * stride + offset, height = size (same
for x). Boxes of units near the border are clipped by the image, so we read the stride from the last two units'
tops (or the first two units' bottoms), the offset from the last unit's top, the size from the first unit's
bottom -- the sides that are not clipped -- and check the other unclipped sides against them. When the RF is so
large that those are clipped too, we probe again with the image grown along that axis only (the other kept at
S), to S' = S + 2 m T (T = the layer's total stride), which keeps every layer's size modulo its stride and so
every "same"-style padding unchanged. Fields that do not slide with the unit (Swin's window attention: the units
of a window share one field, which jumps from window to window; after a few shifted-window blocks it is the
whole image) fail that check: `full`, with the reason. Results are cached per (net, layer, input size).

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
            shape, boxes = _probe_boxes(net, layer, (int(input_size),) * 2, lambda s: [(s[1] // 2, s[2] // 2)],
                                        _info(net, layer, int(input_size), info), cut_global=False)
            if len(shape) == 3 and boxes and boxes[0] is not None:
                t, lft, b, r = geom.box(shape[1] // 2, shape[2] // 2)
                s = int(input_size)
                local = boxes[0] == (max(t, 0), max(lft, 0), min(b, s), min(r, s))
        per_net[key] = local
    return per_net[key]


# --------------------------------------------------------------------------------------------------------------


_SOFTMAX = frozenset((F.softmax, torch.softmax, Tensor.softmax))
_REDUCE = frozenset((torch.mean, Tensor.mean, torch.sum, Tensor.sum, torch.amax, Tensor.amax))
_MAX_REDUCE = frozenset((torch.amax, Tensor.amax))


class _SupportMode(TorchFunctionMode):
    """Max pooling -> average pooling, global pooling cut (unless cut_global=False), gradient binarized, and the
    fused ops whose backward cancels a binarized (all-ones) gradient inside itself given positive-Jacobian
    stand-ins of the same support: normalizations and softmax (see `_norm`, `_softmax`)."""

    def __init__(self, cut_global: bool = True) -> None:
        super().__init__()
        self.cut_global = cut_global

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        stand_in = self._stand_in(func, args, kwargs)
        if stand_in is not None:
            return self._binarize(stand_in)
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

    def _stand_in(self, func, args: tuple, kwargs: dict) -> Tensor | None:
        """The support-preserving stand-in of a cancelling op, or None to run `func` as called.

        A normalization's output does not move when its input is shifted by a constant, and neither does
        softmax's: their fused backward maps an all-ones gradient to exactly zero inside one op (LayerNorm over
        the channels of a ConvNeXt or Swin block), before any binarization can keep it. Each is replaced by an op
        with a positive Jacobian of the same support, so no path cancels. (Written-out normalizations, x - mean(x)
        as separate ops, need nothing: the gradient is binarized after each op, so the mean's -g turns positive.)"""
        if func is F.layer_norm:
            x, shape, weight, bias = _args(args, kwargs, ("input", "normalized_shape", "weight", "bias"))
            # over the last dim: per position (channels-last maps, tokens); over more: image-wide statistics
            dims = tuple(range(-len(tuple(shape)), 0))
            return self._norm(x, dims, weight, bias, per_channel=False, spatial=len(dims) > 1)
        if func is F.group_norm:
            x, groups, weight, bias = _args(args, kwargs, ("input", "num_groups", "weight", "bias"))
            return self._norm(x, int(groups), weight, bias, per_channel=True, spatial=x.dim() > 2)
        if func is F.instance_norm:
            x, _rm, _rv, weight, bias, use_input = _args(args, kwargs, ("input", "running_mean", "running_var",
                                                                         "weight", "bias", "use_input_stats"))
            if use_input is False:
                return None  # an affine map with fixed statistics: nothing cancels
            return self._norm(x, x.shape[1], weight, bias, per_channel=True, spatial=True)
        if func is F.batch_norm:
            x, rm, _rv, weight, bias, training = _args(args, kwargs, ("input", "running_mean", "running_var",
                                                                       "weight", "bias", "training"))
            if not training and rm is not None:
                return None  # inference BatchNorm: per-channel affine
            return self._norm(x, (0, *range(2, x.dim())), weight, bias, per_channel=True, spatial=True)
        if func in _SOFTMAX:
            return _softmax(func, args, kwargs)
        if func in _REDUCE:
            return self._pooled(func, args, kwargs)
        return None

    def _pooled(self, func, args: tuple, kwargs: dict) -> Tensor | None:
        """Global pooling written as a reduction over the positions of a 4-D map (timm's squeeze-excitation:
        x.mean((2, 3), keepdim=True); channels-last: dims (1, 2)): cut like adaptive pooling to 1x1; kept with
        cut_global=False, a max taken as a mean there (every position gets gradient, not just the switch)."""
        x, dim = _args(args, kwargs, ("input", "dim"))
        if not isinstance(x, Tensor) or not x.requires_grad or x.dim() != 4:
            return None
        dims = set(range(4)) if dim is None or dim == () else {d % 4 for d in ((dim,) if isinstance(dim, int)
                                                                                 else dim)}
        if not ({2, 3} <= dims or dims == {1, 2}):
            return None  # over the channels (a hand-written LayerNorm) or one axis: no image-wide context
        if self.cut_global:
            if "input" in kwargs:
                return func(*args, **(kwargs | {"input": x.detach()}))
            return func(x.detach(), *args[1:], **kwargs)
        if func not in _MAX_REDUCE:
            return None
        out = func(*args, **kwargs)
        keepdim = bool(_args(args, kwargs, ("input", "dim", "keepdim"))[2])
        spread = x.mean(dim=tuple(sorted(dims)), keepdim=keepdim)
        return out.detach() + (spread - spread.detach())

    def _norm(self, x: Tensor, over: int | tuple[int, ...], weight: Tensor | None, bias: Tensor | None,
              per_channel: bool, spatial: bool) -> Tensor | None:
        """(x + mean(x)) / (2 mean|x|), then the affine map: positive Jacobian over the statistics' support, and
        values of order 1 as a real normalization gives (positive for the products downstream; a residual stream
        that doubled at every block would drown an attention mask of -100 in rounding). `over`: the dims the
        statistics span, or a group count (GroupNorm: channel groups and all positions). Statistics over positions
        are global context: cut like global pooling unless `cut_global` is off. `per_channel`: weight and bias
        per channel (dim 1), else shaped like the trailing dims (LayerNorm)."""
        if not isinstance(x, Tensor) or not x.requires_grad:
            return None

        def mean(t: Tensor) -> Tensor:
            if isinstance(over, int):  # groups
                n, c = t.shape[0], t.shape[1]
                m = t.reshape(n, over, -1).mean(dim=-1, keepdim=True)
                return m.expand(n, over, c // over * math.prod(t.shape[2:])).reshape(t.shape)
            return t.mean(dim=over, keepdim=True)

        ctx = mean(x)
        if spatial and self.cut_global:
            ctx = ctx.detach()
        scale = mean(x.detach().abs())
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all zeros there: any positive scale
        out = (x + ctx) / (2 * scale)
        if per_channel and x.dim() > 1:
            view = (1, -1) + (1,) * (x.dim() - 2)
            weight = weight.reshape(view) if weight is not None else None
            bias = bias.reshape(view) if bias is not None else None
        if weight is not None:
            out = out * weight
        if bias is not None:
            out = out + bias
        return out

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


def _args(args: tuple, kwargs: dict, names: tuple[str, ...]) -> list:
    """Positional-or-keyword arguments by name (None where not given)."""
    params = dict(zip(names, args, strict=False)) | {k: v for k, v in kwargs.items() if k in names}
    return [params.get(n) for n in names]


def _softmax(func, args: tuple, kwargs: dict) -> Tensor | None:
    """Softmax with its values, and a backward of the same support as its Jacobian p_i (delta_ij - p_j) but
    positive: g_j + mean_i(g_i), over the entries whose probability is not lost. A masked entry (-inf, or -100 as
    in Swin's shifted windows) leaves less than the dtype's smallest normal number: it is set to 0, so that no
    denormal weight carries a path through the product with the values either."""
    x, dim = _args(args, kwargs, ("input", "dim"))
    if not isinstance(x, Tensor) or not x.requires_grad or dim is None:
        return None
    p = func(*args, **kwargs).detach()
    keep = (p >= torch.finfo(p.dtype).tiny).to(p.dtype)
    grad_path = keep * (x + (keep * x).mean(dim=dim, keepdim=True))
    return p * keep + (grad_path - grad_path.detach())


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


def _probe_input(net: nn.Module, size: tuple[int, int]) -> Tensor:
    """The all-ones probe image of `size` (H, W), on the CPU in float32 (see `_substitutes`), requiring grad."""
    return torch.ones(1, _in_channels(net), *size, requires_grad=True)


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


def _probe_boxes(net: nn.Module, layer: str, size: tuple[int, int],
                 choose: Callable[[tuple[int, ...]], list[tuple[int, int]]], info: LayerInfo,
                 cut_global: bool = True) -> tuple[tuple[int, ...], list[tuple[int, int, int, int] | None]]:
    """Maps shape (C, H, W) of the layer on a probe image of `size` (H, W) and the bounding boxes (clipped to the
    probe image) of the gradient support of the chosen units (`choose(shape)` -> [(y, x)], all channels summed)."""
    x = _probe_input(net, size)
    subs = _substitutes(net)
    # The forward stops once the layer is captured: the rest of the network cannot change its receptive field.
    capture = Capture(net, [layer], example=_example(net, min(size)), stop=True)  # validates the name
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


def _slides(geom: tuple[int, int, int], lo: list[int], hi: list[int], n: int, size: int) -> bool:
    """True when every probed unit's sides inside the probe image are where `geom` puts them: a field that slides
    with the unit. Windowed attention (Swin) gives the units of a window one field, which jumps from window to
    window. (Clipped sides are not compared: rows a floor-rounding stride leaves unread end a border field early.)"""
    stride, offset, extent = geom
    if stride < 1 or extent < 1:
        return False
    for i, t, b in zip(_diagonal_index(n), lo, hi, strict=True):
        top = i * stride + offset
        if (top > 0 and t != top) or (top + extent < size and b != top + extent):
            return False
    return True


def _diagonal_index(n: int) -> list[int]:
    return [0, min(1, n - 1), max(n - 2, 0), n - 1]


def _diagonal_units(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Units 0, 1, n-2, n-1 along the diagonal (clamped for tiny maps)."""
    return list(zip(_diagonal_index(shape[1]), _diagonal_index(shape[2]), strict=True))


def _full(input_size: int, reason: str) -> RFGeometry:
    return RFGeometry(0, 0, 0, 0, input_size, input_size, full=True, reason=reason)


def _measure(net: nn.Module, layer: str, input_size: int, info: LayerInfo | None) -> RFGeometry:
    """Probe, and where the needed sides are clipped, probe again with the probe image grown along one axis at a
    time (the other kept at `input_size`: a thin image costs far less than a square one of the grown side)."""
    info = _info(net, layer, input_size, info)
    whole = _whole_image_reason(info)
    if whole:
        return _full(input_size, whole)
    size = [input_size, input_size]
    found: list[tuple[int, int, int] | None] = [None, None]
    step = 0
    whole_image: bool | None = None  # every probed unit sees all of the input_size image
    while True:
        shape, boxes = _probe_boxes(net, layer, (size[0], size[1]), _diagonal_units, info)
        if any(b is None for b in boxes):
            return _full(input_size, f"no spatial footprint is left at layer {layer!r} (global pooling below it): "
                                     "each unit sees the whole image")
        if whole_image is None:
            whole_image = all(b == (0, 0, input_size, input_size) for b in boxes)
        for a in (0, 1):
            if found[a] is not None:
                continue
            lo, hi, n = [b[a] for b in boxes], [b[a + 2] for b in boxes], shape[1 + a]
            geom = _axis(lo, hi, n, size[a])
            if geom is None:
                continue
            if not _slides(geom, lo, hi, n, size[a]):
                if whole_image:
                    return _full(input_size, f"every unit of layer {layer!r} sees the whole image (its field does "
                                             "not slide with the unit: attention windows, linked by shifted "
                                             "windows, span the image)")
                return _full(input_size, f"the receptive fields of layer {layer!r} do not slide with the unit "
                                         "(attention within fixed windows: the units of a window share one field, "
                                         "which jumps from window to window): each unit is shown with the whole "
                                         "image")
            found[a] = geom
        if found[0] is not None and found[1] is not None:
            (sy, oy, ey), (sx, ox, ex) = found
            return RFGeometry(sy, sx, oy, ox, ey, ex)
        # Clipped on the sides we need: grow the first unresolved axis, same size modulo the layer's total stride
        # (S' = S + 2 m T keeps every layer's size modulo its stride, so every "same"-style padding).
        a = 0 if found[0] is None else 1
        n = shape[1 + a]
        total = max(1, round(size[a] / n)) if n > 1 else max(1, size[a])
        if size[a] == input_size:  # a fresh axis: the other axis's last step (if any) is the first guess
            step = total * max(1, math.ceil((step or input_size / 2) / total))
        else:
            step *= 2
        size = [input_size, input_size]
        size[a] = input_size + 2 * step
        if size[a] > _MAX_PROBE:
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
