"""Fused backward nodes: conv -> eval BatchNorm (-> rectifier) chains, crop boxes, folded-weight caches.

These are performance-critical (docs/attribution.md has the measured figures): a neuron's backward through a
chain is one rule pass plus one transposed conv (on the CPU cropped to the gradient's nonzero box while it is
small), with BN's scale folded into the conv weight once per set of tensors. The forward still runs the native
ops (values bit-identical); `rules.RectifierMode` decides which calls get these nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .. import devices

if TYPE_CHECKING:
    from .rules import RuleState


# A gradient whose nonzero part is known (the crop below made it) carries its box, so the next chain need not
# search a whole map for it: (row0, row1, col0, col1) and the tensor's version (an in-place change voids it).
_BOX = "_deepvis_box"


def _with_box(t: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    setattr(t, _BOX, (box, t._version))
    return t


def known_box(t: Tensor) -> tuple[int, int, int, int] | None:
    """The nonzero box a crop gave `t` (None when unknown or `t` changed in place since)."""
    tag = getattr(t, _BOX, None)
    return tag[0] if isinstance(tag, tuple) and len(tag) == 2 and tag[1] == t._version else None


def carry_box_to(t: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """Give `t` a nonzero box known from its parts (the stacked views of `stacked`)."""
    return _with_box(t, box)


def carry_box(src: Tensor, dst: Tensor) -> Tensor:
    """`dst`, computed elementwise from `src` with zeros kept zero, gets `src`'s known box."""
    box = known_box(src)
    return dst if box is None else _with_box(dst, box)


# Conv -> eval BatchNorm (-> rectifier) chains get one autograd node each: BN's per-channel scale is folded into
# the conv's weight for the backward, and the rule is applied once, so the backward of the chain is one rule
# pass plus one transposed conv instead of rule, multiply and convolution_backward, each with a fresh tensor.
# The forward still runs the native ops one by one (bit-identical values); the fused node only adds a shortcut
# edge from the chain's output to the conv's input. The intermediate outputs keep their own nodes, so a unit on
# the conv or BN output (or any other use of them) is still differentiated exactly.
_CHAIN = "_deepvis_chain"  # attribute on a conv / conv+BN output: (the Chain that produced it, its version)


def tag_chain(out: Tensor, chain: Chain) -> None:
    """Mark `out` as the output of `chain` (a later BN or rectifier of it joins the chain)."""
    setattr(out, _CHAIN, (chain, out._version))


def chain_of(x: Tensor) -> Chain | None:
    """The chain that produced `x`, unless `x` was modified in place since (say a residual `out += identity`)."""
    tag = getattr(x, _CHAIN, None)
    if isinstance(tag, tuple) and len(tag) == 2 and isinstance(tag[0], Chain) and tag[1] == x._version:
        return tag[0]
    return None


@dataclass(frozen=True)
class Chain:
    """A conv (with a zero pad before it and a BN after it folded in): what its fused node needs to send a
    gradient straight from the chain's output to the conv's input."""

    x: Tensor  # the conv's input (before a zero pad folded into the chain)
    weight: Tensor  # the conv weight (times BN's scale once BN is folded in)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    pad: tuple[int, int, int, int] | None = None  # an uneven zero pad (left, right, top, bottom) before the conv
    state: RuleState | None = None  # the context's, for its `dense` flag

    def backward(self, grad: Tensor) -> Tensor:
        """The conv's input gradient. A neuron's gradient starts as one pixel and spreads a kernel per layer: while
        it covers at most a quarter of the map, only its nonzero box is transposed-convolved (exact: the rest is
        zero). Two shapes take a matrix product instead of `convolution_backward`, which measured 1.3-8x slower
        for them on the CPU: 1x1 convs, and convs reading a few channels (an RGB stem, 3x3 or 7x7), whose columns
        are added back tap by tap (`_fold_taps`). The crop is for the CPU only (`box_crops`)."""
        h, w = grad.shape[-2:]
        if self.state is not None and not self.state.dense and h * w >= _BOX_MIN_AREA and box_crops(grad):
            box = known_box(grad) or nonzero_box(grad)
            if box is None:
                return self._input_zeros(grad.shape[0], grad.dtype)
            r0, r1, c0, c1 = box
            if 4 * (r1 - r0) * (c1 - c0) <= h * w:
                return self.box_backward(grad[:, :, r0:r1, c0:c1], r0, c0)
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

    def box_backward(self, part: Tensor, r0: int, c0: int) -> Tensor:
        """Input gradient of an output gradient that is zero outside `part` (its top-left at output (r0, c0))."""
        kh, kw = self.weight.shape[-2:]
        extent = [(part.shape[2 + i] - 1) * self.stride[i] + self.dilation[i] * ((kh, kw)[i] - 1) + 1
                  for i in range(2)]
        if self.pointwise:
            n, co, bh, bw = part.shape
            spread = torch.matmul(self.weight.view(co, -1).t(), part.reshape(n, co, bh * bw)).view(n, -1, bh, bw)
        else:
            mf = _memory_format(self.x)
            like = torch.empty((part.shape[0], self.x.shape[1], *extent), dtype=part.dtype, device=part.device,
                               memory_format=mf)
            part = part.contiguous(memory_format=mf)
            spread = torch.ops.aten.convolution_backward(  # = conv_transpose2d, without its slow grouped CPU path
                part, like, self.weight, None, list(self.stride), [0, 0], list(self.dilation), False, [0, 0],
                self.groups, [True, False, False])[0]
        top, left = (self.pad[2], self.pad[0]) if self.pad is not None else (0, 0)
        y = r0 * self.stride[0] - self.padding[0] - top  # where spread's first row lands in the input
        x = c0 * self.stride[1] - self.padding[1] - left
        h, w = self.x.shape[-2:]
        full = self._input_zeros(part.shape[0], part.dtype)  # in the input's layout
        y0, y1 = max(y, 0), min(y + spread.shape[-2], h)
        x0, x1 = max(x, 0), min(x + spread.shape[-1], w)
        if y0 < y1 and x0 < x1:
            full[:, :, y0:y1, x0:x1] = spread[:, :, y0 - y:y1 - y, x0 - x:x1 - x]
            return _with_box(full, (y0, y1, x0, x1))
        return full

    def _dense_backward(self, grad: Tensor) -> Tensor:
        n, co = grad.shape[:2]  # n: the input's batch, or several views of it stacked (`stacked`)
        ci, kh, kw = self.weight.shape[1:]
        h, w = self.x.shape[-2:]
        shape = (n, *self.x.shape[1:])
        left, right, top, bottom = self.pad if self.pad is not None else (0, 0, 0, 0)
        padded = (h + top + bottom, w + left + right)  # the shape the kernel read (an uneven pad: cut out after)
        cpu = grad.device.type == "cpu"
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
                return torch.matmul(w2.t(), chans).view(shape)
        if cpu and self.groups == 1 and ci <= _FEW_INPUT_CHANNELS:
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
            like = torch.empty((n, self.x.shape[1], *padded), dtype=grad.dtype, device=grad.device,
                               memory_format=_memory_format(self.x))
            g = torch.ops.aten.convolution_backward(
                grad, like, self.weight, None, list(self.stride), list(self.padding), list(self.dilation), False,
                [0, 0], self.groups, [True, False, False])[0]
            return g[:, :, top:top + h, left:left + w]
        like = self.x if self.x.shape[0] == n else torch.empty(shape, dtype=self.x.dtype, device=self.x.device,
                                                                memory_format=_memory_format(self.x))
        return torch.ops.aten.convolution_backward(
            grad, like, self.weight, None, list(self.stride), list(self.padding), list(self.dilation), False,
            [0, 0], self.groups, [True, False, False])[0]

    def _input_zeros(self, n: int, dtype: torch.dtype) -> Tensor:
        """Zeros shaped like the conv's input with batch `n`, in its layout."""
        if n == self.x.shape[0]:
            return torch.zeros_like(self.x, dtype=dtype)
        return torch.empty((n, *self.x.shape[1:]), dtype=dtype, device=self.x.device,
                           memory_format=_memory_format(self.x)).zero_()


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


# A conv reading at most this many channels (an RGB stem) has its input gradient made by a matrix product and one
# strided add per tap (`_fold_taps`): ResNet's 7x7 stem on 2 threads 3.98 -> 2.06 ms for one image, 11.6 -> 7.2 ms
# for three stacked views; 1 thread 8.7 -> 3.8 ms (EfficientNet-Lite0's 3x3 stem: 1.3-8x, docs/attribution.md).
_FEW_INPUT_CHANNELS = 4

# Smallest map whose backward is cropped: below it, finding the box and pasting it into a zeroed map cost as much
# as the whole transposed conv (measured in place on EfficientNet-Lite0's 14x14 stage: no gain, 0.4 ms lost).
_BOX_MIN_AREA = 28 * 28


def box_crops(grad: Tensor) -> bool:
    """Whether a backward may be cropped to the gradient's nonzero box: on the CPU only. Finding the box reads it
    on the host (a few device syncs per chain on a GPU) and gives every frame new shapes (cuDNN would plan its
    algorithms anew each time), while a GPU runs the dense transposed conv in microseconds."""
    return devices.host_reads_free(grad)


def nonzero_box(grad: Tensor) -> tuple[int, int, int, int] | None:
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


def conv_chain(args: tuple, kwargs: dict, state: RuleState | None = None) -> Chain | None:
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
    return Chain(x, w, _pair(p.get("stride", 1)), padding, _pair(p.get("dilation", 1)),
                  int(p.get("groups", 1)), pad, state)


def _memory_format(t: Tensor) -> torch.memory_format:
    return torch.channels_last if not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


_PADDED = "_deepvis_padded"  # attribute on a zero-padded 4-d tensor: (unpadded input, (l, r, t, b), version)


def tag_padding(args: tuple, kwargs: dict, out: object) -> None:
    """Remember a zero `F.pad`'s input and sides on its output, so the conv that reads it can fold the pad in."""
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
                bias: Tensor | None, eps: float, chain: Chain) -> Tensor:
        ctx.chain = chain
        return F.batch_norm(conv_out, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (ctx.chain.backward(grad),) + (None,) * 7


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
        return carry_box(grad, grad * ctx.scale), None, None, None, None, None


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


def eval_batch_norm(args: tuple, kwargs: dict) -> Tensor | None:
    """Route an inference-mode F.batch_norm whose only differentiable argument is the input; else None."""
    p = dict(zip(_BN_ARGS, args, strict=False)) | kwargs
    x, mean, var = p.get("input"), p.get("running_mean"), p.get("running_var")
    if p.get("training", False) or not isinstance(x, Tensor) or not x.requires_grad or x.dim() < 2:
        return None
    rest = (mean, var, p.get("weight"), p.get("bias"))
    if mean is None or var is None or any(t is not None and t.requires_grad for t in rest):
        return None
    eps = float(p.get("eps", 1e-5))
    chain = chain_of(x)
    if chain is not None and x.shape[1] == chain.weight.shape[0]:
        folded = replace(chain, weight=_folded_weight(chain.weight, var, p.get("weight"), eps))
        out = _ChainBatchNorm.apply(chain.x, x.detach(), mean, var, p.get("weight"), p.get("bias"), eps, folded)
        tag_chain(out, folded)
        return out
    return _EvalBatchNorm.apply(x, mean, var, p.get("weight"), p.get("bias"), eps)

