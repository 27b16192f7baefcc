"""Fused backward nodes: conv -> eval BatchNorm (-> rectifier) chains, crop boxes, folded-weight caches.

These are performance-critical (docs/attribution.md has the measured figures): a neuron's backward through a
chain is one rule pass plus one transposed conv (on the CPU cropped to the gradient's nonzero box while it is
small), with BN's scale folded into the conv weight once per set of tensors. The forward still runs the native
ops (values bit-identical); `rules.RectifierMode` decides which calls get these nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from .. import devices
from . import kernels

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
        """The conv's input gradient (`kernels.chain_backward`: cropped to the gradient's nonzero box while it is
        small, on the CPU only (`box_crops`); a matrix product for 1x1 and few-channel convs; the flipped kernel's
        conv for stride-1 depthwise ones)."""
        state = self.state
        crop = state is not None and not state.dense and box_crops(grad)
        flip = self.flipped
        box = known_box(grad)
        out, out_box, how = kernels.compiled(kernels.chain_backward)(
            grad, list(box) if box is not None else [], crop, self.x, self.weight, flip[0] if flip else None,
            flip[1] if flip else [0, 0], list(self.stride), list(self.padding), list(self.dilation), self.groups,
            list(self.pad) if self.pad is not None else [], grad.device.type == "cpu")
        if state is not None:
            state.chain_steps.append(how)
            state.dense = state.dense or how == kernels.SPREAD
        return _with_box(out, tuple(out_box)) if out_box else out

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
        weight = self.weight  # the folded weight, itself made once per set of tensors
        return _cached(_FLIPS, weight, (_stamp(weight),), lambda: weight.flip(-2, -1)), pad


def box_crops(grad: Tensor) -> bool:
    """Whether a backward may be cropped to the gradient's nonzero box: on the CPU only. Finding the box reads it
    on the host (a few device syncs per chain on a GPU) and gives every frame new shapes (cuDNN would plan its
    algorithms anew each time), while a GPU runs the dense transposed conv in microseconds."""
    return devices.host_reads_free(grad)


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
_FLIPS: WeakIdKeyDictionary = WeakIdKeyDictionary()  # depthwise weight -> (stamp, kernel flipped): asked every frame
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


def cached_tensors() -> list[Tensor]:
    """The scales, folded weights and flipped kernels made so far: the constants a recorded graph may hold besides
    the model's own parameters (`replay` tells them from the frame's tensors)."""
    with _CACHE_LOCK:
        return [hit[1] for cache in (_SCALES, _FOLDS, _FLIPS) for hit in cache.values()]


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

