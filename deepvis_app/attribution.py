"""Neuron attribution: gradient, deconvnet, guided backprop, saliency, gradient x input, (guided) Grad-CAM.

How it works (see docs/attribution.md): while a forward runs inside `AttributionContext`, every ReLU-family
call -- `nn.ReLU`/`nn.ReLU6` modules (reused or inplace), `F.relu`, `torch.relu`, `relu_`, `Tensor.relu`,
`F.relu6`, `F.hardtanh(x, 0, m)` -- is routed through one custom autograd Function by a
`torch.overrides.TorchFunctionMode`, so functional calls are covered too and the model itself is never touched
(no hooks, no module swaps). That Function's backward reads a rule chosen *at backward time*:

* ``gradient``: the true derivative (pass where 0 < x (< upper));
* ``deconv``:  relu(upstream), the forward mask ignored (Zeiler & Fergus);
* ``guided``:  relu(upstream) where 0 < x (< upper) (Springenberg et al.).

So one forward serves all three rules: the live pipeline reuses the frame's forward and calls
`torch.autograd.grad` once per rule on the same graph, backpropagating only from the selected layer.
Other activations (SiLU, GELU, Hardswish, sigmoid, ...) keep their plain derivative under every rule.
Inference-mode BatchNorm is routed as well, only to replace the slow native CPU backward by one multiply.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from .errors import DeepVisError
from .probe import Probe, call_counts, split_layer

RULES = ("gradient", "deconv", "guided")
METHODS = ("gradient", "deconv", "guided", "saliency", "input_x_gradient", "gradcam", "guided_gradcam")
OBJECTIVES = ("neuron", "channel", "seed", "logit", "prob")
VIEWS = ("raw", "gray", "norm", "normblur")

__all__ = [
    "METHODS", "OBJECTIVES", "RULES", "VIEWS", "AttributionContext", "DeconvCache", "Explanation", "GraphCut", "Unit",
    "attribute", "attribution_context", "explain_unit", "gradcam_map", "render_view", "unit_objective",
]


# --------------------------------------------------------------------------------------------------------------
# The ReLU-family autograd Function and the mode that routes calls to it


class _RuleState:
    """Which backward rule rectifiers apply right now; shared by every node one context created."""

    def __init__(self) -> None:
        self.rule = "gradient"
        self.calls = 0  # rectifier calls routed to _Rectifier (a check that the rules are in the graph)
        self.deconv_static = True  # no recorded op makes the deconvnet backward depend on the input
        self.dense = False  # this backward's gradients have spread over most of a map: stop looking for a box
        self.lock = threading.Lock()  # one rule-switching backward at a time per context


class _Rectifier(torch.autograd.Function):
    """clamp(x, 0, upper) (upper=None: relu) whose backward follows `state.rule`."""

    @staticmethod
    def forward(ctx, x: Tensor, upper: float | None, inplace: bool, state: _RuleState) -> Tensor:  # noqa: D401
        if inplace:
            out = torch.relu_(x) if upper is None else x.clamp_(0.0, upper)
            ctx.mark_dirty(x)
        else:
            out = torch.relu(x) if upper is None else x.clamp(0.0, upper)
        ctx.save_for_backward(out)  # 0 < out (< upper) exactly where 0 < x (< upper)
        ctx.upper = upper
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        return _rule_backward(grad, out, ctx.state.rule, ctx.upper), None, None, None


def _rule_backward(grad: Tensor, out: Tensor, rule: str, upper: float | None) -> Tensor:
    """A rectifier's input gradient under `rule`, in one new tensor (the clamp of guided is done in place on it:
    on the CPU each fresh activation-sized tensor costs more than the arithmetic). Every rule keeps zeros zero,
    so a known nonzero box of `grad` carries over."""
    if rule == "deconv":
        res = grad.clamp(min=0)
    elif rule == "guided":
        # Guided backprop keeps Springenberg's ReLU mask [x > 0] at every rectifier, also at ReLU6: a unit
        # saturated at the ceiling (common in EfficientNet-Lite) would otherwise explain nothing.
        res = torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0)
    elif upper is None:
        res = torch.ops.aten.threshold_backward(grad, out, 0)
    else:
        res = torch.ops.aten.hardtanh_backward(grad, out, 0.0, upper)
    return _carry_box(grad, res)


# A gradient whose nonzero part is known (the crop below made it) carries its box, so the next chain need not
# search a whole map for it: (row0, row1, col0, col1) and the tensor's version (an in-place change voids it).
_BOX = "_deepvis_box"


def _with_box(t: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    setattr(t, _BOX, (box, t._version))
    return t


def _known_box(t: Tensor) -> tuple[int, int, int, int] | None:
    tag = getattr(t, _BOX, None)
    return tag[0] if isinstance(tag, tuple) and len(tag) == 2 and tag[1] == t._version else None


def _carry_box(src: Tensor, dst: Tensor) -> Tensor:
    """`dst`, computed elementwise from `src` with zeros kept zero, gets `src`'s known box."""
    box = _known_box(src)
    return dst if box is None else _with_box(dst, box)


# Conv -> eval BatchNorm (-> rectifier) chains get one autograd node each: BN's per-channel scale is folded into
# the conv's weight for the backward, and the rule is applied once, so the backward of the chain is one rule
# pass plus one transposed conv instead of rule, multiply and convolution_backward, each with a fresh tensor.
# The forward still runs the native ops one by one (bit-identical values); the fused node only adds a shortcut
# edge from the chain's output to the conv's input. The intermediate outputs keep their own nodes, so a unit on
# the conv or BN output (or any other use of them) is still differentiated exactly.
_CHAIN = "_deepvis_chain"  # attribute on a conv / conv+BN output: (the _Chain that produced it, its version)


def _tag(out: Tensor, chain: _Chain) -> None:
    setattr(out, _CHAIN, (chain, out._version))


def _chain_of(x: Tensor) -> _Chain | None:
    """The chain that produced `x`, unless `x` was modified in place since (say a residual `out += identity`)."""
    tag = getattr(x, _CHAIN, None)
    if isinstance(tag, tuple) and len(tag) == 2 and isinstance(tag[0], _Chain) and tag[1] == x._version:
        return tag[0]
    return None


@dataclass(frozen=True)
class _Chain:
    x: Tensor  # the conv's input (before a zero pad folded into the chain)
    weight: Tensor  # the conv weight (times BN's scale once BN is folded in)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pad: tuple[int, int, int, int] | None = None  # an uneven zero pad (left, right, top, bottom) before the conv
    state: _RuleState | None = None  # the context's, for its `dense` flag

    def backward(self, grad: Tensor) -> Tensor:
        """The conv's input gradient. A neuron's gradient starts as one pixel and spreads a kernel per layer: while
        it covers at most a quarter of the map, only its nonzero box is transposed-convolved (exact: the rest is
        zero). Two shapes take a matrix product instead of `convolution_backward`, which measured 1.3-8x slower
        for them on the CPU: 1x1 convs, and convs with a tiny input fan-in (the stem's 3 x 3 x 3), whose columns
        are added back tap by tap (`_fold_taps`)."""
        h, w = grad.shape[-2:]
        if self.state is not None and not self.state.dense and h * w >= _BOX_MIN_AREA:
            box = _known_box(grad) or _nonzero_box(grad)
            if box is None:
                return torch.zeros_like(self.x, dtype=grad.dtype)
            r0, r1, c0, c1 = box
            if 4 * (r1 - r0) * (c1 - c0) <= h * w:
                return self._box_backward(grad[:, :, r0:r1, c0:c1], r0, c0)
            self.state.dense = True
        return self._dense_backward(grad)

    @property
    def pointwise(self) -> bool:
        """A plain 1x1 conv: its transposed conv is one matrix product."""
        return (self.groups == 1 and self.weight.shape[-2:] == (1, 1) and self.stride == (1, 1)
                and self.padding == (0, 0) and self.pad is None)

    @property
    def flipped(self) -> tuple[Tensor, list[int]] | None:
        """For a stride-1 depthwise conv: (the kernel flipped, the padding) of the conv that is its transpose;
        made once per chain (three views reuse it)."""
        memo = self.__dict__.get("_flipped", False)
        if memo is False:
            memo = self._flip()
            object.__setattr__(self, "_flipped", memo)  # a cache, not state: the dataclass stays frozen
        return memo

    def _flip(self) -> tuple[Tensor, list[int]] | None:
        kh, kw = self.weight.shape[-2:]
        pad = [self.dilation[i] * ((kh, kw)[i] - 1) - self.padding[i] for i in range(2)]
        if (self.groups != self.weight.shape[0] or self.weight.shape[1] != 1 or self.groups != self.x.shape[1]
                or self.stride != (1, 1) or self.pad is not None or min(pad) < 0):
            return None
        return self.weight.flip(-2, -1), pad

    def _box_backward(self, part: Tensor, r0: int, c0: int) -> Tensor:
        """Input gradient of an output gradient that is zero outside `part` (its top-left at output (r0, c0))."""
        kh, kw = self.weight.shape[-2:]
        extent = [(part.shape[2 + i] - 1) * self.stride[i] + self.dilation[i] * ((kh, kw)[i] - 1) + 1
                  for i in range(2)]
        if self.pointwise:
            n, co, bh, bw = part.shape
            spread = torch.matmul(self.weight.view(co, -1).t(), part.reshape(n, co, bh * bw)).view(n, -1, bh, bw)
        else:
            mf = _memory_format(self.x)
            like = torch.empty((*self.x.shape[:2], *extent), dtype=part.dtype, device=part.device, memory_format=mf)
            part = part.contiguous(memory_format=mf)
            spread = torch.ops.aten.convolution_backward(  # = conv_transpose2d, without its slow grouped CPU path
                part, like, self.weight, None, list(self.stride), [0, 0], list(self.dilation), False, [0, 0],
                self.groups, [True, False, False])[0]
        top, left = (self.pad[2], self.pad[0]) if self.pad is not None else (0, 0)
        y = r0 * self.stride[0] - self.padding[0] - top  # where spread's first row lands in the input
        x = c0 * self.stride[1] - self.padding[1] - left
        h, w = self.x.shape[-2:]
        full = torch.zeros_like(self.x, dtype=part.dtype)  # in the input's layout
        y0, y1 = max(y, 0), min(y + spread.shape[-2], h)
        x0, x1 = max(x, 0), min(x + spread.shape[-1], w)
        if y0 < y1 and x0 < x1:
            full[:, :, y0:y1, x0:x1] = spread[:, :, y0 - y:y1 - y, x0 - x:x1 - x]
            return _with_box(full, (y0, y1, x0, x1))
        return full

    def _dense_backward(self, grad: Tensor) -> Tensor:
        n, co = grad.shape[:2]
        ci, kh, kw = self.weight.shape[1:]
        h, w = self.x.shape[-2:]
        left, right, top, bottom = self.pad if self.pad is not None else (0, 0, 0, 0)
        padded = (h + top + bottom, w + left + right)  # the shape the kernel read (an uneven pad: cut out after)
        cpu = grad.device.type == "cpu" and self.x.shape[0] == n
        if cpu and self.pointwise:
            # one matrix product per image, written straight in the input's layout: the rule that reads this
            # gradient next (with the saved activation, in that layout) runs 1.5x slower on mixed layouts
            w2 = self.weight.view(co, ci)
            if grad.is_contiguous():
                chans = grad.view(n, co, -1)
            elif grad.is_contiguous(memory_format=torch.channels_last):
                chans = grad.permute(0, 2, 3, 1).reshape(n, -1, co).mT
            else:
                chans = None
            if chans is not None:
                if _memory_format(self.x) == torch.channels_last:
                    return torch.matmul(chans.mT, w2).view(n, h, w, ci).permute(0, 3, 1, 2)
                return torch.matmul(w2.t(), chans).view(self.x.shape)
        if cpu and self.groups == 1 and ci * kh * kw <= 32:
            if grad.is_contiguous():
                cols = torch.matmul(self.weight.reshape(co, -1).t(), grad.view(n, co, -1))
            elif grad.is_contiguous(memory_format=torch.channels_last):  # pixels x channels, read transposed
                cols = torch.matmul(self.weight.reshape(co, -1).t(), grad.permute(0, 2, 3, 1).reshape(n, -1, co).mT)
            else:
                cols = None
            if cols is not None:
                g = _fold_taps(cols, (ci, kh, kw), grad.shape[-2:], padded, self.padding, self.stride, self.dilation)
                return g if self.pad is None else g[:, :, top:top + h, left:left + w]
        if cpu and self.flipped is not None:
            # depthwise, stride 1: the transposed conv is a conv with the kernel flipped, which runs the faster
            # forward kernel (measured 5-10% below convolution_backward's input gradient)
            weight, pad = self.flipped
            return F.conv2d(grad, weight, None, 1, pad, self.dilation, self.groups)
        if self.pad is not None:
            like = torch.empty((*self.x.shape[:2], *padded), dtype=grad.dtype, device=grad.device,
                               memory_format=_memory_format(self.x))
            g = torch.ops.aten.convolution_backward(
                grad, like, self.weight, None, list(self.stride), list(self.padding), list(self.dilation), False,
                [0, 0], self.groups, [True, False, False])[0]
            return g[:, :, top:top + h, left:left + w]
        return torch.ops.aten.convolution_backward(
            grad, self.x, self.weight, None, list(self.stride), list(self.padding), list(self.dilation), False,
            [0, 0], self.groups, [True, False, False])[0]


def _fold_taps(cols: Tensor, kernel: tuple[int, int, int], out_hw: Sequence[int], size: tuple[int, int],
               padding: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """`F.fold` (col2im) as one strided add per kernel tap: the same sums (each tap adds to its own strided
    grid of the map), measured 1.1-1.7x faster than col2im for the stem's 27 x 12544 columns."""
    ci, kh, kw = kernel
    ho, wo = out_hw
    n = cols.shape[0]
    ph, pw = padding
    out = cols.new_zeros(n, ci, size[0] + 2 * ph, size[1] + 2 * pw)
    taps = cols.view(n, ci, kh, kw, ho, wo)
    (sy, sx), span_y, span_x = stride, stride[0] * (ho - 1) + 1, stride[1] * (wo - 1) + 1
    for i in range(kh):
        for j in range(kw):
            y, x = i * dilation[0], j * dilation[1]
            out[:, :, y:y + span_y:sy, x:x + span_x:sx] += taps[:, :, i, j]
    return out[:, :, ph:ph + size[0], pw:pw + size[1]] if ph or pw else out


# Smallest map whose backward is cropped: below it, finding the box and pasting it into a zeroed map cost as much
# as the whole transposed conv (measured in place on EfficientNet-Lite0's 14x14 stage: no gain, 0.4 ms lost).
_BOX_MIN_AREA = 28 * 28


def _nonzero_box(grad: Tensor) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of the nonzero part of a [N, C, H, W] gradient, or None when it is all zero."""
    m = grad.abs().amax(dim=(0, 1))
    rows = torch.nonzero(m.amax(dim=1)).flatten()
    if not len(rows):
        return None
    cols = torch.nonzero(m.amax(dim=0)).flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _pair(v: object) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))  # type: ignore[index]


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _conv_chain(args: tuple, kwargs: dict, state: _RuleState | None = None) -> _Chain | None:
    """The chain start of a 2-d conv whose only differentiable argument is its input; else None. A zero `F.pad`
    just before it (TF-style "same" convs) is folded into the chain: its backward skips the pad's node."""
    p = dict(zip(_CONV_ARGS, args, strict=False)) | kwargs
    x, w, b = p.get("input"), p.get("weight"), p.get("bias")
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.requires_grad:
        return None
    if not isinstance(w, Tensor) or w.dim() != 4 or w.requires_grad or (isinstance(b, Tensor) and b.requires_grad):
        return None
    padding = p.get("padding", 0)
    if isinstance(padding, str):
        return None
    padding = _pair(padding)
    pad = None
    tag = getattr(x, _PADDED, None)
    if padding == (0, 0) and isinstance(tag, tuple) and tag[2] == x._version:
        x, (left, right, top, bottom) = tag[0], tag[1]
        if left == right and top == bottom:
            padding = (top, left)
        else:
            pad = (left, right, top, bottom)
    return _Chain(x, w, _pair(p.get("stride", 1)), padding, _pair(p.get("dilation", 1)),
                  int(p.get("groups", 1)), pad, state)


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


_PADDED = "_deepvis_padded"  # attribute on a zero-padded 4-d tensor: (unpadded input, (l, r, t, b), version)


def _tag_padding(args: tuple, kwargs: dict, out: object) -> None:
    x = args[0] if args else kwargs.get("input")
    pad = args[1] if len(args) > 1 else kwargs.get("pad")
    mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
    value = args[3] if len(args) > 3 else kwargs.get("value", None)
    if not isinstance(out, Tensor) or not isinstance(x, Tensor) or x.dim() != 4 or mode != "constant":
        return
    if value not in (None, 0, 0.0) or not isinstance(pad, (tuple, list)) or len(pad) != 4:
        return
    sides = tuple(int(v) for v in pad)
    if min(sides) >= 0:
        setattr(out, _PADDED, (x, sides, out._version))


class _ChainBatchNorm(torch.autograd.Function):
    """BN(conv(x)) with the conv output already computed: native BN forward, backward one transposed conv with
    the folded weight, straight to the conv's input."""

    @staticmethod
    def forward(ctx, x: Tensor, conv_out: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None,
                bias: Tensor | None, eps: float, chain: _Chain) -> Tensor:
        ctx.chain = chain
        return F.batch_norm(conv_out, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (ctx.chain.backward(grad),) + (None,) * 7


class _ChainRectifier(torch.autograd.Function):
    """rect(BN(conv(x))) with BN's output already computed: backward = the rule, then one transposed conv."""

    @staticmethod
    def forward(ctx, x: Tensor, pre: Tensor, upper: float | None, state: _RuleState, chain: _Chain) -> Tensor:
        out = torch.relu(pre) if upper is None else pre.clamp(0.0, upper)
        ctx.save_for_backward(out)
        ctx.upper, ctx.state, ctx.chain = upper, state, chain
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (out,) = ctx.saved_tensors
        return ctx.chain.backward(_rule_backward(grad, out, ctx.state.rule, ctx.upper)), None, None, None, None


class _EvalBatchNorm(torch.autograd.Function):
    """Inference BatchNorm: native forward (bit-identical), backward g * weight / sqrt(var + eps).

    Exactly BatchNorm's input gradient in eval mode, but a single multiply: on the CPU the native
    `native_batch_norm_backward` takes several times longer and dominated the three-view cost.
    """

    @staticmethod
    def forward(ctx, x: Tensor, mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None,
                eps: float) -> Tensor:
        out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        ctx.scale = _bn_scale(var, weight, eps).view(1, -1, *([1] * (x.dim() - 2)))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _carry_box(grad, grad * ctx.scale), None, None, None, None, None


_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")

# BN's scale and a conv weight with it folded in are the same every frame: made once per set of tensors (their
# storage and version: an in-place change or new weights make them anew), not per forward (that was 1.5 ms of a
# 21 ms EfficientNet-Lite0 forward).
_SCALES: WeakIdKeyDictionary = WeakIdKeyDictionary()  # running_var -> (stamp, scale)
_FOLDS: WeakIdKeyDictionary = WeakIdKeyDictionary()  # conv weight -> (stamp, folded weight)
_CACHE_LOCK = threading.Lock()


def _stamp(t: Tensor | None) -> tuple | None:
    return None if t is None else (t.data_ptr(), t._version, t.device)


def _cached(cache: WeakIdKeyDictionary, key: Tensor, stamp: tuple, make: Callable[[], Tensor]) -> Tensor:
    with _CACHE_LOCK:
        hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    value = make()
    with _CACHE_LOCK:
        cache[key] = (stamp, value)
    return value


def _bn_scale(var: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """weight / sqrt(var + eps): inference BatchNorm's per-channel input gradient."""
    def make() -> Tensor:
        scale = torch.rsqrt(var + eps)
        return scale if weight is None else scale * weight

    return _cached(_SCALES, var, (_stamp(var), _stamp(weight), eps), make)


def _folded_weight(conv_weight: Tensor, var: Tensor, bn_weight: Tensor | None, eps: float) -> Tensor:
    """The conv weight times BN's per-output-channel scale (the chain's backward weight)."""
    def make() -> Tensor:
        return conv_weight * _bn_scale(var, bn_weight, eps).view(-1, 1, 1, 1).to(conv_weight.dtype)

    return _cached(_FOLDS, conv_weight, (_stamp(conv_weight), _stamp(var), _stamp(bn_weight), eps), make)


def _eval_batch_norm(args: tuple, kwargs: dict) -> Tensor | None:
    """Route an inference-mode F.batch_norm whose only differentiable argument is the input; else None."""
    p = dict(zip(_BN_ARGS, args, strict=False)) | kwargs
    x, mean, var = p.get("input"), p.get("running_mean"), p.get("running_var")
    if p.get("training", False) or not isinstance(x, Tensor) or not x.requires_grad or x.dim() < 2:
        return None
    rest = (mean, var, p.get("weight"), p.get("bias"))
    if mean is None or var is None or any(t is not None and t.requires_grad for t in rest):
        return None
    eps = float(p.get("eps", 1e-5))
    chain = _chain_of(x)
    if chain is not None and x.shape[1] == chain.weight.shape[0]:
        folded = replace(chain, weight=_folded_weight(chain.weight, var, p.get("weight"), eps))
        out = _ChainBatchNorm.apply(chain.x, x.detach(), mean, var, p.get("weight"), p.get("bias"), eps, folded)
        _tag(out, folded)
        return out
    return _EvalBatchNorm.apply(x, mean, var, p.get("weight"), p.get("bias"), eps)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: object) -> object:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _relu_spec(args, kwargs, inplace_default):
    return None, bool(_arg(args, kwargs, 1, "inplace", inplace_default))


def _hardtanh_spec(args, kwargs, inplace_default):
    lo = float(_arg(args, kwargs, 1, "min_val", -1.0))
    hi = float(_arg(args, kwargs, 2, "max_val", 1.0))
    if lo != 0.0 or hi <= 0.0:
        return False, False  # not a rectifier: plain gradient
    return hi, bool(_arg(args, kwargs, 3, "inplace", inplace_default))


def _relu6_spec(args, kwargs, inplace_default):
    return 6.0, bool(_arg(args, kwargs, 1, "inplace", inplace_default))


def _fixed(upper, inplace):
    return lambda args, kwargs, _d: (upper, inplace)


# func -> parser returning (upper or None for relu, or False for "not ours", inplace)
_INTERCEPT = {
    F.relu: lambda a, k, d: _relu_spec(a, k, False),
    torch.relu: _fixed(None, False),
    torch.relu_: _fixed(None, True),
    torch.Tensor.relu: _fixed(None, False),
    torch.Tensor.relu_: _fixed(None, True),
    F.relu6: lambda a, k, d: _relu6_spec(a, k, False),
    F.hardtanh: lambda a, k, d: _hardtanh_spec(a, k, False),
    F.hardtanh_: lambda a, k, d: _hardtanh_spec(a[:3], k, True),
}


class _RectifierMode(TorchFunctionMode):
    def __init__(self, state: _RuleState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_grad_enabled():
            return func(*args, **kwargs)
        out = self._route(func, args, kwargs)
        if self.state.deconv_static and not _keeps_deconv_static(func, args, out):
            self.state.deconv_static = False
        return out

    def _route(self, func, args, kwargs):
        if func is F.pad:
            out = func(*args, **kwargs)
            _tag_padding(args, kwargs, out)
            return out
        if func is F.conv2d:
            chain = _conv_chain(args, kwargs, self.state)
            out = func(*args, **kwargs)
            if chain is not None and isinstance(out, Tensor):
                _tag(out, chain)
            return out
        if func is F.batch_norm:
            out = _eval_batch_norm(args, kwargs)
            if out is not None:
                return out
        parse = _INTERCEPT.get(func)
        if parse is not None:
            x = args[0] if args else kwargs.get("input")
            if isinstance(x, Tensor) and x.requires_grad:
                upper, inplace = parse(args, kwargs, None)
                if upper is not False:
                    self.state.calls += 1
                    chain = _chain_of(x)
                    if chain is not None and not inplace:
                        return _ChainRectifier.apply(chain.x, x.detach(), upper, self.state, chain)
                    return _Rectifier.apply(x, upper, inplace, self.state)
        return func(*args, **kwargs)


# Ops whose backward is a fixed linear map of the upstream gradient (it reads no forward value): with only these,
# rectifiers and inference BatchNorm between the input and a unit, the deconvnet rule (which ignores the forward
# masks) gives the same map for every input -- Zeiler & Fergus's deconvnet needs max-pooling switches to see the
# image at all. Anything else recorded (max-pooling, squeeze-excitation's products, sigmoid, SiLU, softmax,
# training-mode BatchNorm, an op not listed) marks the forward as image-dependent.
_LINEAR_OPS = frozenset((
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
    "add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_", "neg",
    "__neg__", "cat", "concat", "concatenate", "stack", "pad", "reshape", "view", "view_as", "flatten",
    "permute", "transpose", "t", "contiguous", "__getitem__", "select", "narrow", "squeeze", "unsqueeze",
    "expand", "expand_as", "split", "chunk", "unbind", "clone", "to", "float", "sum", "mean", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "interpolate", "upsample", "pixel_shuffle", "pixel_unshuffle", "roll", "flip",
))
_PRODUCTS = frozenset(("mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"))
_QUOTIENTS = frozenset(("div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"))


_RULED_NODES = ("_RectifierBackward", "_ChainRectifierBackward", "_EvalBatchNormBackward", "_ChainBatchNormBackward")


def _keeps_deconv_static(func, args: tuple, out: object) -> bool:
    """False when `func` (just run with grad on) recorded a node whose backward reads forward values."""
    results = out if isinstance(out, (tuple, list)) else (out,)
    if not any(isinstance(t, Tensor) and t.grad_fn is not None for t in results):
        return True  # nothing recorded (a shape query, a detached result, ...)
    if func in _INTERCEPT or func is F.batch_norm:  # ours, unless not a rectifier or training-mode BN
        return type(results[0].grad_fn).__name__ in _RULED_NODES
    name = getattr(func, "__name__", "")
    if name == "dropout":
        return results[0] is args[0]  # inference dropout returns its input
    if name in _LINEAR_OPS:
        return True
    grads = [isinstance(a, Tensor) and a.requires_grad for a in args[:2]]
    if name in _PRODUCTS:
        return sum(grads) <= 1
    if name in _QUOTIENTS:
        return len(grads) < 2 or not grads[1]
    return False


# Activation modules that get no ReLU-style rule: guided backprop and deconvnet pass their plain derivative.
_UNRULED = (nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU,
            nn.CELU, nn.Mish, nn.Softplus, nn.PReLU)


def unruled_activations(net: nn.Module) -> list[str]:
    """Type names of the activation modules in `net` that get no deconv/guided rule (plain gradient there),
    so the UI can say what guided backprop and deconvnet really do on this model."""
    return sorted({type(m).__name__ for m in net.modules() if isinstance(m, _UNRULED)})


def rule_note(net: nn.Module) -> str:
    """One line for the inspector and docs: which activations pass the plain gradient under every method."""
    names = unruled_activations(net)
    if not names:
        return "all activations are ReLU-family: deconvnet and guided backprop rules apply everywhere"
    return (f"{', '.join(names)} get no ReLU-style rule: deconvnet and guided backprop pass their plain "
            "gradient there")


# --------------------------------------------------------------------------------------------------------------
# Units and objectives


@dataclass(frozen=True)
class Unit:
    """What to explain.

    objective: ``neuron`` = act[c, y, x] (y, x default to the channel's argmax in the current frame);
    ``channel`` = sum of act[c]; ``seed`` = the old toolbox's seeding: backprop act[c] itself as the
    upstream gradient (objective sum(act_c * act_c.detach())); ``logit`` / ``prob`` = class `channel`'s logit
    or softmax probability (taken from the network output).
    """

    channel: int
    y: int | None = None
    x: int | None = None
    objective: str = "neuron"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise DeepVisError(f"unknown objective {self.objective!r}; use one of {', '.join(OBJECTIVES)}")

    @classmethod
    def coerce(cls, unit: int | Sequence[int] | Unit, objective: str = "neuron") -> Unit:
        """`5` -> channel 5; `(5, 3, 4)` -> neuron (5, y=3, x=4); a `Unit` passes through."""
        if isinstance(unit, Unit):
            return unit
        if isinstance(unit, int | np.integer):
            return cls(int(unit), objective=objective)
        parts = [int(v) for v in unit]
        if len(parts) == 1:
            return cls(parts[0], objective=objective)
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2], objective=objective)
        raise DeepVisError(f"a unit is a channel or (channel, y, x), got {tuple(unit)!r}")


def check_unit(act_shape: Sequence[int], unit: Unit, layer: str = "layer") -> None:
    """One-line DeepVisError when `unit` does not exist in an activation of shape [N, C, (H, W)]."""
    channels = act_shape[1] if len(act_shape) > 1 else 1
    if not 0 <= unit.channel < channels:
        raise DeepVisError(f"unit {unit.channel} out of range for {layer} with {channels} channels "
                           f"(valid: 0..{channels - 1})")
    if unit.objective != "neuron" or (unit.y is None and unit.x is None):
        return
    if len(act_shape) != 4:
        raise DeepVisError(f"{layer} has no spatial positions (shape {tuple(act_shape[1:])}); omit --y/--x")
    h, w = act_shape[2], act_shape[3]
    y = unit.y if unit.y is not None else 0
    x = unit.x if unit.x is not None else 0
    if not (0 <= y < h and 0 <= x < w):
        raise DeepVisError(f"position (y={unit.y}, x={unit.x}) out of range for {layer} of size {h}x{w} "
                           f"(valid: y 0..{h - 1}, x 0..{w - 1})")


def resolve_unit(act: Tensor, unit: Unit) -> Unit:
    """Fill a neuron's missing (y, x) from the channel's argmax in image 0 of `act`."""
    if unit.objective != "neuron" or act.dim() != 4 or (unit.y is not None and unit.x is not None):
        return unit
    chan = act[0, unit.channel].detach()
    if unit.y is not None:
        return replace(unit, x=int(chan[unit.y].argmax()))
    if unit.x is not None:
        return replace(unit, y=int(chan[:, unit.x].argmax()))
    flat = int(chan.flatten().argmax())
    return replace(unit, y=flat // chan.shape[1], x=flat % chan.shape[1])


def unit_objective(act: Tensor, unit: Unit) -> Tensor:
    """Scalar to differentiate, summed over the batch (images are independent in eval mode).

    For `neuron` with y/x unset, every image uses its own argmax position; `logit`/`prob` expect `act` to be
    the network output [N, classes].
    """
    c = unit.channel
    if unit.objective in ("logit", "prob"):
        out = act.flatten(1)
        if unit.objective == "prob":
            out = out.softmax(dim=1)
        return out[:, c].sum()
    chan = act[:, c]
    if unit.objective == "channel":
        return chan.sum()
    if unit.objective == "seed":
        return (chan * chan.detach()).sum()
    if chan.dim() == 1:  # a fully connected layer: the neuron is the channel
        return chan.sum()
    if unit.y is not None and unit.x is not None:
        return chan[:, unit.y, unit.x].sum()
    if unit.y is not None:
        return chan[:, unit.y].max(dim=1).values.sum()
    if unit.x is not None:
        return chan[:, :, unit.x].max(dim=1).values.sum()
    return chan.flatten(1).max(dim=1).values.sum()  # max = the value at the per-image argmax


# --------------------------------------------------------------------------------------------------------------
# The context and explanations


@dataclass
class Explanation:
    """Result of `explain`: attribution maps (detached) keyed by method, plus the resolved unit.

    gradient/deconv/guided/input_x_gradient/guided_gradcam are shaped like x; saliency and gradcam are
    [N, 1, H, W] (gradcam upsampled to the input size, >= 0).
    """

    unit: Unit
    maps: dict[str, Tensor]

    def __getitem__(self, method: str) -> Tensor:
        return self.maps[method]


class AttributionContext:
    """Run forwards inside it so ReLU-family ops carry switchable backward rules.

    >>> with AttributionContext() as ac, Probe(net, [layer]) as probe:
    ...     logits = net(x.requires_grad_())      # the frame's forward, done once
    >>> exp = ac.explain(x, probe[layer], Unit(5), methods=("gradient", "deconv", "guided"))

    Entering pushes a TorchFunctionMode (thread-local) and leaving pops it, also after an exception; the
    model is never modified. `explain`/`grad` may be called after leaving: the rules live in the graph.
    Forwards with grad disabled or an input that does not require grad pass through untouched.
    """

    def __init__(self, net: nn.Module | None = None) -> None:
        self.net = net
        self._state = _RuleState()
        self._mode: _RectifierMode | None = None

    @property
    def rectifier_calls(self) -> int:
        """How many ReLU-family calls got the switchable rule in forwards run inside this context."""
        return self._state.calls

    @property
    def deconv_static(self) -> bool:
        """True when the deconvnet maps of this context's graph cannot depend on the input: every recorded op
        is linear with a fixed backward, a rectifier or inference BatchNorm (no max-pooling switches, gating,
        smooth activations...). Such maps may be cached per unit and position (`DeconvCache`)."""
        return self._state.deconv_static

    def __enter__(self) -> AttributionContext:
        if self._mode is not None:
            raise RuntimeError("AttributionContext is not reentrant")
        if isinstance(self.net, torch.jit.ScriptModule):
            raise DeepVisError("attribution needs an eager nn.Module: TorchScript modules bypass the "
                               "ReLU rules (load the model without torch.jit)")
        self._mode = _RectifierMode(self._state)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        mode, self._mode = self._mode, None
        if mode is not None:
            mode.__exit__(None, None, None)

    def grad(self, objective: Tensor, inputs: Tensor | Sequence[Tensor], rule: str = "gradient", *,
             retain_graph: bool = True) -> tuple[Tensor, ...]:
        """`torch.autograd.grad(objective, inputs)` with ReLU-family nodes using `rule`."""
        if rule not in RULES:
            raise DeepVisError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
        inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
        with self._state.lock:
            self._state.rule = rule
            self._state.dense = False
            try:
                return torch.autograd.grad(objective, inputs, retain_graph=retain_graph, allow_unused=True)
            finally:
                self._state.rule = "gradient"

    def explain(self, x: Tensor, activation: Tensor, unit: Unit | int | Sequence[int],
                methods: Iterable[str] = ("gradient", "deconv", "guided"), *,
                cam_activation: Tensor | None = None, retain_graph: bool = False,
                deconv_cache: DeconvCache | None = None, layer: str = "") -> Explanation:
        """Attribution maps of one unit of `activation` w.r.t. `x`, all from the existing graph.

        x: the forward's input (requires_grad, forward run inside this context). activation: the unit's layer
        output captured by `Probe` in that forward (or the logits for `logit`/`prob` units).
        cam_activation: the Grad-CAM layer's captured output (default: `activation`). Each needed rule costs
        one partial backward (from the unit's layer down to x); saliency and gradient x input reuse the
        gradient. retain_graph=False frees the graph after the last backward.
        deconv_cache (with the unit's `layer` name): where the deconvnet map cannot depend on the input
        (`deconv_static`), a neuron's map is computed once per (layer, channel, position, input shape) and reused.
        """
        methods = tuple(dict.fromkeys(methods))
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise DeepVisError(f"unknown method {bad[0]!r}; use one of {', '.join(METHODS)}")
        if not x.requires_grad:
            raise DeepVisError("explain needs the forward's input with requires_grad=True")
        unit = Unit.coerce(unit)
        if unit.objective not in ("logit", "prob"):
            check_unit(activation.shape, unit)
        unit = resolve_unit(activation, unit)
        objective = unit_objective(activation, unit)
        if objective.grad_fn is None:
            raise DeepVisError("the activation is not connected to x: run the forward inside the context "
                               "with x.requires_grad_() and Probe(detach=False)")

        rules: list[str] = []
        if {"gradient", "saliency", "input_x_gradient"} & set(methods):
            rules.append("gradient")
        if "deconv" in methods:
            rules.append("deconv")
        if {"guided", "guided_gradcam"} & set(methods):
            rules.append("guided")
        want_cam = bool({"gradcam", "guided_gradcam"} & set(methods))
        cam_act = activation if cam_activation is None else cam_activation

        grads: dict[str, Tensor] = {}
        static_key = None
        if deconv_cache is not None and "deconv" in rules and self.deconv_static and unit.objective == "neuron":
            static_key = (layer, unit.channel, unit.y, unit.x, tuple(x.shape), x.dtype, x.device)
            hit = deconv_cache.get(static_key)
            if hit is not None:
                grads["deconv"] = hit
                rules.remove("deconv")
                static_key = None
        cam_grad = None
        jobs = list(rules)
        if want_cam and "gradient" not in jobs:
            jobs.insert(0, "cam")
        for i, rule in enumerate(jobs):
            keep = retain_graph or i < len(jobs) - 1
            if rule == "cam":
                (cam_grad,) = self.grad(objective, cam_act, "gradient", retain_graph=keep)
                continue
            if rule == "gradient" and want_cam:
                gx, cam_grad = self.grad(objective, (x, cam_act), "gradient", retain_graph=keep)
            else:
                (gx,) = self.grad(objective, x, rule, retain_graph=keep)
            grads[rule] = torch.zeros_like(x) if gx is None else gx
        if static_key is not None:
            deconv_cache.put(static_key, grads["deconv"])

        maps: dict[str, Tensor] = {}
        for m in methods:
            if m in RULES:
                maps[m] = grads[m]
            elif m == "saliency":
                maps[m] = grads["gradient"].abs().amax(dim=1, keepdim=True)
            elif m == "input_x_gradient":
                maps[m] = grads["gradient"] * x.detach()
        if want_cam:
            cam = gradcam_map(cam_act.detach(), cam_grad, tuple(x.shape[-2:]))
            if "gradcam" in methods:
                maps["gradcam"] = cam
            if "guided_gradcam" in methods:
                maps["guided_gradcam"] = grads["guided"] * cam
        return Explanation(unit, maps)


class DeconvCache:
    """Deconvnet maps of neurons on nets where they cannot depend on the image (see
    `AttributionContext.deconv_static`): the live view computes each (layer, channel, position) once instead of
    one backward per frame. A map is zero outside the unit's receptive field, so only its nonzero box is kept:
    an early layer's thousands of positions fit as well as a deep layer's few whole-image maps. Least recently
    used maps go first once `max_bytes` is reached; one cache per model (clear it on a change)."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.bytes = 0
        self._maps: OrderedDict[tuple, tuple[Tensor, int, int, torch.Size]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._maps)

    def get(self, key: tuple) -> Tensor | None:
        found = self._maps.get(key)
        if found is None:
            self.misses += 1
            return None
        self._maps.move_to_end(key)
        self.hits += 1
        box, top, left, shape = found
        full = box.new_zeros(shape)
        full[..., top:top + box.shape[-2], left:left + box.shape[-1]] = box
        return full

    def put(self, key: tuple, value: Tensor) -> None:
        value = value.detach()
        rows = torch.nonzero(value.abs().flatten(0, -3).amax(dim=(0, -1)))
        cols = torch.nonzero(value.abs().flatten(0, -3).amax(dim=(0, -2)))
        if len(rows) and len(cols):
            top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        else:
            top = bottom = left = right = 0
        box = value[..., top:bottom, left:right].clone()
        if key in self._maps:
            self.bytes -= self._maps.pop(key)[0].nbytes
        self._maps[key] = (box, top, left, value.shape)
        self.bytes += box.nbytes
        while self.bytes > self.max_bytes and len(self._maps) > 1:
            self.bytes -= self._maps.popitem(last=False)[1][0].nbytes

    def clear(self) -> None:
        self._maps.clear()
        self.bytes = 0


class GraphCut:
    """Record the autograd graph only up to one layer's output; the rest of the forward runs without grad.

    >>> with AttributionContext(net) as ac, Probe(net, [layer]) as probe, GraphCut(net, layer, x):
    ...     logits = net(x.requires_grad_())   # graph up to `layer`; logits computed under no_grad

    A unit's attribution backpropagates from its layer down, so the graph (and saved tensors) of everything
    after it is dead weight: cutting there makes the live frame's forward cheaper and its values identical
    (the same ops run; only autograd recording stops). `layer` is a Probe name (`name` or `name@k`); a bare
    name of a reused module means its last call (counts from `probe.call_counts`, one cached forward per
    net). Enter it after `Probe`, so the probe captures the layer's output before grad is switched off.
    Grad mode is restored on exit, also after an exception.
    """

    def __init__(self, net: nn.Module, layer: str, example: Tensor) -> None:
        name, call = split_layer(layer)
        modules = dict(net.named_modules())
        if name not in modules or name == "":
            raise DeepVisError(f"unknown layer {layer!r}")
        if call is None:
            call = max(call_counts(net, example.detach())[0].get(name, 1), 1) - 1
        self.net, self.module, self.call = net, modules[name], call
        self._calls = 0
        self._grad_was: bool | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> GraphCut:
        self._grad_was = torch.is_grad_enabled()
        try:
            self._handles.append(self.net.register_forward_pre_hook(self._reset))
            self._handles.append(self.module.register_forward_hook(self._hook))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._grad_was is not None:
            torch.set_grad_enabled(self._grad_was)

    def _reset(self, _module: nn.Module, _inputs: object) -> None:
        self._calls = 0
        if self._grad_was is not None:
            torch.set_grad_enabled(self._grad_was)

    def _hook(self, _module: nn.Module, _inputs: object, _output: object) -> None:
        if self._calls == self.call:
            torch.set_grad_enabled(False)
        self._calls += 1


def attribution_context(net: nn.Module | None = None) -> AttributionContext:
    """`with attribution_context(net) as ac:` -- see `AttributionContext`."""
    return AttributionContext(net)


def gradcam_map(activation: Tensor, grad: Tensor | None, size: tuple[int, int]) -> Tensor:
    """relu(sum_c w_c A_c) with w_c the spatial mean of d(objective)/dA_c, bilinearly upsampled to `size`."""
    if activation.dim() != 4:
        raise DeepVisError(f"Grad-CAM needs a layer with spatial positions, got shape {tuple(activation.shape)}")
    if grad is None:
        grad = torch.zeros_like(activation)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activation).sum(dim=1, keepdim=True).clamp(min=0)
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------------------
# One-call API for plain modules


def _output_tensor(out: object) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)  # torchvision's GoogLeNetOutputs / InceptionOutputs
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise DeepVisError(f"cannot find the logits in the model output of type {type(out).__name__}")


def explain_unit(net: nn.Module, x: Tensor, layer: str | None, unit: Unit | int | Sequence[int],
                 methods: Iterable[str] = ("gradient", "deconv", "guided"), *, objective: str = "neuron",
                 cam_layer: str | None = None) -> Explanation:
    """One forward of `net` on `x` (not modified) plus the partial backwards `methods` need.

    layer: a Probe layer name (`name` or `name@k`); may be None for `logit`/`prob` objectives. cam_layer:
    the Grad-CAM layer (default: `layer`; for class objectives without a layer, required for Grad-CAM).
    """
    unit = Unit.coerce(unit, objective)
    methods = tuple(methods)
    wants_cam = bool({"gradcam", "guided_gradcam"} & set(methods))
    cam = cam_layer or layer
    if wants_cam and cam is None:
        raise DeepVisError("Grad-CAM of a class needs a layer: pass cam_layer (e.g. the last conv block)")
    if layer is None and unit.objective not in ("logit", "prob"):
        raise DeepVisError(f"objective {unit.objective!r} needs a layer")
    layers = [name for name in dict.fromkeys([layer, cam if wants_cam else None]) if name]
    xin = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), AttributionContext(net) as ac, Probe(net, layers) as probe:
        out = net(xin)
    act = _output_tensor(out) if unit.objective in ("logit", "prob") else probe[layer]
    cam_act = probe[cam] if wants_cam else None
    return ac.explain(xin, act, unit, methods, cam_activation=cam_act)


def attribute(net: nn.Module, x: Tensor, layer: str | None = None, unit: Unit | int | Sequence[int] = 0,
              method: str = "guided", *, objective: str = "neuron", cam_layer: str | None = None) -> Tensor:
    """Attribution of one unit of `net` w.r.t. the input `x` by `method` (see METHODS).

    >>> attribute(net, x, layer="layer3", unit=(5, 3, 4), method="guided")   # Tensor shaped like x

    unit: channel `c` (neuron at the channel's argmax, or the whole channel / seed with `objective`) or
    (c, y, x); for objective="logit"/"prob" the class index (layer may be None). Saliency and gradcam return
    [N, 1, H, W]; the other methods return a tensor shaped like x. The model is left exactly as it was.
    """
    return explain_unit(net, x, layer, unit, (method,), objective=objective, cam_layer=cam_layer)[method]


# --------------------------------------------------------------------------------------------------------------
# Views


def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a [N, C, H, W] tensor on its device; borders reflected (replicated when the
    image is smaller than the kernel), so edges keep their brightness."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    c = img.shape[1]
    pad = F.pad(img, (radius, radius, radius, radius), mode="reflect") if min(img.shape[-2:]) > radius \
        else F.pad(img, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(pad, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _scale(values: Tensor, percentile: float) -> Tensor:
    """The value mapped to full brightness: the max, or a high percentile so one hot pixel cannot make
    the whole image dark (values above it saturate). The percentile is taken over the pixels the signal
    reaches (non-zero): a unit with an 11-pixel receptive field has zeros almost everywhere, and a percentile
    over the whole image would be 0 and turn its patch into a white block."""
    tiny = torch.finfo(torch.float32).tiny
    if percentile >= 100.0:
        return values.amax().clamp_min(tiny)
    flat = values.flatten()
    flat = flat[flat > 0]
    if flat.numel() == 0:
        return torch.tensor(tiny, device=values.device)
    if flat.numel() > 4_000_000:  # torch.quantile's size limit; a strided sample is plenty
        flat = flat[:: flat.numel() // 4_000_000 + 1]
    return torch.quantile(flat, percentile / 100.0).clamp_min(tiny)


def render_view(attr: Tensor, view: str = "raw", *, blur_sigma: float | None = None,
                percentile: float = 100.0) -> np.ndarray:
    """Attribution Tensor[1, C, H, W] (C = 3 or 1) -> uint8 HxWx3, as the old toolbox showed it.

    raw: signed, 0.5 + x / (2 max|x|) per channel; gray: channel mean, same scaling; norm: |x| summed over
    channels, divided by its max; normblur: norm, Gaussian blur (sigma default 4 px at 224 px), renormalized.
    All on the tensor's device; only the final uint8 image crosses to the host. An all-zero map renders
    mid-gray (raw/gray) or black (norm/normblur). `percentile` < 100 scales by that percentile of the
    magnitudes instead of the max (values beyond it saturate): the live inspector uses 99.5, since a few
    extreme pixels otherwise leave a guided-backprop image nearly black.
    """
    if view not in VIEWS:
        raise DeepVisError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    if attr.dim() == 3:
        attr = attr.unsqueeze(0)
    if attr.dim() != 4 or attr.shape[1] not in (1, 3):
        raise DeepVisError(f"render_view expects [1, 3|1, H, W], got {tuple(attr.shape)}")
    a = attr[:1].detach().float()
    tiny = torch.finfo(torch.float32).tiny
    if view in ("raw", "gray"):
        if view == "gray":
            a = a.mean(dim=1, keepdim=True)
        img = (0.5 + a / (2 * _scale(a.abs(), percentile))).clamp(0, 1)
    else:
        img = a.abs().sum(dim=1, keepdim=True)
        img = (img / _scale(img, percentile)).clamp(0, 1)
        if view == "normblur":
            sigma = blur_sigma if blur_sigma is not None else max(1.0, 4.0 * a.shape[-1] / 224)
            img = gaussian_blur(img, sigma)
            img = img / img.amax().clamp_min(tiny)
    img = img.expand(1, 3, -1, -1)
    out = (img[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return out.contiguous().cpu().numpy()
