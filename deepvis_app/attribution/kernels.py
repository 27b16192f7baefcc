"""The arithmetic of the backward rules and conv chains as TorchScript functions, compiled once per process.

Why TorchScript: a Python backward hands the GIL back around every op and every temporary tensor it frees (~250
times in a guided backward of EfficientNet-Lite0's `_blocks.3`, counted under gdb), and whenever the window's
GUI thread runs Python meanwhile, the backward waits for it at each of those points. A compiled function runs
all its ops in C++ with the GIL released once. `program` runs a whole backward through these kernels in one
call; `fused.Chain` and `rules.rule_backward` call the same ones, so each piece of arithmetic exists once.

Boxes are `[row0, row1, col0, col1]` (an empty list: unknown). An `upper` of -1.0 stands for "no ceiling" (ReLU).
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch
from torch import Tensor

# The rules' codes inside compiled code (TorchScript reads no module constants: the functions spell them out)
RULE_CODES = {"gradient": 0, "deconv": 1, "guided": 2}


def few_input_channels() -> int:
    """A conv reading at most this many channels (an RGB stem) has its input gradient made by a matrix product
    and one strided add per tap (`fold_taps`): ResNet's 7x7 stem on 2 threads 3.98 -> 2.06 ms for one image,
    11.6 -> 7.2 ms for three stacked views; 1 thread 8.7 -> 3.8 ms (EfficientNet-Lite0's 3x3 stem: 1.3-8x,
    docs/attribution.md)."""
    return 4


def box_min_area() -> int:
    """Smallest map whose backward is cropped: below it, finding the box and pasting it into a zeroed map cost
    as much as the whole transposed conv (measured in place on EfficientNet-Lite0's 14x14 stage: no gain, 0.4 ms
    lost)."""
    return 28 * 28


def rule_grad(grad: Tensor, out: Tensor, rule: int, upper: float) -> Tensor:
    """A rectifier's input gradient under `rule` (out: its saved output; zeros stay zeros, so a box carries over)."""
    if rule == 1:  # deconv
        return grad.clamp(min=0.0)
    if rule == 2:  # guided
        # Springenberg's ReLU mask [x > 0] at every rectifier, also at ReLU6: a unit saturated at the ceiling
        # (common in EfficientNet-Lite) would otherwise explain nothing.
        return torch.ops.aten.threshold_backward(grad, out, 0.0).clamp_(min=0.0)
    if upper < 0.0:
        return torch.ops.aten.threshold_backward(grad, out, 0.0)
    return torch.ops.aten.hardtanh_backward(grad, out, 0.0, upper)


def rules_grad(grad: Tensor, out: Tensor, rules: list[int], upper: float) -> Tensor:
    """Views stacked along the batch (`stacked`): each slice gets its own rule, against the one saved output."""
    if len(rules) == 1:
        return rule_grad(grad, out, rules[0], upper)
    parts = grad.chunk(len(rules), 0)
    return torch.cat([rule_grad(parts[i], out, rules[i], upper) for i in range(len(rules))], 0)


def channels_last(t: Tensor) -> bool:
    """Whether `t` is laid out channels-last (and not also plainly contiguous)."""
    return (not t.is_contiguous()) and t.is_contiguous(memory_format=torch.channels_last)


def input_zeros(x: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """Zeros shaped like `x` with batch `n`, in its layout."""
    if n == x.shape[0]:
        return torch.zeros_like(x, dtype=dtype)
    return empty_like_input(x, n, x.shape[2], x.shape[3], dtype).zero_()


def empty_like_input(x: Tensor, n: int, h: int, w: int, dtype: torch.dtype) -> Tensor:
    """An uninitialized [n, C, h, w] tensor in `x`'s layout (C: x's channels)."""
    if channels_last(x):
        return torch.empty([n, x.shape[1], h, w], dtype=dtype, device=x.device, memory_format=torch.channels_last)
    return torch.empty([n, x.shape[1], h, w], dtype=dtype, device=x.device)


def empty_box() -> list[int]:
    """An unknown box (TorchScript needs the list's type)."""
    box: list[int] = []
    return box


def nonzero_box(grad: Tensor) -> list[int]:
    """The nonzero part of a [N, C, H, W] gradient, or [] when it is all zero."""
    m = grad.abs().amax(dim=[0, 1])
    rows = torch.nonzero(m.amax(dim=1)).flatten()
    if rows.numel() == 0:
        return []
    cols = torch.nonzero(m.amax(dim=0)).flatten()
    return [int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1]


def union_box(a: list[int], b: list[int]) -> list[int]:
    """The box of a sum of two gradients ([] when either is unknown)."""
    if len(a) == 0 or len(b) == 0:
        return []
    return [min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])]


def is_pointwise(weight: Tensor, stride: list[int], padding: list[int], groups: int, pad: list[int]) -> bool:
    """A plain 1x1 conv: its transposed conv is one matrix product."""
    return (groups == 1 and weight.shape[2] == 1 and weight.shape[3] == 1 and stride[0] == 1 and stride[1] == 1
            and padding[0] == 0 and padding[1] == 0 and len(pad) == 0)


def box_spread(part: Tensor, r0: int, c0: int, x: Tensor, weight: Tensor, stride: list[int],
               padding: list[int], dilation: list[int], groups: int, pad: list[int]) -> tuple[Tensor, list[int]]:
    """A conv's input gradient of an output gradient that is zero outside `part` (top-left at output (r0, c0)),
    as its nonzero part and that part's box in the input (an empty box: it falls outside). x: the conv's input
    (before a pad folded in as `pad` = [left, right, top, bottom])."""
    kh, kw = weight.shape[2], weight.shape[3]
    eh = (part.shape[2] - 1) * stride[0] + dilation[0] * (kh - 1) + 1
    ew = (part.shape[3] - 1) * stride[1] + dilation[1] * (kw - 1) + 1
    if is_pointwise(weight, stride, padding, groups, pad):
        n, co, bh, bw = part.shape[0], part.shape[1], part.shape[2], part.shape[3]
        spread = torch.matmul(weight.view(co, -1).t(), part.reshape(n, co, bh * bw)).view(n, -1, bh, bw)
    else:
        like = empty_like_input(x, part.shape[0], eh, ew, part.dtype)
        if channels_last(x):
            part = part.contiguous(memory_format=torch.channels_last)
        else:
            part = part.contiguous()
        spread = torch.ops.aten.convolution_backward(  # = conv_transpose2d, without its slow grouped CPU path
            part, like, weight, None, stride, [0, 0], dilation, False, [0, 0], groups, [True, False, False])[0]
    top, left = 0, 0
    if len(pad) == 4:
        top, left = pad[2], pad[0]
    y = r0 * stride[0] - padding[0] - top  # where spread's first row lands in the input
    xx = c0 * stride[1] - padding[1] - left
    h, w = x.shape[2], x.shape[3]
    y0, y1 = max(y, 0), min(y + spread.shape[2], h)
    x0, x1 = max(xx, 0), min(xx + spread.shape[3], w)
    if y0 < y1 and x0 < x1:
        return spread[:, :, y0 - y:y1 - y, x0 - xx:x1 - xx], [y0, y1, x0, x1]
    return spread[:, :, 0:0, 0:0], empty_box()


def paste(part: Tensor, box: list[int], like: Tensor) -> Tensor:
    """A map shaped like `like` (batch: part's), zero but for `part` at `box` (empty: all zero)."""
    full = input_zeros(like, part.shape[0], part.dtype)
    if len(box) == 4:
        full[:, :, box[0]:box[1], box[2]:box[3]] = part
    return full


def box_backward(part: Tensor, r0: int, c0: int, x: Tensor, weight: Tensor, stride: list[int],
                 padding: list[int], dilation: list[int], groups: int, pad: list[int]) -> tuple[Tensor, list[int]]:
    """`box_spread` pasted into the whole input map, and its box."""
    spread, box = box_spread(part, r0, c0, x, weight, stride, padding, dilation, groups, pad)
    return paste(spread, box, x), box


def fold_taps(cols: Tensor, ci: int, kh: int, kw: int, ho: int, wo: int, size: list[int], padding: list[int],
              stride: list[int], dilation: list[int]) -> Tensor:
    """`F.fold` (col2im) as one strided add per kernel tap: the same sums (each tap adds to its own strided
    grid of the map), measured 1.1-1.7x faster than col2im for the stem's 27 x 12544 columns."""
    n = cols.shape[0]
    ph, pw = padding[0], padding[1]
    out = cols.new_zeros([n, ci, size[0] + 2 * ph, size[1] + 2 * pw])
    taps = cols.view(n, ci, kh, kw, ho, wo)
    sy, sx = stride[0], stride[1]
    span_y, span_x = sy * (ho - 1) + 1, sx * (wo - 1) + 1
    for i in range(kh):
        for j in range(kw):
            y, x = i * dilation[0], j * dilation[1]
            out[:, :, y:y + span_y:sy, x:x + span_x:sx] += taps[:, :, i, j]
    if ph > 0 or pw > 0:
        return out[:, :, ph:ph + size[0], pw:pw + size[1]]
    return out


def dense_backward(grad: Tensor, x: Tensor, weight: Tensor, flipped: Tensor | None, flip_pad: list[int],
                   stride: list[int], padding: list[int], dilation: list[int], groups: int, pad: list[int],
                   cpu: bool) -> Tensor:
    """A conv's whole input gradient. Three shapes skip `convolution_backward` on the CPU, where it measured
    1.3-8x slower for them: 1x1 convs (a matrix product), convs reading a few channels (a matrix product and one
    add per tap), stride-1 depthwise convs (the forward kernel with the kernel flipped, 5-10% faster)."""
    n, co = grad.shape[0], grad.shape[1]
    ci, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    h, w = x.shape[2], x.shape[3]
    left, right, top, bottom = 0, 0, 0, 0
    if len(pad) == 4:
        left, right, top, bottom = pad[0], pad[1], pad[2], pad[3]
    padded = [h + top + bottom, w + left + right]  # the shape the kernel read (an uneven pad: cut out after)
    x_last = channels_last(x)
    if cpu and is_pointwise(weight, stride, padding, groups, pad):
        # one matrix product per image, written straight in the input's layout: the rule that reads this
        # gradient next (with the saved activation, in that layout) runs 1.5x slower on mixed layouts
        w2 = weight.view(co, ci)
        chans: Tensor | None = None
        if grad.is_contiguous():
            chans = grad.view(n, co, -1)
        elif grad.is_contiguous(memory_format=torch.channels_last):
            chans = grad.permute(0, 2, 3, 1).reshape(n, -1, co).mT
        if chans is not None:
            if x_last:
                return torch.matmul(chans.mT, w2).view(n, h, w, ci).permute(0, 3, 1, 2)
            return torch.matmul(w2.t(), chans).view(n, x.shape[1], h, w)
    if cpu and groups == 1 and ci <= few_input_channels():
        cols: Tensor | None = None
        if grad.is_contiguous():
            cols = torch.matmul(weight.reshape(co, -1).t(), grad.view(n, co, -1))
        elif grad.is_contiguous(memory_format=torch.channels_last):  # pixels x channels, read transposed
            cols = torch.matmul(weight.reshape(co, -1).t(), grad.permute(0, 2, 3, 1).reshape(n, -1, co).mT)
        if cols is not None:
            g = fold_taps(cols, ci, kh, kw, grad.shape[2], grad.shape[3], padded, padding, stride, dilation)
            if len(pad) == 4:
                return g[:, :, top:top + h, left:left + w]
            return g
    if cpu and flipped is not None:
        return torch.conv2d(grad, flipped, None, [1, 1], flip_pad, dilation, groups)
    if len(pad) == 4:
        like = empty_like_input(x, n, padded[0], padded[1], grad.dtype)
        g = torch.ops.aten.convolution_backward(grad, like, weight, None, stride, padding, dilation, False,
                                                [0, 0], groups, [True, False, False])[0]
        return g[:, :, top:top + h, left:left + w]
    like = x if x.shape[0] == n else empty_like_input(x, n, h, w, x.dtype)
    return torch.ops.aten.convolution_backward(grad, like, weight, None, stride, padding, dilation, False,
                                               [0, 0], groups, [True, False, False])[0]


# What `chain_backward` did, as it reports it (tests and `AttributionContext.chain_steps` read these)
DENSE, CROPPED, SEARCHED, ZERO, SPREAD = 0, 1, 2, 3, 4


def chain_backward(grad: Tensor, box: list[int], crop: bool, x: Tensor, weight: Tensor, flipped: Tensor | None,
                   flip_pad: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int,
                   pad: list[int], cpu: bool) -> tuple[Tensor, list[int], int]:
    """A conv chain's input gradient, its box, and what was done: 0 the whole map (not cropping), 1 cropped to
    the known box, 2 cropped after searching the box, 3 all zero, 4 spread over more than a quarter (the whole
    map; stop cropping). A neuron's gradient starts as one pixel and spreads a kernel per layer: while it covers
    at most a quarter of the map, only its nonzero box is transposed-convolved (exact: the rest is zero).
    `crop`: on the CPU (finding a box reads it on the host), and the backward has not spread yet."""
    h, w = grad.shape[2], grad.shape[3]
    if crop and h * w >= box_min_area():
        how = 1
        if len(box) == 0:
            box = nonzero_box(grad)
            how = 2
        if len(box) == 0:
            return input_zeros(x, grad.shape[0], grad.dtype), empty_box(), 3
        if 4 * (box[1] - box[0]) * (box[3] - box[2]) <= h * w:
            out, out_box = box_backward(grad[:, :, box[0]:box[1], box[2]:box[3]], box[0], box[2], x, weight,
                                        stride, padding, dilation, groups, pad)
            return out, out_box, how
        return (dense_backward(grad, x, weight, flipped, flip_pad, stride, padding, dilation, groups, pad, cpu),
                empty_box(), 4)
    return (dense_backward(grad, x, weight, flipped, flip_pad, stride, padding, dilation, groups, pad, cpu),
            empty_box(), 0)


def chain_parts(grad: Tensor, box: list[int], is_part: bool, size: list[int], crop: bool, x: Tensor,
                weight: Tensor, flipped: Tensor | None, flip_pad: list[int], stride: list[int], padding: list[int],
                dilation: list[int], groups: int, pad: list[int], cpu: bool) -> tuple[Tensor, list[int], int, bool]:
    """`chain_backward` for the program, which keeps a neuron's gradient as its nonzero part while it is small:
    `grad` may be that part (is_part: at `box` of a `size` = [h, w] map), and the result is a part too unless
    the gradient spread (then a whole map). Returns (gradient, its box, what was done, whether a part)."""
    h, w = size[0], size[1]
    how = 1
    if is_part and len(box) == 0:
        return grad.new_zeros([grad.shape[0], x.shape[1], 0, 0]), empty_box(), 3, True
    if not is_part:
        if not (crop and h * w >= box_min_area()):
            return (dense_backward(grad, x, weight, flipped, flip_pad, stride, padding, dilation, groups, pad, cpu),
                    empty_box(), 0, False)
        if len(box) == 0:
            box = nonzero_box(grad)
            how = 2
        if len(box) == 0:
            return grad.new_zeros([grad.shape[0], x.shape[1], 0, 0]), empty_box(), 3, True
    if 4 * (box[1] - box[0]) * (box[3] - box[2]) > h * w:
        if is_part:
            full = grad.new_zeros([grad.shape[0], grad.shape[1], h, w])
            full[:, :, box[0]:box[1], box[2]:box[3]] = grad
            grad = full
        return (dense_backward(grad, x, weight, flipped, flip_pad, stride, padding, dilation, groups, pad, cpu),
                empty_box(), 4, False)
    part = grad if is_part else grad[:, :, box[0]:box[1], box[2]:box[3]]
    spread, out_box = box_spread(part, box[0], box[2], x, weight, stride, padding, dilation, groups, pad)
    return spread, out_box, how, True


_COMPILED: dict[str, Any] = {}
_LOCK = threading.Lock()


SCRIPT_ERRORS: dict[str, str] = {}  # function -> why TorchScript could not compile it (it then runs as Python)


def compiled(fn: Any) -> Any:
    """`fn` compiled by TorchScript (once per process; the compiler's deprecation notice silenced: it is the one
    way to run a Python-written sequence of ops with the GIL released, and `torch.compile` needs a C++ toolchain
    at run time). Where it cannot compile (a torch without TorchScript, sources not shipped), `fn` itself: the
    same values, with the GIL handed back around each op as before; `SCRIPT_ERRORS` says why."""
    name = f"{fn.__module__}.{fn.__qualname__}"
    got = _COMPILED.get(name)
    if got is None:
        with _LOCK:
            got = _COMPILED.get(name)
            if got is None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        got = torch.jit.script(fn)
                except Exception as err:  # noqa: BLE001 - any failure to compile leaves the Python function
                    first = (str(err).strip().splitlines() or [""])[0]
                    SCRIPT_ERRORS[name] = f"{type(err).__name__}: {first}"
                    got = fn
                _COMPILED[name] = got
    return got
